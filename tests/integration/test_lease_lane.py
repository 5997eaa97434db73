"""The lean path (vault/api/_lane.py) answers the lease routes exactly as the FastAPI routes do.

One vault, two internal listeners: ``internal`` with the lane in front of the router (what ``serve``
runs) and ``reference`` without it (FastAPI answers every route). Every scenario runs once through each,
on users and sessions of its own, and must give the same statuses, the same headers that carry meaning
(content type, Cache-Control, Retry-After), the same bodies (ids, times and the session itself replaced
by their kind) and the same audit rows (action, outcome, detail). Both backends.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests._db import RawDb
from tests._live import LiveVault, live_vault
from tests.sessiongen import make_session, refresh_session
from vault.settings import Settings

Answer = tuple[int, dict[str, str], Any]
Scenario = Callable[["_Side"], list[Answer]]
_HEADERS = ("content-type", "cache-control", "retry-after")
_VARIABLE = {"lease_id", "session_id", "user_id", "expires_at", "session", "retry_after"}
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture
def live(settings: Settings) -> Any:
    with live_vault(settings, reference=True) as live:
        yield live


class _Side:
    """One listener, with its own signer token and its own users (``u<n>-<side>``)."""

    def __init__(self, live: LiveVault, base: str, name: str, signer: str, auditor: str) -> None:
        self.live, self.base, self.name = live, base, name
        self.signer, self.auditor = signer, auditor
        self.bodies: dict[str, dict[str, Any]] = {}

    def user(self, n: int) -> str:
        user_id = f"u{n}-{self.name}"
        self.bodies[user_id] = self.ingest(make_session(n, user_id=user_id))
        return user_id

    def ingest(self, made: tuple[str, dict[str, Any]]) -> dict[str, Any]:
        response = httpx.post(f"{self.live.public}/api/import-session", json={"session": made[0]})
        assert response.status_code == 201, response.text
        return made[1]

    def post(self, path: str, body: object = None, *, who: str | None = "signer", **kw: Any) -> Answer:
        headers = dict(kw.pop("headers", {}))
        if who is not None:  # "signer", "auditor" (this side's tokens) or a token as given
            headers["Authorization"] = f"Bearer {getattr(self, who, who)}"
        if body is not None:
            kw["json"] = body
        return _answer(httpx.post(self.base + path, headers=headers, **kw))


def _answer(response: httpx.Response) -> Answer:
    headers = {name: response.headers[name] for name in _HEADERS if name in response.headers}
    if "retry-after" in headers:
        headers["retry-after"] = "<int>" if headers["retry-after"].isdigit() else headers["retry-after"]
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    if isinstance(body, dict):
        body = {k: (f"<{type(v).__name__}>" if k in _VARIABLE else v) for k, v in body.items()}
    return response.status_code, headers, body


def _granted(side: _Side, user_id: str, **body: Any) -> dict[str, Any]:
    response = httpx.post(
        f"{side.base}/v1/users/{user_id}/lease",
        json={"purpose": "sign", **body},
        headers={"Authorization": f"Bearer {side.signer}"},
    )
    assert response.status_code == 201, response.text
    out: dict[str, Any] = response.json()
    return out


# --- scenarios: each returns the answers it saw, in order ---------------------------------------------


def _no_or_wrong_credentials(side: _Side) -> list[Answer]:
    user_id = side.user(1)
    path = f"/v1/users/{user_id}/lease"
    return [
        side.post(path, {"purpose": "sign"}, who=None),
        side.post(path, {"purpose": "sign"}, who="svt_0123456789abcdef_nope"),
        side.post(path, {"purpose": "sign"}, who="auditor"),
        side.post(path, {"purpose": "sign"}, who=None, headers={"Authorization": "Basic x"}),
    ]


def _malformed_paths(side: _Side) -> list[Answer]:
    return [
        side.post("/v1/users/%20bad%20/lease", {"purpose": "sign"}),
        side.post("/v1/users/" + "a" * 129 + "/lease", {"purpose": "sign"}),
        side.post("/v1/users/abc%0A/lease", {"purpose": "sign"}),
        side.post("/v1/sessions/NOT-A-UUID/lease", {"purpose": "sign"}),
        side.post("/v1/sessions/00000000-0000-0000-0000-00000000000A/lease", {"purpose": "sign"}),
        side.post("/v1/leases/x/renew", {"fencing_token": 1}),
        side.post("/v1/leases/x/release", {"fencing_token": 1}),
        side.post("/v1/users/abc/lease/", {"purpose": "sign"}),  # trailing slash: no such route
        side.post("/v1/users//lease", {"purpose": "sign"}),
        _answer(httpx.get(f"{side.base}/v1/users/abc/lease")),  # not POST: 405 from the router
    ]


def _malformed_bodies(side: _Side) -> list[Answer]:
    user_id = side.user(2)
    path = f"/v1/users/{user_id}/lease"
    raw = {"content-type": "application/json"}
    return [
        side.post(path, content=b'{"purpose": "sign"}', headers={"content-type": "text/plain"}),
        side.post(path, content=b'{"purpose": "sign"}'),  # no content type
        side.post(path, content=b"{not json", headers=raw),
        side.post(path, content=b'["sign"]', headers=raw),
        side.post(path, content=b'{"purpose": "sign", "purpose": "x"}', headers=raw),
        side.post(path, content=b'{"purpose": "\\ud800"}', headers=raw),
        side.post(path, {"purpose": "sign", "extra": 1}),
        side.post(path, {"purpose": "no spaces allowed"}),
        side.post(path, {"purpose": "sign", "ttl_seconds": 0}),
        side.post(path, {"purpose": "sign", "ttl_seconds": "30"}),
        side.post(path, {"purpose": "sign", "allow_wallet_changes": 1}),
        side.post(path, {}),
        side.post(path, content=b"x" * (2 * 1024 * 1024), headers=raw),  # past the body limit
    ]


def _grant_hold_renew_release(side: _Side) -> list[Answer]:
    user_id = side.user(3)
    grant = _granted(side, user_id, ttl_seconds=60)
    lease, fence = grant["lease_id"], grant["fencing_token"]
    session_path = f"/v1/sessions/{grant['session_id']}/lease"
    return [
        side.post(f"/v1/users/{user_id}/lease", {"purpose": "sign"}),  # held: 409 + Retry-After
        side.post(session_path, {"purpose": "sign"}),
        side.post(f"/v1/leases/{lease}/renew", {"fencing_token": fence + 1}),  # stale fence
        side.post(f"/v1/leases/{lease}/renew", {"fencing_token": fence}),
        side.post(f"/v1/leases/{lease}/renew", {"fencing_token": fence}, who="auditor"),
        side.post(f"/v1/leases/{lease}/release", {"fencing_token": fence, "session": "not a session"}),
        side.post(f"/v1/leases/{lease}/release", {"fencing_token": fence}),
        side.post(f"/v1/leases/{lease}/release", {"fencing_token": fence}),  # already ended
        side.post(f"/v1/leases/{lease}/renew", {"fencing_token": fence}),
        side.post(session_path, {"purpose": "sign", "ttl_seconds": 5}),  # by session id: granted
    ]


def _write_back_and_missing(side: _Side) -> list[Answer]:
    user_id = side.user(4)
    grant = _granted(side, user_id)
    refreshed, _ = refresh_session(side.bodies[user_id], 1)
    return [
        side.post(f"/v1/leases/{grant['lease_id']}/release", {"fencing_token": 1, "session": refreshed}),
        side.post(f"/v1/users/nobody-{side.name}/lease", {"purpose": "sign"}),
        side.post("/v1/sessions/00000000-0000-4000-8000-000000000000/lease", {"purpose": "sign"}),
        side.post("/v1/leases/00000000-0000-4000-8000-000000000000/release", {"fencing_token": 1}),
    ]


SCENARIOS: dict[str, Scenario] = {
    "credentials": _no_or_wrong_credentials,
    "paths": _malformed_paths,
    "bodies": _malformed_bodies,
    "grant_hold_renew_release": _grant_hold_renew_release,
    "write_back_and_missing": _write_back_and_missing,
}


def _audit_rows(raw: RawDb, after: int, side: str) -> list[tuple[str, str, str]]:
    rows = raw.query(
        "SELECT action, outcome, coalesce(detail, '') FROM audit_events WHERE id > %s ORDER BY id", [after]
    )
    return [(a, o, _UUID.sub("<uuid>", d).replace(f"-{side}", "-<side>")) for a, o, d in rows]


def _last_event(raw: RawDb) -> int:
    return int(raw.query("SELECT coalesce(max(id), 0) FROM audit_events")[0][0])


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_the_lane_answers_and_audits_as_the_fastapi_routes_do(
    live: LiveVault, raw: RawDb, scenario: str
) -> None:
    assert live.reference is not None
    auditor = live.token("auditor")
    seen: dict[str, tuple[list[Answer], list[tuple[str, str, str]]]] = {}
    for name, base in (("lane", live.internal), ("reference", live.reference)):
        side = _Side(live, base, name, live.token("signer"), auditor)
        before = _last_event(raw)
        answers = SCENARIOS[scenario](side)
        rows = [r for r in _audit_rows(raw, before, name) if r[0] != "session.ingest"]
        seen[name] = (answers, rows)
    lane, reference = seen["lane"], seen["reference"]
    for i, (mine, theirs) in enumerate(zip(lane[0], reference[0], strict=True)):
        assert mine == theirs, f"answer {i}: lane {json.dumps(mine)} != reference {json.dumps(theirs)}"
    assert lane[1] == reference[1]
    assert lane[1], "the scenario left no audit row: it tested nothing the audit could show"


def test_a_grant_through_the_lane_is_the_same_json_as_through_fastapi(live: LiveVault) -> None:
    """Beyond the shape: the same field order and encoding (compact, ISO 8601 times with a Z)."""
    assert live.reference is not None
    signer = live.token("signer")
    texts = []
    for base in (live.internal, live.reference):
        side = _Side(live, base, "x" if base == live.internal else "y", signer, "")
        user_id = side.user(9)
        response = httpx.post(
            f"{base}/v1/users/{user_id}/lease",
            json={"purpose": "sign"},
            headers={"Authorization": f"Bearer {signer}"},
        )
        assert response.status_code == 201
        text = _UUID.sub("<uuid>", response.text).replace(user_id, "<user>")
        text = re.sub(r'"expires_at":"[^"]+"', '"expires_at":"<t>"', text)
        text = re.sub(r'"session":"[^"]+"', '"session":"<s>"', text)
        texts.append(text)
        assert re.search(r'"expires_at":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"', response.text)
    assert texts[0] == texts[1]
    assert texts[0] == '{"lease_id":"<uuid>","session_id":"<uuid>","user_id":"<user>","fencing_token":1,' + (
        '"expires_at":"<t>","session":"<s>"}'
    )
