"""Group commit of grants and releases, on both backends: requests that arrive together share one transaction,
and each still gets its own lock, fencing token, lease row and audit event; one request's failure (a row
refused behind the vault's back, a ciphertext that does not open) fails that request only; a failed audit
append fails the whole batch and releases nothing; two batches locking the same sessions in opposite
request orders do not deadlock (PostgreSQL)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
import pytest

from tests._db import RawDb
from tests.sessiongen import make_session
from vault.audit import AuditKeys
from vault.crypto import Keyring
from vault.errors import AuditUnavailable, DecryptionError, LeaseHeld, LeaseLost, StoreUnavailable
from vault.keys import DekCache, LocalKeyringProvider
from vault.service import Auditor, Context, LeaseService, Principal, Role, ingest
from vault.service._keys import KeyNeeded, Keys, resolve_key
from vault.store import Store

SIGNER = Principal(token_id="5" * 16, name="signer", role=Role.SIGNER, purposes=None, max_ttl_seconds=None)
CTX = Context(principal=SIGNER, request_id="batch", source="127.0.0.1")


@dataclass
class World:
    store: Store
    kek: LocalKeyringProvider
    cache: DekCache
    auditor: Auditor
    leases: LeaseService

    async def ingest(self, seed: int) -> str:
        """Ingest a new user's session and put the user's data key in the DEK cache (as a first grant
        would), so that the batches under test are not the ones that miss the cache."""
        session, body = make_session(seed)
        await ingest(
            self.store, self.kek, self.cache, self.auditor, Context(), session, now=datetime.now(UTC)
        )
        user = str(body["userId"])
        await resolve_key(self.store, Keys(self.cache, self.kek), KeyNeeded(user, 1))
        return user

    def service(self) -> LeaseService:
        """Another lease service (another "process") on the same database and keys."""
        return LeaseService(
            store=self.store, kek=self.kek, cache=self.cache, auditor=self.auditor, max_ttl=300
        )


@asynccontextmanager
async def _world(url: str) -> AsyncIterator[World]:
    store = Store.connect(url, pool_size=4)
    kek = LocalKeyringProvider(Keyring.generate())
    cache = DekCache(ttl=60, max_entries=1000)
    auditor = Auditor(AuditKeys.generate())
    leases = LeaseService(store=store, kek=kek, cache=cache, auditor=auditor, max_ttl=300)
    try:
        yield World(store, kek, cache, auditor, leases)
    finally:
        await store.close()


def _session_of(raw: RawDb, user: str) -> str:
    return str(raw.query("SELECT id FROM sessions WHERE user_id = %s", [user])[0][0])


def test_grants_that_arrive_together_share_one_transaction(db_url: str, raw: RawDb) -> None:
    async def run() -> None:
        async with _world(db_url) as w:
            users = [await w.ingest(700 + i) for i in range(8)]
            grants = await asyncio.gather(*(w.leases.grant(CTX, purpose="sign", user_id=u) for u in users))
            assert [g.user_id for g in grants] == users
            assert all(g.fencing_token == 1 for g in grants)
            assert len({g.lease_id for g in grants}) == 8
            assert w.leases._grants.stats.batches == 1 and w.leases._grants.stats.largest == 8
            await asyncio.gather(
                *(w.leases.release(CTX, g.lease_id, fencing_token=g.fencing_token) for g in grants)
            )
            assert w.leases._releases.stats.batches == 1

    asyncio.run(run())
    events = raw.query(
        "SELECT action, outcome, lease_id FROM audit_events WHERE substr(action, 1, 6) = 'lease.'"
    )
    assert sorted((a, o) for a, o, _ in events) == [("lease.grant", "ok")] * 8 + [("lease.release", "ok")] * 8
    leases = raw.query("SELECT id, ended_us, end_reason FROM leases")
    assert len(leases) == 8 and all(reason == "released" and ended for _, ended, reason in leases)
    assert {lease_id for *_, lease_id in events} == {row[0] for row in leases}
    if not raw.is_sqlite:  # the database's own word: the eight grant events were written by one transaction
        # (lease rows are written in per-request subtransactions, each with an xid of its own)
        for action in ("lease.grant", "lease.release"):
            xids = raw.query("SELECT DISTINCT xmin FROM audit_events WHERE action = %s", [action])
            assert len(xids) == 1


def test_two_requests_for_one_session_in_one_batch_get_one_lease(db_url: str, raw: RawDb) -> None:
    async def run() -> None:
        async with _world(db_url) as w:
            user = await w.ingest(720)
            session_id = _session_of(raw, user)
            results = await asyncio.gather(
                w.leases.grant(CTX, purpose="a", user_id=user),
                w.leases.grant(CTX, purpose="b", session_id=session_id),
                return_exceptions=True,
            )
            assert w.leases._grants.stats.batches == 1
            granted = [r for r in results if not isinstance(r, BaseException)]
            held = [r for r in results if isinstance(r, LeaseHeld)]
            assert len(granted) == 1 and len(held) == 1 and held[0].retry_after >= 1
            lease = granted[0]
            twice = await asyncio.gather(
                w.leases.release(CTX, lease.lease_id, fencing_token=lease.fencing_token),
                w.leases.release(CTX, lease.lease_id, fencing_token=lease.fencing_token),
                return_exceptions=True,
            )
            assert twice[0] is None and isinstance(twice[1], LeaseLost)

    asyncio.run(run())
    outcomes = raw.query(
        "SELECT action, outcome, detail FROM audit_events WHERE substr(action, 1, 6) = 'lease.' ORDER BY id"
    )
    assert sorted(outcomes) == sorted(
        [("lease.grant", "ok", None), ("lease.grant", "denied", "lease_held"),
         ("lease.release", "ok", None), ("lease.release", "denied", "lease_lost")]
    )  # fmt: skip


def _refuse_leases_of(raw: RawDb, session_id: str) -> None:
    """Behind the vault's back (as the tables' owner): a trigger that refuses any lease of one session."""
    if raw.is_sqlite:
        raw.execute(
            f"CREATE TRIGGER refuse_one BEFORE INSERT ON leases WHEN NEW.session_id = '{session_id}' "
            "BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
        return
    raw.execute(
        "CREATE FUNCTION refuse_one() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "RAISE EXCEPTION 'refused'; END $$"
    )
    raw.execute(
        "CREATE TRIGGER refuse_one BEFORE INSERT ON leases FOR EACH ROW "
        f"WHEN (NEW.session_id = '{session_id}') EXECUTE FUNCTION refuse_one()"
    )


def test_one_requests_failure_fails_that_request_only(db_url: str, raw: RawDb) -> None:
    async def run() -> None:
        async with _world(db_url) as w:
            users = [await w.ingest(730 + i) for i in range(4)]
            _refuse_leases_of(raw, _session_of(raw, users[1]))
            results = await asyncio.gather(
                *(w.leases.grant(CTX, purpose="sign", user_id=u) for u in users), return_exceptions=True
            )
            assert w.leases._grants.stats.batches == 1
            assert isinstance(results[1], StoreUnavailable)
            assert [r.user_id for i, r in enumerate(results) if i != 1] == [users[0], users[2], users[3]]  # type: ignore[union-attr]

    asyncio.run(run())
    leases = raw.query("SELECT user_id FROM leases")
    assert len(leases) == 3
    failed = raw.query("SELECT outcome, detail, user_id FROM audit_events WHERE outcome = 'error'")
    assert len(failed) == 1 and failed[0][1] == "store_unavailable"


def test_a_session_that_does_not_decrypt_fails_alone_and_keeps_no_lease(db_url: str, raw: RawDb) -> None:
    async def run() -> None:
        async with _world(db_url) as w:
            users = [await w.ingest(740 + i) for i in range(3)]
            # an insider swaps one user's ciphertext for another user's: it cannot open under that user's AAD
            victim, donor = _session_of(raw, users[0]), _session_of(raw, users[2])
            raw.execute(
                "UPDATE sessions SET ciphertext = (SELECT ciphertext FROM sessions WHERE id = %s) WHERE id = %s",
                [donor, victim],
            )
            results = await asyncio.gather(
                *(w.leases.grant(CTX, purpose="sign", user_id=u) for u in users), return_exceptions=True
            )
            assert isinstance(results[0], DecryptionError)
            assert [r.user_id for r in results[1:]] == users[1:]  # type: ignore[union-attr]

    asyncio.run(run())
    assert len(raw.query("SELECT user_id FROM leases")) == 2  # none for the session that did not open
    errors = raw.query("SELECT detail FROM audit_events WHERE action = 'lease.grant' AND outcome = 'error'")
    assert errors == [("decryption_failed",)]


def test_an_audit_append_that_fails_releases_nothing_of_the_batch(db_url: str, raw: RawDb) -> None:
    async def run() -> None:
        async with _world(db_url) as w:
            users = [await w.ingest(750 + i) for i in range(4)]
            if raw.is_sqlite:
                raw.execute(
                    "CREATE TRIGGER refuse_grants BEFORE INSERT ON audit_events WHEN NEW.action = 'lease.grant' "
                    "BEGIN SELECT RAISE(ABORT, 'refused'); END"
                )
            else:
                raw.execute(
                    "CREATE FUNCTION refuse_grants() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                    "RAISE EXCEPTION 'refused'; END $$"
                )
                raw.execute(
                    "CREATE TRIGGER refuse_grants BEFORE INSERT ON audit_events FOR EACH ROW "
                    "WHEN (NEW.action = 'lease.grant') EXECUTE FUNCTION refuse_grants()"
                )
            results = await asyncio.gather(
                *(w.leases.grant(CTX, purpose="sign", user_id=u) for u in users), return_exceptions=True
            )
            assert all(isinstance(r, AuditUnavailable) for r in results), results

    asyncio.run(run())
    assert raw.query("SELECT count(*) FROM leases") == [(0,)]


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_batches_locking_the_same_sessions_in_opposite_orders_do_not_deadlock(
    db_url: str, raw: RawDb
) -> None:
    """Two lease services (each with its own batchers, as two processes have) grant the same eight sessions at
    once, one in ascending and one in descending request order, twenty times: every session goes to exactly one of them,
    and no request fails (a deadlock would be a 503 after PostgreSQL's deadlock timeout)."""

    async def run() -> None:
        async with _world(db_url) as w:
            users = [await w.ingest(760 + i) for i in range(8)]
            sessions = [_session_of(raw, u) for u in users]
            a, b = w.service(), w.service()
            for _ in range(20):
                results = await asyncio.gather(
                    *(a.grant(CTX, purpose="a", ttl_seconds=60, session_id=s) for s in sessions),
                    *(b.grant(CTX, purpose="b", ttl_seconds=60, session_id=s) for s in reversed(sessions)),
                    return_exceptions=True,
                )
                granted = [r for r in results if not isinstance(r, BaseException)]
                refused = [r for r in results if isinstance(r, BaseException)]
                assert all(isinstance(r, LeaseHeld) for r in refused), refused
                assert sorted(g.session_id for g in granted) == sorted(sessions)
                for g in granted:
                    await a.release(CTX, g.lease_id, fencing_token=g.fencing_token)

    asyncio.run(run())
    tokens = raw.query("SELECT session_id, max(fencing_token), count(*) FROM leases GROUP BY session_id")
    assert all(top == 20 and n == 20 for _, top, n in tokens)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_row_lock_held_elsewhere_stalls_only_the_requests_for_that_session(db_url: str, raw: RawDb) -> None:
    """Another transaction (a write-back, a key rotation, or the vault's own role by hand) holds one session's row
    lock for seconds: the grant of that session waits for it, and no other grant or release of the process
    waits behind that one (a batch never waits on a row lock; the request that would is retried alone)."""

    async def run() -> None:
        async with _world(db_url) as w:
            users = [await w.ingest(780 + i) for i in range(3)]
            held = await w.leases.grant(CTX, purpose="sign", user_id=users[2])
            with psycopg.connect(raw.url.replace("postgresql+asyncpg://", "postgresql://")) as other:
                for user in (users[0], users[2]):
                    other.execute("SELECT 1 FROM sessions WHERE id = %s FOR UPDATE", [_session_of(raw, user)])
                waiting = asyncio.create_task(
                    w.leases.grant(CTX, purpose="sign", ttl_seconds=10, user_id=users[0])
                )
                releasing = asyncio.create_task(
                    w.leases.release(CTX, held.lease_id, fencing_token=held.fencing_token)
                )
                await asyncio.sleep(0.5)
                assert not waiting.done() and not releasing.done()
                # Before: the process's one grant (and release) batch waited on those locks, and everything
                # queued behind it.
                free = await asyncio.wait_for(w.leases.grant(CTX, purpose="sign", user_id=users[1]), 5)
                await asyncio.wait_for(
                    w.leases.release(CTX, free.lease_id, fencing_token=free.fencing_token), 5
                )
                assert not waiting.done() and not releasing.done()
                released_at = time.time()
                other.rollback()
            await asyncio.wait_for(releasing, 10)
            late = await asyncio.wait_for(waiting, 10)
            assert late.user_id == users[0]
            assert late.expires_at.timestamp() >= released_at + 10 - 0.5  # dated after the wait, not before

    asyncio.run(run())


def test_a_fencing_token_at_the_columns_limit_fails_that_grant_only(db_url: str, raw: RawDb) -> None:
    """The vault's database role inserts an ended lease whose fencing token is the largest BIGINT: the next grant
    of that session cannot be fenced (max + 1 overflows). That grant fails (503, audited as an error), with no
    lease; the grants batched with it go through."""

    async def run() -> None:
        async with _world(db_url) as w:
            users = [await w.ingest(790 + i) for i in range(3)]
            poisoned = _session_of(raw, users[1])
            raw.execute(
                "INSERT INTO leases (id, session_id, user_id, session_version, fencing_token, holder_token_id,"
                " purpose, ttl_seconds, granted_us, expires_us, ended_us, end_reason, allow_wallet_changes)"
                " VALUES (%s, %s, %s, 1, %s, 'x', 'p', 1, 1, 2, 2, 'released', false)",
                ["00000000-0000-4000-8000-000000000001", poisoned, users[1], 2**63 - 1],
            )
            results = await asyncio.gather(
                *(w.leases.grant(CTX, purpose="sign", user_id=u) for u in users), return_exceptions=True
            )
            assert isinstance(results[1], StoreUnavailable), results[1]
            assert [r.user_id for r in (results[0], results[2])] == [users[0], users[2]]  # type: ignore[union-attr]

    asyncio.run(run())
    assert raw.query("SELECT count(*) FROM leases WHERE fencing_token < 10") == [
        (2,)
    ]  # the two others' leases
    errors = raw.query("SELECT detail FROM audit_events WHERE action = 'lease.grant' AND outcome = 'error'")
    assert errors == [("store_unavailable",)]
