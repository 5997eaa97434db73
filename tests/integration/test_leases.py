"""The lease protocol over real HTTP on PostgreSQL and SQLite."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests._db import RawDb
from tests._live import LiveVault
from tests.sessiongen import make_session, refresh_session, secret_strings


class _Http:
    """One request per call (no pooled sockets to leak between tests)."""

    def __init__(self, base: str, headers: dict[str, str]) -> None:
        self.base = base
        self.headers = headers

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(self.base + path, headers=self.headers, **kwargs)


class Signer:
    def __init__(self, vault: LiveVault, **token: Any) -> None:
        self.vault = vault
        self.token = vault.token("signer", **token)
        self.http = _Http(vault.internal, {"Authorization": f"Bearer {self.token}"})

    def lease_user(self, user_id: str, purpose: str = "sign", **body: Any) -> httpx.Response:
        return self.http.post(f"/v1/users/{user_id}/lease", json={"purpose": purpose, **body})

    def lease_session(self, session_id: str, purpose: str = "sign", **body: Any) -> httpx.Response:
        return self.http.post(f"/v1/sessions/{session_id}/lease", json={"purpose": purpose, **body})

    def renew(self, lease_id: str, fence: int) -> httpx.Response:
        return self.http.post(f"/v1/leases/{lease_id}/renew", json={"fencing_token": fence})

    def release(self, lease_id: str, fence: int, session: str | None = None) -> httpx.Response:
        body: dict[str, Any] = {"fencing_token": fence}
        if session is not None:
            body["session"] = session
        return self.http.post(f"/v1/leases/{lease_id}/release", json=body)


def _ingest(vault: LiveVault, session: str) -> dict[str, Any]:
    response = httpx.post(f"{vault.public}/api/import-session", json={"session": session})
    assert response.status_code == 201, response.text
    out: dict[str, Any] = response.json()
    return out


# Lease times are the database's clock; this process's clock brackets them. The same host's clock, so this
# is rounding only (SQLite: milliseconds), and room for a remote PostgreSQL's small skew.
SKEW = 0.5


def _expires(answer: dict[str, Any]) -> float:
    return datetime.fromisoformat(answer["expires_at"]).timestamp()


def _error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error"] == code, body
    return body


def test_grant_returns_the_session_once_and_holds_it(vault: LiveVault, raw: RawDb) -> None:
    session, body = make_session(61)
    ingested = _ingest(vault, session)
    a, b = Signer(vault), Signer(vault)
    sent = time.time()
    granted = a.lease_user(body["userId"], ttl_seconds=20)
    assert granted.status_code == 201, granted.text
    lease = granted.json()
    assert lease["session"] == session
    assert lease["session_id"] == ingested["session_id"] and lease["user_id"] == body["userId"]
    assert lease["fencing_token"] == 1
    assert granted.headers["cache-control"] == "no-store"
    assert sent + 20 - SKEW <= _expires(lease) <= time.time() + 20 + SKEW  # 20 s from the grant

    for signer, response in ((b, b.lease_user(body["userId"])), (a, a.lease_session(ingested["session_id"]))):
        held = _error(response, 409, "lease_held")
        assert 1 <= held["retry_after"] <= 20
        assert response.headers["retry-after"] == str(held["retry_after"])
        assert session not in response.text, signer
    assert raw.query("SELECT count(*) FROM leases")[0][0] == 1


def test_missing_and_gone_sessions(vault: LiveVault, raw: RawDb) -> None:
    signer = Signer(vault)
    _error(signer.lease_user("no-such-user"), 404, "no_session")
    _error(signer.lease_session("00000000-0000-4000-8000-000000000000"), 404, "no_session")

    old, body = make_session(62)
    new, _ = make_session(63, user_id=body["userId"])
    old_id = _ingest(vault, old)["session_id"]
    new_id = _ingest(vault, new)["session_id"]
    _error(signer.lease_session(old_id), 410, "session_superseded")
    # The user form takes the active session even though a superseded one exists.
    assert signer.lease_user(body["userId"]).json()["session_id"] == new_id

    expiring, body2 = make_session(64)
    sid = _ingest(vault, expiring)["session_id"]
    raw.execute("UPDATE sessions SET expires_at = %s WHERE id = %s", ["2020-01-01 00:00:00", sid])
    _error(signer.lease_session(sid), 410, "session_expired")
    _error(signer.lease_user(body2["userId"]), 410, "session_expired")

    revoked, body3 = make_session(65)
    rid = _ingest(vault, revoked)["session_id"]
    raw.execute("UPDATE sessions SET status = 'revoked' WHERE id = %s", [rid])
    _error(signer.lease_session(rid), 410, "session_revoked")
    _error(signer.lease_user(body3["userId"]), 410, "session_revoked")
    assert raw.query("SELECT count(*) FROM leases")[0][0] == 1


def test_ttl_and_purpose_limits(vault: LiveVault, raw: RawDb) -> None:
    session, body = make_session(66)
    _ingest(vault, session)
    user = body["userId"]
    free = Signer(vault)
    limited = Signer(vault, purposes=["sign"], max_ttl_seconds=10)
    for ttl in (0, -1, 301, "30", 1.5):
        _error(free.lease_user(user, ttl_seconds=ttl), 422, "invalid_request")
    _error(limited.lease_user(user, ttl_seconds=11), 422, "invalid_request")
    _error(limited.lease_user(user, purpose="export"), 403, "purpose_not_allowed")
    for purpose in ("", "has space", "x" * 65):
        _error(free.lease_user(user, purpose=purpose), 422, "invalid_request")
    _error(free.http.post(f"/v1/users/{user}/lease", json={"ttl_seconds": 5}), 422, "invalid_request")
    _error(free.http.post(f"/v1/users/{user}/lease", content=b"purpose=sign"), 415, "unsupported_media_type")
    assert raw.query("SELECT count(*) FROM leases")[0][0] == 0
    sent = time.time()
    granted = limited.lease_user(user)  # the default TTL (30 s) is capped at the token's maximum
    assert granted.status_code == 201
    assert sent + 10 - SKEW <= _expires(granted.json()) <= time.time() + 10 + SKEW
    assert raw.query("SELECT count(*) FROM audit_events WHERE detail = 'purpose_not_allowed'")[0][0] == 1


def test_other_roles_cannot_lease(vault: LiveVault) -> None:
    session, body = make_session(67)
    _ingest(vault, session)
    for role in ("ingest", "auditor"):
        token = vault.token(role)
        response = httpx.post(
            f"{vault.internal}/v1/users/{body['userId']}/lease",
            json={"purpose": "sign"},
            headers={"Authorization": f"Bearer {token}"},
        )
        _error(response, 403, "forbidden")
    response = httpx.post(
        f"{vault.internal}/v1/users/{body['userId']}/lease",
        json={"purpose": "sign"},
        headers={"Authorization": f"Bearer {vault.admin_token}"},
    )
    _error(response, 403, "forbidden")
    _error(
        httpx.post(f"{vault.internal}/v1/users/{body['userId']}/lease", json={"purpose": "x"}),
        401,
        "unauthorized",
    )
    # The public port knows nothing of leases.
    assert (
        httpx.post(f"{vault.public}/v1/users/{body['userId']}/lease", json={"purpose": "x"}).status_code
        == 404
    )


def test_renew_and_release_only_by_the_holder_with_the_newest_fence(vault: LiveVault, raw: RawDb) -> None:
    session, body = make_session(68)
    _ingest(vault, session)
    a, b = Signer(vault), Signer(vault)
    lease = a.lease_user(body["userId"], ttl_seconds=3).json()
    lid, fence = lease["lease_id"], lease["fencing_token"]
    # A renewal counts the lease's own TTL from now. Lengthen it behind the vault's back (the grant's 3 s
    # expiry stands): the renewed expiry is then a minute away, and "within the renewed one" cannot flake.
    raw.execute("UPDATE leases SET ttl_seconds = 60 WHERE id = %s", [lid])
    renewed = a.renew(lid, fence)
    assert renewed.status_code == 200, renewed.text
    assert _expires(renewed.json()) > _expires(lease) + 50
    _error(a.renew("00000000-0000-4000-8000-000000000000", fence), 404, "no_lease")
    _error(b.renew(lid, fence), 403, "forbidden")
    _error(b.release(lid, fence), 403, "forbidden")
    _error(a.renew(lid, fence + 1), 409, "lease_lost")
    _error(a.release(lid, fence + 2), 409, "lease_lost")
    _error(a.release(lid, 0), 422, "invalid_request")  # fencing tokens start at 1
    time.sleep(3.3)  # waits on the database's clock on purpose: past the grant's 3 s, not the renewal's 60
    _error(b.lease_user(body["userId"]), 409, "lease_held")
    released = a.release(lid, fence)
    assert released.json() == {"lease_id": lid, "released": True, "written_back": False}
    _error(a.renew(lid, fence), 409, "lease_lost")
    _error(a.release(lid, fence), 409, "lease_lost")
    nxt = b.lease_user(body["userId"]).json()
    assert nxt["fencing_token"] == fence + 1 and nxt["session"] == session


def test_write_back_stores_the_next_version(vault: LiveVault, raw: RawDb) -> None:
    first, body = make_session(69)
    sid = _ingest(vault, first)["session_id"]
    refreshed, _ = refresh_session(body, 70)
    stranger, _ = make_session(71)
    expired, _ = refresh_session(body, 72, expired=True)
    a = Signer(vault)
    lease = a.lease_user(body["userId"]).json()
    lid, fence = lease["lease_id"], lease["fencing_token"]
    # Refused write-backs change nothing and keep the lease.
    _error(a.release(lid, fence, stranger), 422, "invalid_session")
    _error(a.release(lid, fence, "bm90IGEgc2Vzc2lvbg=="), 422, "invalid_session")
    _error(a.release(lid, fence, expired), 422, "session_expired")
    assert a.renew(lid, fence).status_code == 200
    assert raw.query("SELECT version FROM sessions WHERE id = %s", [sid])[0][0] == 1

    released = a.release(lid, fence, refreshed)
    assert released.json()["written_back"] is True
    assert raw.query("SELECT version, status FROM sessions WHERE id = %s", [sid])[0] == (2, "active")
    again = a.lease_user(body["userId"]).json()
    assert (
        again["session"] == refreshed and again["session_id"] == sid and again["fencing_token"] == fence + 1
    )
    dump = raw.everything()
    for secret in secret_strings(body):
        assert secret.encode()[:24] not in dump


def test_expired_lease_is_taken_over_and_the_late_write_back_refused(vault: LiveVault, raw: RawDb) -> None:
    session, body = make_session(73)
    sid = _ingest(vault, session)["session_id"]
    late, _ = refresh_session(body, 74)
    a, b = Signer(vault), Signer(vault)
    old = a.lease_user(body["userId"], ttl_seconds=1).json()
    time.sleep(1.3)  # waits on the database's clock on purpose: the 1 s lease has expired by then
    new = b.lease_session(sid).json()
    assert new["fencing_token"] == old["fencing_token"] + 1 and new["session"] == session
    _error(a.release(old["lease_id"], old["fencing_token"], late), 409, "lease_lost")
    _error(a.renew(old["lease_id"], old["fencing_token"]), 409, "lease_lost")
    assert raw.query("SELECT version FROM sessions WHERE id = %s", [sid])[0][0] == 1
    rows = raw.query("SELECT fencing_token, end_reason FROM leases ORDER BY fencing_token")
    assert rows == [(1, "expired"), (2, None)]
    actions = [
        r[0]
        for r in raw.query(
            "SELECT action FROM audit_events WHERE outcome = 'ok' AND action LIKE 'lease.%%' ORDER BY id"
        )
    ]
    assert actions == ["lease.grant", "lease.takeover", "lease.grant"]
    denied = raw.query(
        "SELECT action, detail FROM audit_events WHERE outcome = 'denied' AND action LIKE 'lease.%%' ORDER BY id"
    )
    assert denied == [("lease.release", "lease_lost"), ("lease.renew", "lease_lost")]


def test_every_lease_event_is_audited_without_secrets(vault: LiveVault, raw: RawDb) -> None:
    session, body = make_session(75)
    _ingest(vault, session)
    refreshed, _ = refresh_session(body, 76)
    a, b = Signer(vault), Signer(vault)
    lease = a.lease_user(body["userId"], purpose="sign:tx", ttl_seconds=30).json()
    b.lease_user(body["userId"])
    a.renew(lease["lease_id"], lease["fencing_token"])
    a.release(lease["lease_id"], lease["fencing_token"], refreshed)
    rows = raw.query(
        "SELECT action, outcome, purpose, fencing_token, user_id, actor_token_id FROM audit_events"
        " WHERE action LIKE 'lease.%%' ORDER BY id"
    )
    assert [(r[0], r[1]) for r in rows] == [
        ("lease.grant", "ok"),
        ("lease.grant", "denied"),
        ("lease.renew", "ok"),
        ("lease.write_back", "ok"),
        ("lease.release", "ok"),
    ]
    assert rows[0][2] == "sign:tx" and rows[0][3] == 1 and rows[0][4] == body["userId"]
    assert rows[0][5] == a.token[4:20] and rows[1][5] == b.token[4:20]
    audit = b"".join(str(r).encode() for r in raw.query("SELECT * FROM audit_events"))
    for secret in [session, refreshed, a.token, b.token, *secret_strings(body)]:
        assert secret.encode()[:16] not in audit and secret[-16:].encode() not in audit


@pytest.mark.parametrize("path", ["/v1/leases/x/renew", "/v1/leases/x/release"])
def test_holder_calls_validate_their_bodies(vault: LiveVault, path: str) -> None:
    signer = Signer(vault)
    for body in ({}, {"fencing_token": "1"}, {"fencing_token": None}, {"fencing_token": 1.0}):
        _error(signer.http.post(path, json=body), 422, "invalid_request")
