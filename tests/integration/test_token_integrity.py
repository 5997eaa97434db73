"""Token rows are authenticated with a key the database does not hold.

The vault's own database role can insert and update rows. Before, a row it inserted with the SHA-256 of
a secret of its own choosing was a working signer token (and so a way to any session's plaintext); a
revoked token's ``revoked_at`` set back to NULL worked again. Now every row carries the vault's MAC over
all its fields: rows written behind the vault's back are refused, and the refusal is audited.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime

import httpx

from tests._db import RawDb
from tests._live import LiveVault
from tests.sessiongen import make_session


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _lease(vault: LiveVault, token: str, user_id: str) -> httpx.Response:
    return httpx.post(
        f"{vault.internal}/v1/users/{user_id}/lease", json={"purpose": "sign"}, headers=_auth(token)
    )


def _forge(raw: RawDb, *, role: str = "signer", copy_mac_of: str | None = None) -> str:
    """Insert a token row as a database writer would, with the hash of a secret we know."""
    token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    mac = None
    if copy_mac_of is not None:
        mac = raw.query("SELECT mac FROM service_tokens WHERE id = %s", [copy_mac_of])[0][0]
    raw.execute(
        "INSERT INTO service_tokens (id, name, role, secret_hash, purposes, max_ttl_seconds, created_at,"
        " expires_at, revoked_at, mac) VALUES (%s, %s, %s, %s, NULL, NULL, %s, NULL, NULL, %s)",
        [token_id, "forged", role, hashlib.sha256(secret.encode()).digest(), datetime.now(UTC), mac],
    )
    return f"svt_{token_id}_{secret}"


def _failures(raw: RawDb, token_id: str) -> list[str]:
    rows = raw.query(
        "SELECT detail FROM audit_events WHERE action = 'auth.failure' AND actor_token_id = %s", [token_id]
    )
    return [detail for (detail,) in rows]


def test_a_token_row_inserted_behind_the_vaults_back_is_refused(vault: LiveVault, raw: RawDb) -> None:
    session, body = make_session(411)
    assert httpx.post(f"{vault.public}/api/import-session", json={"session": session}).status_code == 201
    genuine = vault.token("signer")
    for forged in (_forge(raw), _forge(raw, copy_mac_of=genuine[4:20])):
        answer = _lease(vault, forged, body["userId"])
        assert answer.status_code == 401, answer.text
        assert answer.json() == {"error": "unauthorized", "detail": "a valid bearer token is required"}
        assert session not in answer.text
        assert _failures(raw, forged[4:20]) == ["token row fails its MAC; needs signer"]
    assert raw.query("SELECT count(*) FROM leases")[0][0] == 0
    assert _lease(vault, genuine, body["userId"]).status_code == 201  # the vault's own rows still work


def test_a_forged_admin_row_cannot_mint(vault: LiveVault, raw: RawDb) -> None:
    forged = _forge(raw, role="admin")
    answer = httpx.post(
        f"{vault.internal}/v1/tokens", json={"role": "ingest", "name": "x"}, headers=_auth(forged)
    )
    assert answer.status_code == 401, answer.text


def test_an_unrevoked_token_stays_revoked(vault: LiveVault, raw: RawDb) -> None:
    auditor = vault.token("auditor")
    token_id = auditor[4:20]
    assert httpx.get(f"{vault.internal}/v1/audit/public-key", headers=_auth(auditor)).status_code == 200
    revoked = httpx.delete(f"{vault.internal}/v1/tokens/{token_id}", headers=_auth(vault.admin_token))
    assert revoked.status_code == 204, revoked.text
    assert httpx.get(f"{vault.internal}/v1/audit/public-key", headers=_auth(auditor)).status_code == 401
    raw.execute("UPDATE service_tokens SET revoked_at = NULL WHERE id = %s", [token_id])
    answer = httpx.get(f"{vault.internal}/v1/audit/public-key", headers=_auth(auditor))
    assert answer.status_code == 401, answer.text
    assert _failures(raw, token_id)[-1] == "token row fails its MAC; needs auditor"


def test_a_changed_role_or_expiry_is_refused(vault: LiveVault, raw: RawDb) -> None:
    ingest = vault.token("ingest", expires_in=3600)
    token_id = ingest[4:20]
    raw.execute("UPDATE service_tokens SET role = 'auditor' WHERE id = %s", [token_id])
    assert httpx.get(f"{vault.internal}/v1/audit/public-key", headers=_auth(ingest)).status_code == 401
    raw.execute("UPDATE service_tokens SET role = 'ingest', expires_at = NULL WHERE id = %s", [token_id])
    session, _ = make_session(412)
    answer = httpx.post(f"{vault.internal}/v1/sessions", json={"session": session}, headers=_auth(ingest))
    assert answer.status_code == 401, answer.text  # a lifted expiry is a changed row
