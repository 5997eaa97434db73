"""Ingest over real HTTP into real PostgreSQL and SQLite, then read the database directly."""

from __future__ import annotations

import asyncio
import base64
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests._db import RawDb
from tests._live import LiveVault
from tests.sessiongen import make_session, secret_strings, signer_strings
from vault.crypto import unseal
from vault.errors import DecryptionError
from vault.keys import DekCache, LocalKeyringProvider
from vault.service import Keys, open_session, with_keys
from vault.settings import Settings
from vault.store import Store


def _post(url: str, session: str) -> httpx.Response:
    return httpx.post(url, json={"session": session})


def _decrypt(settings: Settings, session_id: str) -> str:
    """Decrypt a stored session through the service layer, as a lease will."""

    async def run() -> str:
        store = Store.connect(settings.require_database_url(), pool_size=1)
        kek = LocalKeyringProvider.from_file(settings.require_keyring_file())
        try:

            async def attempt(keys: Keys) -> str:
                async with store.transaction() as tx:
                    row = await tx.session(session_id)
                assert row is not None
                return open_session(keys, row)

            return await with_keys(store, kek, DekCache(ttl=0, max_entries=0), attempt)
        finally:
            await store.close()

    return asyncio.run(run())


def _windows(value: str, size: int = 16) -> set[bytes]:
    data = value.encode()
    if len(data) <= size:
        return {data}
    return {data[i : i + size] for i in range(0, len(data) - size + 1, 4)}


def test_public_ingest_answers_and_stores_only_ciphertext(vault: LiveVault, raw: RawDb) -> None:
    session, body = make_session(11)
    response = _post(f"{vault.public}/api/import-session", session)
    assert response.status_code == 201, response.text
    out = response.json()
    assert out["user_id"] == body["userId"]
    assert out["format"] == "para"
    assert out["has_signers"] is True
    expires = datetime.fromisoformat(out["expires_at"])
    assert expires.tzinfo is not None and expires.utcoffset() == UTC.utcoffset(None)
    assert out["expires_at"].endswith("Z") or out["expires_at"].endswith("+00:00")

    rows = raw.query("SELECT id, user_id, status, format, has_signers, version FROM sessions")
    assert [(r[0], r[1], r[2], r[3], bool(r[4]), r[5]) for r in rows] == [
        (out["session_id"], body["userId"], "active", "para", True, 1)
    ]
    assert raw.counts()["user_keys"] == 1

    # No plaintext byte sequence of the session is anywhere in the database: not the serialized form,
    # not the decoded JSON, not a 16-byte window of any signer, cookie, address, key or email.
    dump = raw.everything()
    decoded = base64.b64decode(session)
    for needle in {session[i : i + 32].encode() for i in range(0, len(session) - 32, 16)}:
        assert needle not in dump
    for needle in {decoded[i : i + 32] for i in range(0, len(decoded) - 32, 16)}:
        assert needle not in dump
    for secret in secret_strings(body):
        for window in _windows(secret):
            assert window not in dump, "plaintext session material found in the database"
    assert signer_strings(body), "the fixture must carry signers for this test to mean anything"

    # ...and yet the ciphertext decrypts to exactly what was sent.
    assert _decrypt(vault.settings, out["session_id"]) == session


def test_capsule_format_and_no_signers_and_no_expiry(vault: LiveVault) -> None:
    session, body = make_session(12, legacy=True, signers=False, no_expiry=True)
    now = vault.clock.freeze()  # the expiry is counted on the vault's clock: pinned, it is exact
    response = _post(f"{vault.public}/api/import-session", session)
    assert response.status_code == 201, response.text
    out = response.json()
    assert {k: v for k, v in out.items() if k != "expires_at"} == {
        "session_id": out["session_id"],
        "user_id": body["userId"],
        "format": "capsule",
        "has_signers": False,
    }
    # A cookie with no expiry gets the vault's maximum lifetime (it never expired, before).
    lifetime = timedelta(seconds=vault.settings.session_max_lifetime_seconds)
    assert datetime.fromisoformat(out["expires_at"]) == now + lifetime


