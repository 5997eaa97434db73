"""A KMS outage, end to end: the real vault over HTTP with Transit on a durable OpenBao (raft storage) that
is stopped (connections refused) or paused (SIGSTOP: connections accepted, nothing answers), then brought
back on the same storage. Both backends.

What it shows: the vault fails closed with ``503 key_unavailable`` for anything that needs the KMS and
writes nothing for it (only audit rows may appear); a DEK already in the bounded cache still serves
leases (SECURITY.md says so); ``/readyz`` names the KMS; the process stays up and recovers without a
restart; a rotation or a rewrap cut by the outage leaves every data key whole.
"""

from __future__ import annotations

import asyncio
import base64
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from pydantic import SecretStr

from tests._db import RawDb
from tests._live import LiveVault, live_vault
from tests._openbao import DurableBao
from tests.integration.test_leases import Signer, _error
from tests.sessiongen import make_session
from vault.crypto import dek_aad, generate_key
from vault.keys import WrappedKey
from vault.settings import Settings

pytestmark = pytest.mark.slow

HANG_LIMIT = 30.0  # proves "does not hang"; a 503 comes after about (retries + 1) x timeout
AUDIT = {"audit_events", "audit_chain", "audit_checkpoints"}


@pytest.fixture
def bao(durable_openbao: Callable[[], DurableBao]) -> DurableBao:
    return durable_openbao()


@pytest.fixture
def settings(db_url: str, audit_keys_file: Path, bao: DurableBao) -> Settings:
    """Transit on the durable server; 1 s per attempt and 1 retry so outage calls fail fast; a DEK cache
    that outlives the test (60 s, the default, could expire mid-test on a slow machine)."""
    return Settings.model_validate(
        {"database_url": SecretStr(db_url), "audit_keys_file": audit_keys_file, "kek_provider": "transit",
         "transit_addr": bao.addr, "transit_key": bao.key, "transit_token": SecretStr(bao.root_token),
         "transit_timeout_seconds": 1, "transit_retries": 1, "dek_cache_ttl_seconds": 600}
    )  # fmt: skip


