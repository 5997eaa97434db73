"""The API's boundaries over real HTTP on PostgreSQL and SQLite: malformed ids and bodies, a session that
does not decrypt, token minting, slash redirects, the keyed-hash rate limit and cookie lifetimes.

Every refusal is checked three ways: its status and error code, exactly one audit row (for authenticated
requests ``request.refused`` naming the route template), and no other change to the database.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from tests._db import RawDb
from tests._live import LiveVault, live_vault
from tests.integration.test_audit_tamper import _cli
from tests.sessiongen import make_session, refresh_session
from vault.service import INT64_MAX, MAX_EXPIRES_IN, PURPOSE_PATTERN, USER_ID_PATTERN, UUID_PATTERN
from vault.settings import MAX_LEASE_TTL, Settings

# Every table but the audit log's: a refusal must leave all of them as they were.
UNTOUCHED = ("leases", "sessions", "users", "user_keys", "service_tokens")
AuditRow = tuple[str, str, str | None]
Send = Callable[[], httpx.Response]


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _refused(route: str) -> AuditRow:
    return ("request.refused", "denied", f"invalid_request {route}")


def _created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    out: dict[str, Any] = response.json()
    return out


def _ingest(vault: LiveVault, session: str) -> dict[str, Any]:
    return _created(httpx.post(f"{vault.public}/api/import-session", json={"session": session}))


def _grant(vault: LiveVault, signer: str, user_id: str) -> dict[str, Any]:
    url = f"{vault.internal}/v1/users/{user_id}/lease"
    return _created(httpx.post(url, json={"purpose": "sign"}, headers=_auth(signer)))


def _counts(raw: RawDb, tables: tuple[str, ...] = UNTOUCHED) -> dict[str, int]:
    counts = raw.counts()
    return {t: counts[t] for t in tables}


def _last_event(raw: RawDb) -> int:
    return int(raw.query("SELECT coalesce(max(id), 0) FROM audit_events")[0][0])


def _refusal(raw: RawDb, send: Send, status: int, code: str, event: AuditRow) -> list[tuple[Any, ...]]:
    """Send; expect ``status`` / ``code``, exactly the audit row ``event`` and no other change. Returns the
    new audit rows whole (every column)."""
    before, last = _counts(raw), _last_event(raw)
    response = send()
    assert response.status_code == status, response.text
    assert response.json()["error"] == code, response.text
    assert _counts(raw) == before
    rows = raw.query("SELECT action, outcome, detail FROM audit_events WHERE id > %s ORDER BY id", [last])
    assert rows == [event], (response.request.url, rows)
    return raw.query("SELECT * FROM audit_events WHERE id > %s", [last])


def _post(url: str, token: str | None, body: object = None, content: bytes | None = None) -> Send:
    """A request to send later: ``body`` as JSON, or ``content`` as raw JSON bytes."""
    headers = {} if token is None else _auth(token)
    if content is not None:
        headers["Content-Type"] = "application/json"
        return lambda: httpx.post(url, content=content, headers=headers)
    return lambda: httpx.post(url, json=body, headers=headers)


def _delete(url: str, token: str) -> Send:
    return lambda: httpx.delete(url, headers=_auth(token))


def _all_sealed_and_verified(raw: RawDb, settings: Settings) -> None:
    """Every audit row written is sealed by the live vault's sealer, and `audit verify` passes the log."""
    unsealed = "SELECT id, action, detail FROM audit_events WHERE seq IS NULL"
    deadline = time.monotonic() + 20  # the sealer runs on real time (its interval): poll, generously
    while raw.query(unsealed):
        assert time.monotonic() < deadline, raw.query(unsealed)
        time.sleep(0.2)
    result = _cli(settings, "verify")
    assert result.returncode == 0, (result.stdout, result.stderr)


# --- 1. path ids ----------------------------------------------------------------------------------------


