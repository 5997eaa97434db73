"""The auditor's view over HTTP, and fail-closed release when the audit log cannot be written."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from pydantic import SecretStr

from tests._db import RawDb, pg_execute
from tests._live import LiveVault, live_vault
from tests.sessiongen import make_session, refresh_session, secret_strings
from vault.settings import Settings


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _ingest(vault: LiveVault, seed: int) -> tuple[str, dict[str, Any]]:
    session, body = make_session(seed)
    assert httpx.post(f"{vault.public}/api/import-session", json={"session": session}).status_code == 201
    return session, body


def _lease_cycle(vault: LiveVault, signer: str, user_id: str) -> httpx.Response:
    granted = httpx.post(
        f"{vault.internal}/v1/users/{user_id}/lease", json={"purpose": "sign"}, headers=_auth(signer)
    )
    if granted.status_code == 201:
        lease = granted.json()
        released = httpx.post(
            f"{vault.internal}/v1/leases/{lease['lease_id']}/release",
            json={"fencing_token": lease["fencing_token"]},
            headers=_auth(signer),
        )
        assert released.status_code == 200
    return granted


def test_auditors_read_filter_and_page_and_their_reads_are_audited(vault: LiveVault) -> None:
    _, body = _ingest(vault, 301)
    _ingest(vault, 302)
    signer, auditor = vault.token("signer"), vault.token("auditor")
    for _ in range(3):
        assert _lease_cycle(vault, signer, body["userId"]).status_code == 201
    url = f"{vault.internal}/v1/audit/events"
    mine = httpx.get(
        url, params={"user_id": body["userId"], "action": "lease.grant"}, headers=_auth(auditor)
    ).json()
    assert [e["fencing_token"] for e in mine["events"]] == [1, 2, 3] and mine["next_cursor"] is None
    assert all(e["actor_token_id"] == signer[4:20] and e["purpose"] == "sign" for e in mine["events"])
    # Cursor pagination walks everything exactly once.
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 4, **({"cursor": cursor} if cursor else {})}
        page = httpx.get(url, params=params, headers=_auth(auditor)).json()
        seen += [e["id"] for e in page["events"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(set(seen)) and len(seen) >= 12
    # Time and actor filters.
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert httpx.get(url, params={"since": future}, headers=_auth(auditor)).json()["events"] == []
    by_actor = httpx.get(url, params={"actor": signer[4:20], "outcome": "ok"}, headers=_auth(auditor)).json()
    assert {e["action"] for e in by_actor["events"]} == {"lease.grant", "lease.release"}
    # Searching by a value the auditor already knows, through its keyed hash.
    email = body["authInfo"]["auth"]["email"]
    hashed = httpx.post(
        f"{vault.internal}/v1/audit/hash", json={"value": email.upper()}, headers=_auth(auditor)
    )
    found = httpx.get(url, params={"subject": hashed.json()["hmac"]}, headers=_auth(auditor)).json()["events"]
    assert [(e["action"], e["user_id"]) for e in found] == [("session.ingest", body["userId"])]
    assert email not in str(found)
    # Checkpoints and the key that signs them.
    assert (
        httpx.get(f"{vault.internal}/v1/audit/public-key", headers=_auth(auditor)).json()["algorithm"]
        == "Ed25519"
    )
    checkpoints = httpx.get(f"{vault.internal}/v1/audit/checkpoints", headers=_auth(auditor)).json()[
        "checkpoints"
    ]
    assert checkpoints and checkpoints[0]["id"] == 1
    reads = httpx.get(url, params={"action": "audit.read"}, headers=_auth(auditor)).json()["events"]
    assert len(reads) >= 8 and all(r["actor_token_id"] == auditor[4:20] for r in reads)
    hashes = httpx.get(url, params={"action": "audit.hash"}, headers=_auth(auditor)).json()["events"]
    assert len(hashes) == 1 and email.lower() not in str(hashes)


def test_bad_audit_queries_are_refused(vault: LiveVault) -> None:
    auditor = vault.token("auditor")
    url = f"{vault.internal}/v1/audit/events"
    for params in ({"limit": 0}, {"limit": 5000}, {"cursor": "abc"}, {"since": "yesterday"},
                   {"since": "2026-01-01T00:00:00"}, {"subject": "not-a-hash"}):  # fmt: skip
        response = httpx.get(url, params=params, headers=_auth(auditor))
        assert response.status_code == 422, params
        assert response.json()["error"] == "invalid_request"
    for value in ("", " ", "x" * 600):
        response = httpx.post(
            f"{vault.internal}/v1/audit/hash", json={"value": value}, headers=_auth(auditor)
        )
        assert response.status_code == 422


def test_roles_stay_apart(vault: LiveVault) -> None:
    _, body = _ingest(vault, 303)
    signer, auditor = vault.token("signer"), vault.token("auditor")
    assert _lease_cycle(vault, auditor, body["userId"]).status_code == 403
    for path in ("/v1/audit/events", "/v1/audit/checkpoints", "/v1/audit/public-key"):
        for token in (signer, vault.admin_token, vault.token("ingest")):
            assert httpx.get(vault.internal + path, headers=_auth(token)).status_code == 403, path
        assert httpx.get(vault.public + path, headers=_auth(auditor)).status_code == 404
    failures = httpx.get(
        f"{vault.internal}/v1/audit/events", params={"action": "auth.failure"}, headers=_auth(auditor)
    ).json()["events"]
    assert len(failures) >= 10 and {f["outcome"] for f in failures} == {"denied"}
    assert signer[21:] not in str(failures)


def test_no_audit_row_holds_session_material(vault: LiveVault, raw: RawDb) -> None:
    session, body = _ingest(vault, 304)
    refreshed, _ = refresh_session(body, 305)
    signer = vault.token("signer")
    lease = httpx.post(
        f"{vault.internal}/v1/users/{body['userId']}/lease", json={"purpose": "sign"}, headers=_auth(signer)
    ).json()
    httpx.post(
        f"{vault.internal}/v1/leases/{lease['lease_id']}/release",
        json={"fencing_token": lease["fencing_token"], "session": refreshed},
        headers=_auth(signer),
    )
    httpx.post(f"{vault.public}/api/import-session", json={"session": session[:-40] + "!!"})
    rows = raw.query("SELECT * FROM audit_events")
    assert len(rows) >= 6
    dump = b"\n".join(
        bytes(v) if isinstance(v, (bytes, memoryview)) else str(v).encode() for r in rows for v in r
    )
    # Token ids are public (they name the actor); the secret part after them must never appear.
    for secret in [session, refreshed, signer[21:], vault.admin_token[21:], *secret_strings(body)]:
        data = secret.encode()
        for i in range(0, max(1, len(data) - 12), 6):
            assert data[i : i + 12] not in dump


# --- fail-closed ---------------------------------------------------------------------------------------


@pytest.fixture
def restricted(
    backend: str, db_url: str, raw: RawDb, settings: Settings, tmp_path: Path
) -> Iterator[Settings]:
    """Settings for a vault whose audit inserts will fail once the test says so (see ``break_audit``)."""
    if backend == "sqlite":
        yield settings
        return
    role = f"sv_app_{os.getpid()}"
    pg_execute(f'DROP ROLE IF EXISTS "{role}"')
    pg_execute(f'CREATE ROLE "{role}" LOGIN')
    raw.execute(f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{role}"')
    raw.execute(f'GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO "{role}"')
    parts = urlsplit(db_url)
    url = urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port}"))
    yield Settings.model_validate({**settings.model_dump(), "database_url": SecretStr(url)})
    raw.execute(f'DROP OWNED BY "{role}"')
    pg_execute(f'DROP ROLE IF EXISTS "{role}"')


def _break_audit(raw: RawDb, backend: str) -> None:
    if backend == "sqlite":
        raw.execute(
            "CREATE TRIGGER audit_down BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'down'); END"
        )
    else:
        raw.execute(f'REVOKE INSERT ON audit_events FROM "sv_app_{os.getpid()}"')


def test_nothing_is_released_when_the_audit_log_cannot_be_written(
    restricted: Settings, raw: RawDb, backend: str
) -> None:
    with live_vault(restricted) as vault:
        session, body = _ingest(vault, 306)
        signer = vault.token("signer")
        assert _lease_cycle(vault, signer, body["userId"]).status_code == 201  # works while audit works
        _break_audit(raw, backend)
        before = raw.counts()
        granted = httpx.post(
            f"{vault.internal}/v1/users/{body['userId']}/lease",
            json={"purpose": "sign"},
            headers=_auth(signer),
        )
        assert granted.status_code == 503, granted.text
        assert granted.json() == {
            "error": "audit_unavailable",
            "detail": "the audit log is unavailable; nothing was released",
        }
        assert session not in granted.text
        second, _ = make_session(307)
        ingested = httpx.post(f"{vault.public}/api/import-session", json={"session": second})
        assert ingested.status_code == 503 and ingested.json()["error"] == "audit_unavailable"
        after = raw.counts()
        for table in ("leases", "sessions", "users", "user_keys", "audit_events"):
            assert after[table] == before[table], table
        assert raw.query("SELECT count(*) FROM leases WHERE ended_us IS NULL")[0][0] == 0
