"""Service credentials: one role each, stored hashed, compared in constant time, expiring and revocable."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta

import httpx

from tests._db import RawDb
from tests._live import LiveVault
from tests.sessiongen import make_session
from vault.keys import load_audit_keys_file
from vault.service import Auditor, Context, Role, create_token, utcnow
from vault.settings import Settings
from vault.store import Store


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _ingest(vault: LiveVault, token: str | None, seed: int = 41) -> httpx.Response:
    headers = {} if token is None else _auth(token)
    return httpx.post(
        f"{vault.internal}/v1/sessions", json={"session": make_session(seed)[0]}, headers=headers
    )


def test_missing_malformed_and_unknown_tokens_are_401(vault: LiveVault) -> None:
    good = vault.token("ingest")
    token_id = good.split("_")[1]
    forged = f"svt_{token_id}_{'A' * 43}"  # right id, wrong secret
    for headers in (
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": f"Basic {good}"},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": f"Bearer {forged}"},
        {"Authorization": f"Bearer svt_{'0' * 16}_{good.split('_', 2)[2]}"},  # right secret, wrong id
        {"Authorization": f"Bearer {good}x"},
    ):
        response = httpx.post(
            f"{vault.internal}/v1/sessions", json={"session": make_session(42)[0]}, headers=headers
        )
        assert response.status_code == 401, headers
        assert response.json() == {"error": "unauthorized", "detail": "a valid bearer token is required"}
    assert _ingest(vault, good).status_code == 201
    assert httpx.post(
        f"{vault.internal}/v1/sessions", json={"session": make_session(43)[0]}, headers={"authorization": f"bearer {good}"}
    ).status_code == 201  # fmt: skip


def test_roles_are_separate(vault: LiveVault) -> None:
    tokens = {role: vault.token(role) for role in ("ingest", "signer", "auditor")}
    tokens["admin"] = vault.admin_token
    for role, token in tokens.items():
        assert (_ingest(vault, token).status_code == 201) == (role == "ingest"), role
        listing = httpx.get(f"{vault.internal}/v1/tokens", headers=_auth(token))
        assert listing.status_code == (200 if role == "admin" else 403), role
        if role != "admin":
            assert listing.json()["error"] == "forbidden"


def test_expired_and_revoked_tokens_stop_working(vault: LiveVault) -> None:
    created = vault.clock.freeze()  # token expiry is decided by the vault's clock: no sleeping
    short = vault.token("ingest", expires_in=1)
    revoked = vault.token("ingest")
    assert _ingest(vault, short, 44).status_code == 201
    assert _ingest(vault, revoked, 45).status_code == 201
    revoked_id = revoked.split("_")[1]
    gone = httpx.delete(f"{vault.internal}/v1/tokens/{revoked_id}", headers=_auth(vault.admin_token))
    assert gone.status_code == 204
    assert _ingest(vault, revoked, 46).status_code == 401
    again = httpx.delete(f"{vault.internal}/v1/tokens/{revoked_id}", headers=_auth(vault.admin_token))
    assert again.status_code == 404 and again.json()["error"] == "not_found"
    vault.clock.advance(1 - 1e-6)  # a microsecond before its expiry: still good
    assert _ingest(vault, short, 47).status_code == 201
    assert vault.clock.advance(1e-6) == created + timedelta(seconds=1)  # its expiry: refused from here on
    assert _ingest(vault, short, 48).status_code == 401


def test_tokens_are_stored_hashed_and_never_listed(vault: LiveVault, raw: RawDb) -> None:
    token = vault.token("signer", purposes=["sign"], max_ttl_seconds=60)
    token_id, secret = token[4:20], token[21:]
    listing = httpx.get(f"{vault.internal}/v1/tokens", headers=_auth(vault.admin_token))
    assert secret not in listing.text and vault.admin_token[21:] not in listing.text
    entry = next(t for t in listing.json() if t["id"] == token_id)
    assert entry["role"] == "signer" and entry["purposes"] == ["sign"] and entry["max_ttl_seconds"] == 60
    dump = raw.everything()
    assert secret.encode() not in dump and token.encode() not in dump
    stored = bytes(raw.query("SELECT secret_hash FROM service_tokens WHERE id = %s", [token_id])[0][0])
    assert stored == hashlib.sha256(secret.encode()).digest()


def test_bad_token_requests_are_refused(vault: LiveVault, raw: RawDb) -> None:
    before = raw.counts()["service_tokens"]
    for body in (
        {"role": "root", "name": "x"},
        {"role": "ingest", "name": ""},
        {"role": "ingest", "name": "x\n"},
        {"role": "ingest", "name": "x", "expires_in": 0},
        {"role": "ingest", "name": "x", "expires_in": "60"},
        {"role": "ingest", "name": "x", "purposes": ["sign"]},
        {"role": "signer", "name": "x", "purposes": ["no spaces allowed"]},
        {"role": "signer", "name": "x", "max_ttl_seconds": -1},
    ):
        response = httpx.post(f"{vault.internal}/v1/tokens", json=body, headers=_auth(vault.admin_token))
        assert response.status_code == 422, body
        assert response.json()["error"] == "invalid_request"
    assert raw.counts()["service_tokens"] == before


def test_token_service_rejects_nothing_it_should_accept(settings: Settings) -> None:
    """The service layer returns a working token string that matches the stored id."""

    async def run() -> None:
        store = Store.connect(settings.require_database_url(), pool_size=1)
        try:
            auditor = Auditor(load_audit_keys_file(settings.require_audit_keys_file()))
            token, info = await create_token(
                store, auditor, Context(), role=Role.AUDITOR, name="a", now=utcnow()
            )
            assert token.startswith(f"svt_{info.id}_") and info.role is Role.AUDITOR
            assert "svt_" not in repr(info)
        finally:
            await store.close()

    asyncio.run(run())