def test_malformed_path_ids_are_refused_audited_and_sealable(
    vault: LiveVault, raw: RawDb, settings: Settings
) -> None:
    session, body = make_session(801)
    sid = _ingest(vault, session)["session_id"]
    user = body["userId"]
    signer = vault.token("signer")
    lease = _grant(vault, signer, user)
    lid, fence = lease["lease_id"], lease["fencing_token"]
    token_id = vault.token("ingest")[4:20]  # another token than the admin's (whose id names the actor)
    grant, fenced = {"purpose": "sign"}, {"fencing_token": fence}
    by_session, by_user = "POST /v1/sessions/{session_id}/lease", "POST /v1/users/{user_id}/lease"
    renew, release = "POST /v1/leases/{lease_id}/renew", "POST /v1/leases/{lease_id}/release"
    # (path, token, body, route template, a value the audit row must not hold)
    cases: list[tuple[str, str, dict[str, Any] | None, str, str]] = [
        (f"/v1/sessions/{sid}%20/lease", signer, grant, by_session, sid),
        (f"/v1/sessions/{sid}0/lease", signer, grant, by_session, sid),
        (f"/v1/sessions/{sid[:10]}%00{sid[11:]}/lease", signer, grant, by_session, sid[11:]),
        (f"/v1/sessions/{sid.upper()}/lease", signer, grant, by_session, sid.upper()),
        (f"/v1/users/{'u' * 128}%20%20/lease", signer, grant, by_user, "u" * 64),
        (f"/v1/users/{'u' * 129}/lease", signer, grant, by_user, "u" * 64),
        (f"/v1/users/{user[:10]}%00{user[10:]}/lease", signer, grant, by_user, user[10:]),
        (f"/v1/leases/{lid}%20/renew", signer, fenced, renew, lid),
        (f"/v1/leases/{lid}0/release", signer, fenced, release, lid),
        (f"/v1/leases/{lid[:10]}%00{lid[11:]}/release", signer, fenced, release, lid[11:]),
        (f"/v1/leases/{lid.upper()}/renew", signer, fenced, renew, lid.upper()),
        (f"/v1/tokens/{token_id.upper()}", vault.admin_token, None, "DELETE /v1/tokens/{token_id}", token_id),
        (f"/v1/tokens/{token_id}0", vault.admin_token, None, "DELETE /v1/tokens/{token_id}", token_id),
    ]
    for path, token, json_body, route, needle in cases:
        url = vault.internal + path
        send = _delete(url, token) if json_body is None else _post(url, token, json_body)
        rows = _refusal(raw, send, 422, "invalid_request", _refused(route))
        assert needle not in str(rows), path
        ids = raw.query("SELECT user_id, session_id, lease_id FROM audit_events WHERE id = %s", [rows[0][0]])
        assert ids == [(None, None, None)], path
    # Nothing was touched: the lease still renews, the token is not revoked.
    renewed = httpx.post(f"{vault.internal}/v1/leases/{lid}/renew", json=fenced, headers=_auth(signer))
    assert renewed.status_code == 200, renewed.text
    assert raw.query("SELECT revoked_at FROM service_tokens WHERE id = %s", [token_id]) == [(None,)]
    _all_sealed_and_verified(raw, settings)


# --- 2. bodies ------------------------------------------------------------------------------------------


def test_numbers_out_of_range_are_refused(vault: LiveVault, raw: RawDb) -> None:
    session, body = make_session(811)
    _ingest(vault, session)
    signer = vault.token("signer")
    lease = _grant(vault, signer, body["userId"])
    lid, grant = lease["lease_id"], f"/v1/users/{body['userId']}/lease"
    cases: list[tuple[str, str, dict[str, Any], str]] = [
        *((f"/v1/leases/{lid}/{action}", signer, {"fencing_token": fence}, f"POST /v1/leases/{{lease_id}}/{action}")
          for action in ("renew", "release") for fence in (2**63, -1, 0)),
        *((grant, signer, {"purpose": "sign", "ttl_seconds": ttl}, "POST /v1/users/{user_id}/lease")
          for ttl in (0, 2**31, 10**20)),
        ("/v1/tokens", vault.admin_token, {"role": "auditor", "name": "a", "expires_in": 2**53}, "POST /v1/tokens"),
    ]  # fmt: skip
    for path, token, json_body, route in cases:
        _refusal(raw, _post(vault.internal + path, token, json_body), 422, "invalid_request", _refused(route))
    fenced = {"fencing_token": lease["fencing_token"]}
    assert _post(f"{vault.internal}/v1/leases/{lid}/renew", signer, fenced)().status_code == 200