def test_internal_ingest_needs_an_ingest_token(vault: LiveVault, raw: RawDb) -> None:
    session, _ = make_session(13)
    url = f"{vault.internal}/v1/sessions"
    assert httpx.post(url, json={"session": session}).status_code == 401
    for role in ("signer", "auditor", "admin"):
        token = vault.admin_token if role == "admin" else vault.token(role)
        response = httpx.post(url, json={"session": session}, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 403, role
        assert response.json()["error"] == "forbidden"
    assert raw.counts()["sessions"] == 0
    token = vault.token("ingest")
    response = httpx.post(url, json={"session": session}, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 201
    assert raw.counts()["sessions"] == 1


def test_newer_session_supersedes_older(vault: LiveVault, raw: RawDb) -> None:
    first, body = make_session(14)
    second, _ = make_session(15, user_id=body["userId"])
    other, _ = make_session(16)
    ids = [
        _post(f"{vault.public}/api/import-session", s).json()["session_id"] for s in (first, other, second)
    ]
    status = dict(raw.query("SELECT id, status FROM sessions"))
    assert status == {ids[0]: "superseded", ids[1]: "active", ids[2]: "active"}
    # One user, one DEK, reused by the second ingest.
    assert raw.query("SELECT count(*) FROM user_keys WHERE user_id = %s", [body["userId"]])[0][0] == 1


def test_concurrent_ingests_of_one_user_leave_exactly_one_active(vault: LiveVault, raw: RawDb) -> None:
    _, body = make_session(17)
    sessions = [make_session(100 + i, user_id=body["userId"])[0] for i in range(12)]
    with ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(lambda s: _post(f"{vault.public}/api/import-session", s).status_code, sessions))
    assert codes == [201] * 12
    statuses = [r[0] for r in raw.query("SELECT status FROM sessions")]
    assert sorted(statuses) == ["active"] + ["superseded"] * 11
    assert raw.counts()["user_keys"] == 1


def test_ciphertext_moved_to_another_row_does_not_decrypt(vault: LiveVault, raw: RawDb) -> None:
    """Associated data binds user, session and version: a copied ciphertext is noise elsewhere."""
    a, _ = make_session(18)
    _, body_b = make_session(19)
    b_same_user, _ = make_session(20, user_id=body_b["userId"])
    c, _ = make_session(21)
    id_a = _post(f"{vault.public}/api/import-session", a).json()["session_id"]
    id_b = _post(f"{vault.public}/api/import-session", b_same_user).json()["session_id"]
    id_c = _post(f"{vault.public}/api/import-session", c).json()["session_id"]
    ct_a = raw.query("SELECT ciphertext FROM sessions WHERE id = %s", [id_a])[0][0]
    # Another user's row (different DEK and user id), then another session row of... the same owner
    # is impossible across users, so also move it onto a row with a forged dek_version/user pairing.
    for target in (id_b, id_c):
        raw.execute("UPDATE sessions SET ciphertext = %s WHERE id = %s", [bytes(ct_a), target])
        with pytest.raises(DecryptionError):
            _decrypt(vault.settings, target)
    # The untouched row still decrypts.
    assert _decrypt(vault.settings, id_a) == a


def test_same_user_ciphertext_moved_between_sessions_fails(vault: LiveVault, raw: RawDb) -> None:
    """Same user, same DEK: only the session id in the associated data stops the swap."""
    first, body = make_session(22)
    second, _ = make_session(23, user_id=body["userId"])
    id1 = _post(f"{vault.public}/api/import-session", first).json()["session_id"]
    id2 = _post(f"{vault.public}/api/import-session", second).json()["session_id"]
    ct1 = bytes(raw.query("SELECT ciphertext FROM sessions WHERE id = %s", [id1])[0][0])
    raw.execute("UPDATE sessions SET ciphertext = %s WHERE id = %s", [ct1, id2])
    with pytest.raises(DecryptionError):
        _decrypt(vault.settings, id2)
    # A version bump on the row (a stale write-back) fails the same way.
    raw.execute("UPDATE sessions SET version = 2 WHERE id = %s", [id1])
    with pytest.raises(DecryptionError):
        _decrypt(vault.settings, id1)


def test_wrapped_dek_moved_to_another_user_does_not_unwrap(vault: LiveVault, raw: RawDb) -> None:
    a, _ = make_session(24)
    b, _ = make_session(25)
    _post(f"{vault.public}/api/import-session", a)
    id_b = _post(f"{vault.public}/api/import-session", b).json()["session_id"]
    keys = raw.query("SELECT user_id, wrapped_dek FROM user_keys ORDER BY user_id")
    user_b = raw.query("SELECT user_id FROM sessions WHERE id = %s", [id_b])[0][0]
    other = next(bytes(k[1]) for k in keys if k[0] != user_b)
    raw.execute("UPDATE user_keys SET wrapped_dek = %s WHERE user_id = %s", [other, user_b])
    with pytest.raises(DecryptionError):
        _decrypt(vault.settings, id_b)


def test_ciphertext_header_names_the_dek_version(vault: LiveVault, raw: RawDb) -> None:
    session, _ = make_session(26)
    sid = _post(f"{vault.public}/api/import-session", session).json()["session_id"]
    ct = bytes(raw.query("SELECT ciphertext FROM sessions WHERE id = %s", [sid])[0][0])
    assert ct[0] == 1 and int.from_bytes(ct[1:5], "big") == 1
    with pytest.raises(DecryptionError):
        unseal(ct, key=b"\x01" * 32, aad=b"")


def test_unknown_routes_on_the_public_port_are_404(vault: LiveVault) -> None:
    token = vault.admin_token
    for method, path in [
        ("POST", "/v1/sessions"),
        ("GET", "/v1/tokens"),
        ("POST", "/v1/tokens"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/docs"),
        ("GET", "/openapi.json"),
        ("GET", "/redoc"),
        ("GET", "/"),
        ("GET", "/api/import-session/../../v1/tokens"),
        ("POST", "/api/import-session/extra"),
    ]:
        response = httpx.request(method, vault.public + path, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 404, (method, path)
        assert response.json()["error"] == "not_found"
    assert httpx.get(f"{vault.public}/api/import-session").status_code == 405


def test_internal_app_publishes_schema_with_errors_documented(vault: LiveVault) -> None:
    schema = httpx.get(f"{vault.internal}/openapi.json").json()
    ingest = schema["paths"]["/v1/sessions"]["post"]
    assert {"201", "401", "403", "413", "415", "422", "503"} <= set(ingest["responses"])
    assert "session" in json.dumps(ingest["requestBody"])
    # Every operation documents its errors; every body-taking one the body limit and media type too.
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            codes = set(operation["responses"])
            assert "500" in codes, (path, method)
            if "requestBody" in operation:
                assert {"413", "415", "422"} <= codes, (path, method)
            if path.startswith("/v1/"):
                assert {"401", "403"} <= codes, (path, method)
    assert "HTTPValidationError" not in json.dumps(schema["paths"])  # every 422 is our ErrorBody
    lease = schema["paths"]["/v1/users/{user_id}/lease"]["post"]["responses"]
    assert {"201", "403", "404", "409", "410", "503"} <= set(lease)
    assert httpx.get(f"{vault.internal}/docs").status_code == 200
    assert httpx.get(f"{vault.internal}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{vault.internal}/readyz").json() == {"status": "ready"}