def _post(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(url, timeout=60, **kwargs)


def _ingest(vault: LiveVault, seed: int) -> tuple[str, str, httpx.Response]:
    session, body = make_session(seed)
    return body["userId"], session, _post(f"{vault.public}/api/import-session", json={"session": session})


def _admin(vault: LiveVault, method: str, path: str, **kwargs: Any) -> httpx.Response:
    auth = {"Authorization": f"Bearer {vault.admin_token}"}
    return httpx.request(method, vault.internal + path, headers=auth, timeout=60, **kwargs)


def _data_counts(raw: RawDb) -> dict[str, int]:
    return {table: n for table, n in raw.counts().items() if table not in AUDIT}


def _user_rows(raw: RawDb, user_id: str) -> list[int]:
    return [
        int(raw.query(f"SELECT count(*) FROM {table} WHERE {column} = %s", [user_id])[0][0])
        for table, column in (("users", "id"), ("user_keys", "user_id"), ("sessions", "user_id"))
    ]


def _lease_and_release(signer: Signer, user_id: str, session: str) -> None:
    granted = signer.lease_user(user_id)
    assert granted.status_code == 201, granted.text
    assert granted.json()["session"] == session
    lease = granted.json()
    assert signer.release(lease["lease_id"], lease["fencing_token"]).status_code == 200


def _show(text: str) -> None:
    print(text)  # noqa: T201 - shown with -s


def _timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


@pytest.fixture
def warm_a(settings: Settings, raw: RawDb) -> Iterator[tuple[LiveVault, dict[str, tuple[str, str]]]]:
    """Users A and B ingested; then a fresh vault (empty DEK cache) that leased A once: only A is cached."""
    users: dict[str, tuple[str, str]] = {}
    with live_vault(settings) as first:
        for name, seed in (("A", 900), ("B", 901)):
            user_id, session, response = _ingest(first, seed)
            assert response.status_code == 201, response.text
            users[name] = (user_id, session)
    with live_vault(settings) as vault:
        _lease_and_release(Signer(vault), *users["A"])
        yield vault, users


def test_a_stopped_kms_fails_closed_a_cached_key_still_serves_and_it_recovers(
    warm_a: tuple[LiveVault, dict[str, tuple[str, str]]], bao: DurableBao, raw: RawDb
) -> None:
    vault, users = warm_a
    signer = Signer(vault)
    before = _data_counts(raw)
    first_event = raw.query("SELECT coalesce(max(id), 0) FROM audit_events")[0][0]
    bao.stop()

    user_c, session_c, refused = _ingest(vault, 902)
    assert _error(refused, 503, "key_unavailable")["detail"] == "the KMS is unreachable"
    assert _user_rows(raw, user_c) == [0, 0, 0]

    held = signer.lease_user(users["B"][0])  # B's DEK is not cached: it needs the KMS
    _error(held, 503, "key_unavailable")
    assert users["B"][1] not in held.text
    assert _data_counts(raw) == before  # no user, key, session or lease row: only audit rows may appear
    refusals = raw.query(
        "SELECT action, outcome, detail, user_id FROM audit_events WHERE id > %s AND outcome = 'error' ORDER BY id",
        [first_event],
    )
    assert [tuple(r) for r in refusals] == [
        ("session.ingest", "error", "key_unavailable", user_c),
        ("lease.grant", "error", "key_unavailable", users["B"][0]),
    ]  # each refusal is audited, in its own transaction (the database is up)

    # A's DEK is in the cache (bounded: VAULT_DEK_CACHE_TTL_SECONDS / _MAX_ENTRIES): A is still served.
    _lease_and_release(signer, *users["A"])
    after = _data_counts(raw)
    assert after == before | {"leases": before["leases"] + 1}

    ready = httpx.get(vault.internal + "/readyz", timeout=60)
    assert ready.status_code == 503
    assert ready.json() == {"error": "key_unavailable", "detail": "the KMS is unreachable"}
    assert httpx.get(vault.internal + "/healthz", timeout=60).status_code == 200  # the process is up

    bao.start()  # same storage, unsealed again; the vault is not restarted
    assert httpx.get(vault.internal + "/readyz", timeout=60).json() == {"status": "ready"}
    again = _post(f"{vault.public}/api/import-session", json={"session": session_c})
    assert again.status_code == 201, again.text
    assert _user_rows(raw, user_c) == [1, 1, 1]
    _lease_and_release(signer, *users["B"])
    _lease_and_release(signer, user_c, session_c)


def test_a_hung_kms_answers_503_in_bounded_time(
    warm_a: tuple[LiveVault, dict[str, tuple[str, str]]], bao: DurableBao, raw: RawDb
) -> None:
    """SIGSTOP: the kernel accepts the connection and nothing answers; each attempt is cut at the timeout."""
    vault, users = warm_a
    signer = Signer(vault)
    before = _data_counts(raw)
    user_c = make_session(903)[1]["userId"]
    bao.pause()
    try:
        calls: dict[str, Callable[[], httpx.Response]] = {
            "ingest of a new user": lambda: _ingest(vault, 903)[2],
            "lease of an uncached DEK": lambda: signer.lease_user(users["B"][0]),
            "readyz": lambda: httpx.get(vault.internal + "/readyz", timeout=60),
        }
        for what, call in calls.items():
            response, seconds = _timed(call)
            body = _error(response, 503, "key_unavailable")
            assert body["detail"] == "the KMS is unreachable (no answer in time)", (what, body)
            _show(f"hung KMS: {what} answered 503 in {seconds:.2f} s")
            assert seconds < HANG_LIMIT, (what, seconds)
        cached, seconds = _timed(lambda: signer.lease_user(users["A"][0]))
        assert cached.status_code == 201 and cached.json()["session"] == users["A"][1], cached.text
        _show(f"hung KMS: lease of a cached DEK granted in {seconds:.3f} s")
        assert signer.release(cached.json()["lease_id"], cached.json()["fencing_token"]).status_code == 200
        assert _user_rows(raw, user_c) == [0, 0, 0]
        assert _data_counts(raw) == before | {"leases": before["leases"] + 1}
    finally:
        bao.resume()
    assert httpx.get(vault.internal + "/readyz", timeout=60).status_code == 200
    _lease_and_release(signer, *users["B"])


def _bulk_keys(raw: RawDb, bao: DurableBao, n: int) -> dict[str, bytes]:
    """``n`` users with one DEK each, wrapped under the KEK's version 1 (Transit batch encrypt) and
    inserted directly (ingesting that many over HTTP would be slow): rewrap work that lasts a while."""
    deks = {f"bulk-{i:04d}": generate_key() for i in range(n)}
    wrapped: list[str] = []
    items = list(deks.items())
    for start in range(0, n, 100):  # OpenBao refuses a request of much more than 1000 JSON strings
        batch = [{"plaintext": base64.b64encode(d).decode(), "context": base64.b64encode(dek_aad(u, 1)).decode()}
                 for u, d in items[start : start + 100]]  # fmt: skip
        results = bao.ok("POST", f"transit/encrypt/{bao.key}", {"batch_input": batch})["data"][
            "batch_results"
        ]
        wrapped += [r["ciphertext"] for r in results]
    now = datetime.now(UTC)
    stamp: Any = now.strftime("%Y-%m-%d %H:%M:%S.%f") if raw.is_sqlite else now
    users = [(u, stamp) for u in deks]
    keys = [(u, w.encode(), f"transit:transit/{bao.key}", stamp) for u, w in zip(deks, wrapped, strict=True)]
    sql = ["INSERT INTO users (id, created_at) VALUES (%s, %s)",
           "INSERT INTO user_keys (user_id, dek_version, wrapped_dek, kek_id, kek_version, status, created_at)"
           " VALUES (%s, 1, %s, %s, 1, 'active', %s)"]  # fmt: skip
    if raw.is_sqlite:
        with sqlite3.connect(raw.sqlite_path) as lite:
            lite.executemany(sql[0].replace("%s", "?"), users)
            lite.executemany(sql[1].replace("%s", "?"), keys)
    else:
        with psycopg.connect(raw.url.replace("postgresql+asyncpg://", "postgresql://")) as conn:
            conn.cursor().executemany(sql[0], users)
            conn.cursor().executemany(sql[1], keys)
    return deks


def _every_key_unwraps(raw: RawDb, bao: DurableBao, deks: dict[str, bytes]) -> None:
    """Each live row's kek_version is its ciphertext's version, and it unwraps to the DEK it was made for."""
    rows = raw.query("SELECT user_id, dek_version, wrapped_dek, kek_id, kek_version FROM user_keys")
    for _, _, blob, _, kek_version in rows:
        assert bytes(blob).startswith(f"vault:v{kek_version}:".encode())

    async def unwrap_all() -> None:
        kek = bao.provider(bao.key)
        try:
            for user_id, version, blob, kek_id, kek_version in rows:
                dek = await kek.unwrap(
                    WrappedKey(kek_id, kek_version, bytes(blob)), aad=dek_aad(user_id, version)
                )
                assert user_id not in deks or dek == deks[user_id], user_id
        finally:
            await kek.close()

    asyncio.run(unwrap_all())


def _rewrap_run(vault: LiveVault, *, until: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    for _ in range(1200):
        progress = _admin(vault, "GET", "/v1/keys/rewrap")
        assert progress.status_code == 200, progress.text
        state: dict[str, Any] = progress.json()
        if until(state):
            return state
        threading.Event().wait(0.02)
    raise AssertionError(f"the rewrap did not get there: {state}")


def test_rotate_and_rewrap_cut_by_an_outage_leave_every_key_whole(
    warm_a: tuple[LiveVault, dict[str, tuple[str, str]]], bao: DurableBao, raw: RawDb
) -> None:
    vault, users = warm_a
    deks = _bulk_keys(raw, bao, 400)
    total = len(deks) + len(users)

    bao.stop()
    _error(_admin(vault, "POST", "/v1/keys/rotate"), 503, "key_unavailable")
    _error(_admin(vault, "POST", "/v1/keys/rewrap", json={}), 503, "key_unavailable")
    during = _admin(vault, "GET", "/v1/keys/rewrap")  # progress stays readable: counted in the database
    assert during.status_code == 200 and during.json()["running"] is False, during.text
    bao.start()
    assert _admin(vault, "GET", "/v1/keys/rewrap").json()["batches"] == 0  # the refused POST started nothing
    status = _admin(vault, "GET", "/v1/keys").json()
    assert status["active_version"] == 1 and status["stale"] == 0  # the refused rotation did not happen

    rotated = _admin(vault, "POST", "/v1/keys/rotate")
    assert rotated.status_code == 200 and rotated.json()["stale"] == total, rotated.text
    assert _admin(vault, "POST", "/v1/keys/rewrap", json={"batch": 1}).status_code == 202
    _rewrap_run(vault, until=lambda s: s["rewrapped"] >= 5)
    bao.pause()  # mid-run, at once: the batch in flight times out before anything of it is stored
    try:
        progress, seconds = _timed(lambda: _admin(vault, "GET", "/v1/keys/rewrap"))
        assert progress.status_code == 200 and progress.json()["stale"] is not None, progress.text
        _show(f"hung KMS: rewrap progress answered in {seconds:.2f} s")
        threading.Event().wait(4.0)  # > (retries + 1) x timeout + backoff: the run's own call has failed
    finally:
        bao.resume()
    cut = _rewrap_run(vault, until=lambda s: not s["running"])
    _show(f"rewrap cut by the outage after {cut['rewrapped']} of {total} data keys: {cut}")
    assert cut["error"] == "key_unavailable", cut
    assert 0 < cut["rewrapped"] < total and cut["stale"] == total - cut["rewrapped"] and cut["failed"] == 0
    _every_key_unwraps(raw, bao, deks)

    assert _admin(vault, "POST", "/v1/keys/rewrap", json={}).status_code == 202  # resumes: runs again
    done = _rewrap_run(vault, until=lambda s: not s["running"])
    assert done["error"] is None and done["stale"] == 0 and done["rewrapped"] == total - cut["rewrapped"]
    assert raw.query("SELECT DISTINCT kek_version FROM user_keys") == [(2,)]
    _every_key_unwraps(raw, bao, deks)
    signer = Signer(vault)
    for user_id, session in users.values():
        _lease_and_release(signer, user_id, session)