def test_unknown_fields_surrogates_nuls_and_huge_cursors_are_refused(vault: LiveVault, raw: RawDb) -> None:
    session, body = make_session(812)
    _ingest(vault, session)
    signer, auditor, admin = vault.token("signer"), vault.token("auditor"), vault.admin_token
    lease = _grant(vault, signer, body["userId"])
    lid, fence = lease["lease_id"], lease["fencing_token"]
    base = vault.internal
    grant_url, grant_route = f"{base}/v1/users/{body['userId']}/lease", "POST /v1/users/{user_id}/lease"
    cases: list[tuple[Send, str]] = [
        (_post(grant_url, signer, {"purpose": "sign", "holder": "me"}), grant_route),
        (_post(f"{base}/v1/leases/{lid}/renew", signer, {"fencing_token": fence, "force": True}),
         "POST /v1/leases/{lease_id}/renew"),
        (_post(f"{base}/v1/leases/{lid}/release", signer, {"fencing_token": fence, "released": True}),
         "POST /v1/leases/{lease_id}/release"),
        (_post(f"{base}/v1/tokens", admin, {"role": "ingest", "name": "x", "purposes": ["sign"]}), "POST /v1/tokens"),
        (_post(f"{base}/v1/audit/hash", auditor, {"value": "a@example.com", "raw": True}), "POST /v1/audit/hash"),
        (_post(f"{base}/v1/audit/hash", auditor, content=b'{"value": "\\ud800"}'), "POST /v1/audit/hash"),
        (_post(f"{base}/v1/audit/hash", auditor, content=b'{"value": "a\\udfff@b.c"}'), "POST /v1/audit/hash"),
        (_post(grant_url, signer, content=b'{"purpose": "\\ud800"}'), grant_route),
        (_post(grant_url, signer, content=b'{"purpose": "sign\\udc00"}'), grant_route),
        (_post(grant_url, signer, {"purpose": "sign\x00"}), grant_route),
        (_post(grant_url, signer, {"purpose": "\x00"}), grant_route),
        (lambda: httpx.get(f"{base}/v1/audit/events", params={"cursor": "9" * 19}, headers=_auth(auditor)),
         "GET /v1/audit/events"),
        (lambda: httpx.get(f"{base}/v1/audit/checkpoints", params={"cursor": "9" * 19}, headers=_auth(auditor)),
         "GET /v1/audit/checkpoints"),
    ]  # fmt: skip
    for send, route in cases:
        _refusal(raw, send, 422, "invalid_request", _refused(route))
    assert raw.query("SELECT count(*) FROM leases WHERE ended_us IS NULL")[0][0] == 1


def _integer(schema: dict[str, Any]) -> dict[str, Any]:
    """The integer branch of an ``int | None`` field's schema (or the schema itself)."""
    branches: list[dict[str, Any]] = [s for s in schema.get("anyOf", [schema]) if s.get("type") == "integer"]
    assert len(branches) == 1, schema
    return branches[0]


