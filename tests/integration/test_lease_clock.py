"""Lease times are read after the session's row lock is held, never when the wait for it began.

A transaction holds the lock (PostgreSQL: ``SELECT ... FOR UPDATE`` on the session row; SQLite: the
database write lock) while a grant or a renewal queues behind it. Read in the locking statement itself,
PostgreSQL's clock is the moment the wait began: a grant that waited longer than its TTL was born
expired (and the next grant could land beside its holder), a renewal came back already past.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import httpx
import psycopg

from tests._db import RawDb
from tests._live import LiveVault
from tests.sessiongen import make_session

HOLD = 2.5  # seconds the row lock is held
TTL = 30  # long, so no "still held" below can flake; dated from the wait's start, a lease came HOLD s short


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _ingest(vault: LiveVault, seed: int) -> tuple[str, str]:
    session, body = make_session(seed)
    answer = httpx.post(f"{vault.public}/api/import-session", json={"session": session})
    assert answer.status_code == 201, answer.text
    return body["userId"], answer.json()["session_id"]


@contextmanager
def _row_locked(raw: RawDb, session_id: str) -> Iterator[None]:
    """Hold the session's row lock (SQLite: the write lock) for the block, then let go."""
    if raw.is_sqlite:
        conn = sqlite3.connect(raw.sqlite_path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    with psycopg.connect(raw.url.replace("postgresql+asyncpg://", "postgresql://")) as pg:
        pg.execute("SELECT id FROM sessions WHERE id = %s FOR UPDATE", [session_id])
        yield
        pg.rollback()


def _post_behind_the_lock(raw: RawDb, session_id: str, url: str, body: dict[str, Any], token: str) -> Any:
    """POST while the row is locked for HOLD seconds; return (answer, the moment the lock was let go)."""
    answers: list[httpx.Response] = []
    with _row_locked(raw, session_id):
        thread = threading.Thread(
            target=lambda: answers.append(httpx.post(url, json=body, headers=_auth(token), timeout=60))
        )
        thread.start()
        time.sleep(HOLD)  # waits on the database's clock on purpose: the request queues behind the lock
        released = time.time()
    thread.join(60)
    return answers[0], released


def _expires(answer: httpx.Response) -> float:
    return datetime.fromisoformat(answer.json()["expires_at"]).timestamp()


def test_a_grant_that_waited_for_the_lock_is_dated_after_the_wait(vault: LiveVault, raw: RawDb) -> None:
    user_id, session_id = _ingest(vault, 401)
    signer = vault.token("signer")
    url = f"{vault.internal}/v1/sessions/{session_id}/lease"
    answer, released = _post_behind_the_lock(
        raw, session_id, url, {"purpose": "sign", "ttl_seconds": TTL}, signer
    )
    arrived = time.time()
    assert answer.status_code == 201, answer.text
    assert _expires(answer) > arrived  # not born expired (with the clock read too early, a 2 s lease was)
    assert _expires(answer) >= released + TTL - 0.25  # was: the moment the wait began + TTL
    granted_us = raw.query("SELECT granted_us FROM leases WHERE id = %s", [answer.json()["lease_id"]])[0][0]
    assert granted_us >= (released - 0.25) * 1_000_000
    # And nobody else gets the session while the new holder still has it.
    other = vault.token("signer")
    second = httpx.post(
        f"{vault.internal}/v1/users/{user_id}/lease", json={"purpose": "sign"}, headers=_auth(other)
    )
    assert second.status_code == 409 and second.json()["error"] == "lease_held", second.text


def test_a_renewal_that_waited_for_the_lock_counts_from_after_the_wait(vault: LiveVault, raw: RawDb) -> None:
    _, session_id = _ingest(vault, 402)
    signer = vault.token("signer")
    granted = httpx.post(
        f"{vault.internal}/v1/sessions/{session_id}/lease", json={"purpose": "sign", "ttl_seconds": TTL},
        headers=_auth(signer),
    ).json()  # fmt: skip
    url = f"{vault.internal}/v1/leases/{granted['lease_id']}/renew"
    answer, released = _post_behind_the_lock(
        raw, session_id, url, {"fencing_token": granted["fencing_token"]}, signer
    )
    assert answer.status_code == 200, answer.text
    assert _expires(answer) >= released + TTL - 0.25  # was: the moment the wait began + TTL


def test_a_lease_that_expired_during_the_wait_is_not_renewed(vault: LiveVault, raw: RawDb) -> None:
    _, session_id = _ingest(vault, 403)
    signer = vault.token("signer")
    granted = httpx.post(
        f"{vault.internal}/v1/sessions/{session_id}/lease", json={"purpose": "sign", "ttl_seconds": 1},
        headers=_auth(signer),
    ).json()  # fmt: skip
    url = f"{vault.internal}/v1/leases/{granted['lease_id']}/renew"
    answer, _ = _post_behind_the_lock(
        raw, session_id, url, {"fencing_token": granted["fencing_token"]}, signer
    )
    # The 1 s lease expired while the renewal waited HOLD s for the lock (the database's clock, on purpose).
    # Was: 200 with an expiry already in the past (the lease looked alive at the moment the wait began).
    assert answer.status_code == 409 and answer.json()["error"] == "lease_lost", answer.text
