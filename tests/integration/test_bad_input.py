"""Every kind of bad ingest input: a stable JSON error, no echo of the input, and no row written."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests._db import RawDb
from tests._live import LiveVault
from tests.sessiongen import make_session, reencode, secret_strings

GOOD, GOOD_BODY = make_session(31)
EXPIRED, EXPIRED_BODY = make_session(32, expired=True)


def _without(key: str) -> str:
    body = dict(GOOD_BODY)
    del body[key]
    return reencode(body)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# (name, content-type, raw body bytes, status, error code)
CASES: list[tuple[str, str | None, bytes, int, str]] = [
    ("over 64 KiB", "application/json", json.dumps({"session": "A" * 70_000}).encode(), 413, "too_large"),
    ("text/plain", "text/plain", json.dumps({"session": GOOD}).encode(), 415, "unsupported_media_type"),
    ("form", "application/x-www-form-urlencoded", b"session=" + GOOD.encode(), 415, "unsupported_media_type"),
    ("no content type", None, json.dumps({"session": GOOD}).encode(), 415, "unsupported_media_type"),
    ("not JSON", "application/json", b'{"session": "' + GOOD.encode(), 422, "invalid_request"),
    ("empty body", "application/json", b"", 422, "invalid_request"),
    ("JSON array", "application/json", json.dumps([GOOD]).encode(), 422, "invalid_request"),
    ("no session field", "application/json", json.dumps({"sesion": GOOD}).encode(), 422, "invalid_request"),
    ("session is a number", "application/json", b'{"session": 12345}', 422, "invalid_request"),
    ("session is null", "application/json", b'{"session": null}', 422, "invalid_request"),
    ("session is an object", "application/json", json.dumps({"session": GOOD_BODY}).encode(), 422,
     "invalid_request"),
    ("duplicate session keys", "application/json",
     b'{"session": "' + GOOD.encode() + b'", "session": "' + EXPIRED.encode() + b'"}', 422, "invalid_request"),
    ("not base64", "application/json", json.dumps({"session": "%%%" + GOOD[3:]}).encode(), 422,
     "invalid_session"),
    ("base64 of non-JSON", "application/json", json.dumps({"session": _b64(b"\x00\x01not json" * 50)}).encode(),
     422, "invalid_session"),
    ("base64 of a JSON list", "application/json", json.dumps({"session": _b64(b"[1,2,3]")}).encode(), 422,
     "invalid_session"),
    ("unknown format", "application/json", json.dumps({"session": _without("authInfo")}).encode(), 422,
     "invalid_session"),
    ("no user id", "application/json", json.dumps({"session": _without("userId")}).encode(), 422,
     "invalid_session"),
    ("expired cookie", "application/json", json.dumps({"session": EXPIRED}).encode(), 422, "session_expired"),
]  # fmt: skip


@pytest.fixture(params=["public", "internal"])
def endpoint(request: pytest.FixtureRequest, vault: LiveVault) -> Iterator[tuple[str, dict[str, str]]]:
    if request.param == "public":
        yield f"{vault.public}/api/import-session", {}
    else:
        yield f"{vault.internal}/v1/sessions", {"Authorization": f"Bearer {vault.token('ingest')}"}


def _leaks(text: str, secrets: list[str]) -> list[str]:
    found = []
    for secret in secrets:
        for i in range(0, max(1, len(secret) - 12), 6):
            window = secret[i : i + 12]
            if len(window) >= 8 and window in text:
                found.append(window)
    return found


def test_every_bad_input_is_refused_cleanly(
    endpoint: tuple[str, dict[str, str]], vault: LiveVault, raw: RawDb
) -> None:
    url, auth = endpoint
    before = raw.counts()
    secrets = [GOOD, EXPIRED, *secret_strings(GOOD_BODY), *secret_strings(EXPIRED_BODY)]
    with httpx.Client() as client:
        for name, content_type, content, status, code in CASES:
            headers = dict(auth)
            if content_type is not None:
                headers["Content-Type"] = content_type
            response = client.post(url, content=content, headers=headers)
            assert response.status_code == status, (name, response.text)
            assert response.headers["content-type"].startswith("application/json"), name
            body: dict[str, Any] = response.json()
            assert body["error"] == code, name
            assert isinstance(body["detail"], str) and body["detail"], name
            assert not _leaks(response.text, secrets), name
    after = raw.counts()
    audited = after["audit_events"] - before["audit_events"]
    state = ("users", "user_keys", "sessions", "service_tokens", "leases")
    assert {t: after[t] for t in state} == {t: before[t] for t in state}, "a refused ingest wrote a row"
    # Refused sessions are audited (the request never reached validation for the other cases).
    refused = [c for c in CASES if c[4] in ("invalid_session", "session_expired")]
    rows = raw.query("SELECT outcome, detail FROM audit_events WHERE action = 'session.ingest'")
    assert sorted(rows) == sorted(("denied", c[4]) for c in refused)
    # Malformed requests that authenticated (the internal port) are audited as refusals too; the body
    # limit answers before authentication, so oversized bodies are not.
    malformed = [c for c in CASES if c[4] in ("invalid_request", "unsupported_media_type")] if auth else []
    details = raw.query("SELECT detail FROM audit_events WHERE action = 'request.refused'")
    assert sorted(d for (d,) in details) == sorted(f"{c[4]} POST /v1/sessions" for c in malformed)
    assert audited == len(refused) + len(malformed)


def test_chunked_body_over_the_limit_is_refused(vault: LiveVault, raw: RawDb) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"session": "'
        for _ in range(80):
            yield b"A" * 1024
        yield b'"}'

    response = httpx.post(
        f"{vault.public}/api/import-session", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"
    assert raw.counts()["sessions"] == 0


def test_a_body_just_under_the_limit_is_read(vault: LiveVault) -> None:
    """The limit is on bytes, not a blanket refusal: 60 KB of padding still reaches validation."""
    body = json.dumps({"session": GOOD, "padding": "x" * 50_000}).encode()
    assert len(body) < 64 * 1024
    response = httpx.post(
        f"{vault.public}/api/import-session", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 201, response.text


def test_charset_parameter_is_accepted(vault: LiveVault) -> None:
    response = httpx.post(
        f"{vault.public}/api/import-session",
        content=json.dumps({"session": GOOD}).encode(),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 201