def test_the_schema_declares_the_bounds(vault: LiveVault) -> None:
    paths = httpx.get(f"{vault.internal}/openapi.json").json()["paths"]

    def body(path: str) -> dict[str, Any]:
        schema: dict[str, Any] = paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert schema["additionalProperties"] is False, path
        props: dict[str, Any] = schema["properties"]
        return props

    def param(path: str, method: str, name: str) -> dict[str, Any]:
        (found,) = [p for p in paths[path][method]["parameters"] if p["name"] == name]
        schema: dict[str, Any] = found["schema"]
        return schema

    for action in ("renew", "release"):
        fence = body(f"/v1/leases/{{lease_id}}/{action}")["fencing_token"]
        assert (fence["type"], fence["minimum"], fence["maximum"]) == ("integer", 1, INT64_MAX)
        assert param(f"/v1/leases/{{lease_id}}/{action}", "post", "lease_id")["pattern"] == UUID_PATTERN
    for path in ("/v1/users/{user_id}/lease", "/v1/sessions/{session_id}/lease"):
        grant = body(path)
        ttl = _integer(grant["ttl_seconds"])
        assert (ttl["minimum"], ttl["maximum"]) == (1, MAX_LEASE_TTL)
        assert grant["purpose"]["pattern"] == PURPOSE_PATTERN
    assert param("/v1/users/{user_id}/lease", "post", "user_id")["pattern"] == USER_ID_PATTERN
    assert param("/v1/sessions/{session_id}/lease", "post", "session_id")["pattern"] == UUID_PATTERN
    token = body("/v1/tokens")
    expires_in = _integer(token["expires_in"])
    assert (expires_in["minimum"], expires_in["maximum"]) == (1, MAX_EXPIRES_IN)
    assert body("/v1/audit/hash")["value"]["maxLength"] == 512
    assert param("/v1/tokens/{token_id}", "delete", "token_id")["pattern"] == "^[0-9a-f]{16}$"
    cursor = param("/v1/audit/events", "get", "cursor")
    assert [s["pattern"] for s in cursor["anyOf"] if "pattern" in s] == ["^[0-9]{1,19}$"]


# --- 3. a session that does not decrypt -----------------------------------------------------------------


def _flip(raw: RawDb, table: str, column: str, key: str, value: str) -> None:
    """Flip one bit in the middle of ``table.column`` (a blob) where ``key = value``."""
    blob = bytes(raw.query(f"SELECT {column} FROM {table} WHERE {key} = %s", [value])[0][0])
    middle = len(blob) // 2
    blob = blob[:middle] + bytes([blob[middle] ^ 0x01]) + blob[middle + 1 :]
    raw.execute(f"UPDATE {table} SET {column} = %s WHERE {key} = %s", [blob, value])


@pytest.mark.parametrize("damage", ["flipped", "swapped"])
def test_a_session_that_does_not_decrypt_is_an_audited_error(
    vault: LiveVault, raw: RawDb, settings: Settings, damage: str
) -> None:
    session, body = make_session(821)
    sid = _ingest(vault, session)["session_id"]
    other, other_body = make_session(822)
    other_sid = _ingest(vault, other)["session_id"]
    if damage == "flipped":
        _flip(raw, "sessions", "ciphertext", "id", sid)
    else:  # another user's ciphertext: another key and another AAD
        bad = bytes(raw.query("SELECT ciphertext FROM sessions WHERE id = %s", [other_sid])[0][0])
        raw.execute("UPDATE sessions SET ciphertext = %s WHERE id = %s", [bad, sid])
    signer = vault.token("signer")
    user = body["userId"]
    error = ("lease.grant", "error", "decryption_failed")
    for path in (f"/v1/users/{user}/lease", f"/v1/sessions/{sid}/lease"):
        send = _post(vault.internal + path, signer, {"purpose": "sign"})
        _refusal(raw, send, 500, "decryption_failed", error)
    rows = raw.query(
        "SELECT user_id, session_id, purpose, actor_token_id, lease_id FROM audit_events"
        " WHERE action = 'lease.grant' AND outcome = 'error' ORDER BY id"
    )
    assert rows == [(user, None, "sign", signer[4:20], None), (None, sid, "sign", signer[4:20], None)]
    assert raw.query("SELECT count(*) FROM leases")[0][0] == 0
    assert _grant(vault, signer, other_body["userId"])["session"] == other  # the other session is fine
    _all_sealed_and_verified(raw, settings)


@pytest.mark.parametrize("where", ["ingest", "write_back"])
def test_failed_decryptions_outside_a_grant_are_audited(settings: Settings, raw: RawDb, where: str) -> None:
    """As a grant's are (docs/api.md: "failed decryptions are audited too"): outcome ``error``."""
    session, body = make_session(825)
    refreshed = refresh_session(body, 826)[0]
    with live_vault(settings.model_copy(update={"dek_cache_ttl_seconds": 0.0})) as vault:  # no cached DEK
        sid = _ingest(vault, session)["session_id"]
        if where == "ingest":  # the user's wrapped data key no longer unwraps
            _flip(raw, "user_keys", "wrapped_dek", "user_id", body["userId"])
            send = _post(f"{vault.public}/api/import-session", None, {"session": refreshed})
            event: AuditRow = ("session.ingest", "error", "decryption_failed")
        else:  # the stored session stops decrypting while it is leased
            signer = vault.token("signer")
            lease = _grant(vault, signer, body["userId"])
            _flip(raw, "sessions", "ciphertext", "id", sid)
            fenced = {"fencing_token": lease["fencing_token"], "session": refreshed}
            send = _post(f"{vault.internal}/v1/leases/{lease['lease_id']}/release", signer, fenced)
            event = ("lease.release", "error", "decryption_failed")
        _refusal(raw, send, 500, "decryption_failed", event)


# --- 4. minting ------------------------------------------------------------------------------------------


def test_the_api_mints_ingest_and_auditor_tokens_only(vault: LiveVault, raw: RawDb) -> None:
    url = f"{vault.internal}/v1/tokens"
    admin_id = vault.admin_token[4:20]
    for role in ("signer", "admin"):  # the model takes the role; the service refuses it: 403, audited there
        send = _post(url, vault.admin_token, {"role": role, "name": f"api-{role}"})
        rows = _refusal(raw, send, 403, "forbidden", ("token.create", "denied", f"{role} via api"))
        assert admin_id in rows[0] and "test-admin" in rows[0]
    assert raw.query("SELECT role FROM service_tokens") == [("admin",)]
    for role in ("ingest", "auditor"):
        created = httpx.post(
            url, json={"role": role, "name": f"api-{role}"}, headers=_auth(vault.admin_token)
        )
        assert created.status_code == 201, created.text
        new_id = created.json()["id"]
        event = raw.query(
            "SELECT outcome, actor_token_id, actor_name, detail FROM audit_events"
            " WHERE action = 'token.create' AND detail LIKE %s",
            [f"{role} {new_id}%"],
        )
        assert event == [("ok", admin_id, "test-admin", f"{role} {new_id} api-{role}")]
    assert sorted(raw.query("SELECT role FROM service_tokens")) == [("admin",), ("auditor",), ("ingest",)]


def test_cli_minting_is_audited_with_the_operator(vault: LiveVault, raw: RawDb, settings: Settings) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    env.update(
        VAULT_DATABASE_URL=settings.require_database_url(), VAULT_KEYRING_FILE=str(settings.require_keyring_file()),
        VAULT_AUDIT_KEYS_FILE=str(settings.require_audit_keys_file()),
        LOGNAME="boundary-operator",  # what getpass.getuser() reads first
    )  # fmt: skip
    created = subprocess.run(
        [sys.executable, "-m", "vault.cli", "token", "create", "--role", "signer", "--name", "cli-signer"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    event = raw.query(
        "SELECT outcome, actor_token_id, actor_name, detail FROM audit_events WHERE detail LIKE 'signer %%'"
    )
    assert event == [("ok", None, "cli:boundary-operator", f"signer {token[4:20]} cli-signer")]
    session, body = make_session(831)
    _ingest(vault, session)
    assert _grant(vault, token, body["userId"])["session"] == session


# --- 5. no slash redirects --------------------------------------------------------------------------------


def test_trailing_slashes_are_404_and_never_redirect(vault: LiveVault, raw: RawDb) -> None:
    session, _ = make_session(841)
    evil = {"Host": "evil.example"}
    ingest = vault.token("ingest")
    requests: list[tuple[str, str, dict[str, str], dict[str, Any] | None]] = [
        ("POST", f"{vault.public}/api/import-session/", evil, {"session": session}),
        ("POST", f"{vault.internal}/v1/sessions/", {**evil, **_auth(ingest)}, {"session": session}),
        ("POST", f"{vault.internal}/v1/tokens/", {**evil, **_auth(vault.admin_token)}, {"role": "ingest", "name": "x"}),
        ("GET", f"{vault.internal}/healthz/", evil, None),
    ]  # fmt: skip
    tables = (*UNTOUCHED, "audit_events")  # not audit_checkpoints: the sealer may sign one meanwhile
    before = _counts(raw, tables)
    for method, url, headers, json_body in requests:
        response = httpx.request(method, url, headers=headers, json=json_body)
        assert response.status_code == 404, (url, response.status_code, response.headers)
        assert "location" not in response.headers, url
        assert response.json()["error"] == "not_found" and "evil" not in response.text
    assert _counts(raw, tables) == before


# --- 6. the keyed-hash rate limit ------------------------------------------------------------------------


def test_keyed_hash_lookups_are_rate_limited_per_token(settings: Settings, raw: RawDb) -> None:
    limited = settings.model_copy(update={"audit_hash_rate_limit": "3/minute"})
    with live_vault(limited) as vault:
        first, second = vault.token("auditor"), vault.token("auditor")
        url = f"{vault.internal}/v1/audit/hash"
        for i in range(3):
            response = httpx.post(url, json={"value": f"user{i}@example.com"}, headers=_auth(first))
            assert response.status_code == 200, response.text
        before, last = _counts(raw), _last_event(raw)
        refused = httpx.post(url, json={"value": "user9@example.com"}, headers=_auth(first))
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"] == "rate_limited"
        retry_after = refused.headers["retry-after"]
        assert retry_after.isdigit() and 1 <= int(retry_after) <= 60
        assert refused.json()["retry_after"] == int(retry_after)
        assert "user9" not in refused.text
        assert _counts(raw) == before
        assert raw.query(
            "SELECT action, outcome, detail, actor_token_id FROM audit_events WHERE id > %s", [last]
        ) == [("audit.hash", "denied", "rate_limited", first[4:20])]
        for i in range(3):  # another auditor has its own allowance
            response = httpx.post(url, json={"value": f"user{i}@example.com"}, headers=_auth(second))
            assert response.status_code == 200, response.text
        assert httpx.post(url, json={"value": "x@example.com"}, headers=_auth(second)).status_code == 429


# --- 8. cookie lifetimes ----------------------------------------------------------------------------------


def _expires_at(ingested: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(ingested["expires_at"])


def test_cookie_max_age_and_the_maximum_lifetime_set_expires_at(vault: LiveVault, raw: RawDb) -> None:
    now = vault.clock.freeze()  # expiries count from the vault's clock: pinned, they are exact
    a_day_away = now + timedelta(hours=22)  # sessiongen's Expires is two hours after this
    short, _ = make_session(851, now=a_day_away, max_age=60)
    assert _expires_at(_ingest(vault, short)) == now + timedelta(seconds=60)
    internal = _post(f"{vault.internal}/v1/sessions", vault.token("ingest"), {"session": short})
    # (the same session again: it supersedes the first)
    assert _expires_at(_created(internal())) == now + timedelta(seconds=60)
    endless, body = make_session(853, no_expiry=True)
    ingested = _ingest(vault, endless)
    assert _expires_at(ingested) == now + timedelta(seconds=vault.settings.session_max_lifetime_seconds)
    sid = ingested["session_id"]
    assert raw.query("SELECT expires_at FROM sessions WHERE id = %s", [sid])[0][0] is not None
    expired, _ = make_session(854, max_age=0)
    send = _post(f"{vault.public}/api/import-session", None, {"session": expired})
    _refusal(raw, send, 422, "session_expired", ("session.ingest", "denied", "session_expired"))
    # A write-back reads the cookie the same way: Max-Age=0 is refused (the lease kept), none is capped.
    signer = vault.token("signer")
    lease = _grant(vault, signer, body["userId"])
    url = f"{vault.internal}/v1/leases/{lease['lease_id']}/release"
    fence = lease["fencing_token"]
    stale = {"fencing_token": fence, "session": refresh_session(body, 855, max_age=0)[0]}
    event = ("lease.release", "denied", "session_expired")
    _refusal(raw, _post(url, signer, stale), 422, "session_expired", event)
    fresh = {"fencing_token": fence, "session": refresh_session(body, 856, no_expiry=True)[0]}
    assert httpx.post(url, json=fresh, headers=_auth(signer)).json()["written_back"] is True
    stored = raw.query("SELECT version, expires_at FROM sessions WHERE id = %s", [sid])
    assert stored[0][0] == 2 and stored[0][1] is not None
