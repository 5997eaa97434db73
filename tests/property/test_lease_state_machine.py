"""Hypothesis state machine: grant / renew / release / write-back / expiry against a real database.

The model is a dictionary; the system is the lease service on PostgreSQL or SQLite with the database
clock replaced by a controllable one (``Store(clock_us=...)``), so expiry happens when the test says.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import select

from tests.sessiongen import make_session, refresh_session
from vault.audit import AuditKeys
from vault.errors import Forbidden, LeaseHeld, LeaseLost
from vault.keys import DekCache, LocalKeyringProvider
from vault.service import Auditor, Context, LeaseService, Principal, Role, ingest
from vault.store import Lease, Store

pytestmark = (
    pytest.mark.slow
)  # a Hypothesis state machine on both backends: `scripts/test.sh -m "not slow"` skips it

_LEASES: Any = Lease.__table__

HOLDERS = {
    name: Principal(token_id=name * 16, name=name, role=Role.SIGNER, purposes=None, max_ttl_seconds=None)
    for name in ("a", "b")
}
_seeds = itertools.count(1000)


@dataclass
class ModelLease:
    lease_id: str
    fence: int
    holder: str
    ttl: int
    expires_us: int
    ended: bool = False


def _machine(db_url: str, keyring: Path) -> type[RuleBasedStateMachine]:
    class Leases(RuleBasedStateMachine):
        leases = Bundle("leases")

        def __init__(self) -> None:
            super().__init__()
            self.loop = asyncio.new_event_loop()
            self.now_us = int(time.time() * 1_000_000)
            self.store = Store.connect(db_url, pool_size=2, clock_us=lambda: self.now_us)
            self.kek = LocalKeyringProvider.from_file(keyring)
            self.auditor = Auditor(AuditKeys.generate())
            self.service = LeaseService(
                store=self.store,
                kek=self.kek,
                cache=DekCache(ttl=60, max_entries=10),
                auditor=self.auditor,
                max_ttl=300,
            )
            self.by_id: dict[str, ModelLease] = {}
            self.last_fence = 0
            self.content = ""

        def run(self, coro: Any) -> Any:
            return self.loop.run_until_complete(coro)

        def teardown(self) -> None:
            self.run(self.store.close())
            self.loop.close()

        def open_lease(self) -> ModelLease | None:
            return next((m for m in self.by_id.values() if not m.ended), None)

        @initialize()
        def ingest_a_session(self) -> None:
            seed = next(_seeds)
            self.content, body = make_session(seed)
            self.user_id = body["userId"]
            result = self.run(
                ingest(
                    self.store,
                    self.kek,
                    DekCache(ttl=0, max_entries=0),
                    self.auditor,
                    Context(),
                    self.content,
                    now=datetime.now(UTC),
                )
            )
            self.session_id = result.session_id
            self.refreshed = iter(refresh_session(body, seed * 1000 + i)[0] for i in range(10**6))

        @rule(target=leases, holder=st.sampled_from(["a", "b"]), ttl=st.integers(1, 30))
        def grant(self, holder: str, ttl: int) -> ModelLease | None:
            ctx = Context(principal=HOLDERS[holder])
            current = self.open_lease()
            if current is not None and current.expires_us > self.now_us:
                try:
                    self.run(
                        self.service.grant(ctx, purpose="p", ttl_seconds=ttl, session_id=self.session_id)
                    )
                except LeaseHeld as exc:
                    assert exc.retry_after == max(1, -(-(current.expires_us - self.now_us) // 1_000_000))
                    return None
                raise AssertionError("granted while another lease was live")
            grant = self.run(
                self.service.grant(ctx, purpose="p", ttl_seconds=ttl, session_id=self.session_id)
            )
            assert grant.fencing_token == self.last_fence + 1
            assert grant.session == self.content
            if current is not None:
                current.ended = True  # taken over
            self.last_fence = grant.fencing_token
            lease = ModelLease(
                grant.lease_id, grant.fencing_token, holder, ttl, self.now_us + ttl * 1_000_000
            )
            self.by_id[lease.lease_id] = lease
            return lease

        def expected_error(self, lease: ModelLease, holder: str, fence: int) -> type[Exception] | None:
            if holder != lease.holder:
                return Forbidden
            if lease.ended or lease.expires_us <= self.now_us or fence != lease.fence:
                return LeaseLost
            return None

        @rule(lease=leases, holder=st.sampled_from(["a", "b"]), stale=st.booleans())
        def renew(self, lease: ModelLease | None, holder: str, stale: bool) -> None:
            if lease is None:
                return
            fence = lease.fence - 1 if stale else lease.fence
            expected = self.expected_error(lease, holder, fence)
            ctx = Context(principal=HOLDERS[holder])
            try:
                renewal = self.run(self.service.renew(ctx, lease.lease_id, fencing_token=fence))
            except (Forbidden, LeaseLost) as exc:
                assert type(exc) is expected, (type(exc), expected)
                return
            assert expected is None
            lease.expires_us = self.now_us + lease.ttl * 1_000_000
            assert abs(renewal.expires_at.timestamp() * 1_000_000 - lease.expires_us) < 2

        @rule(lease=leases, holder=st.sampled_from(["a", "b"]), write_back=st.booleans())
        def release(self, lease: ModelLease | None, holder: str, write_back: bool) -> None:
            if lease is None:
                return
            expected = self.expected_error(lease, holder, lease.fence)
            refreshed = next(self.refreshed) if write_back else None
            ctx = Context(principal=HOLDERS[holder])
            try:
                self.run(
                    self.service.release(ctx, lease.lease_id, fencing_token=lease.fence, session=refreshed)
                )
            except (Forbidden, LeaseLost) as exc:
                assert type(exc) is expected, (type(exc), expected)
                return
            assert expected is None
            lease.ended = True
            if refreshed is not None:
                self.content = refreshed

        @rule(seconds=st.integers(0, 40), micros=st.integers(0, 999_999))
        def advance_clock(self, seconds: int, micros: int) -> None:
            self.now_us += seconds * 1_000_000 + micros

        @invariant()
        def database_agrees_with_the_model(self) -> None:
            async def rows() -> list[Any]:
                async with self.store.transaction() as tx:
                    rows = await tx.fetch_query(
                        select(
                            _LEASES.c.id, _LEASES.c.fencing_token, _LEASES.c.expires_us, _LEASES.c.ended_us
                        ).order_by(_LEASES.c.fencing_token)
                    )
                    return [tuple(r.values()) for r in rows]

            if not hasattr(self, "session_id"):
                return
            db = [r for r in self.run(rows()) if r[0] in self.by_id]
            assert [r[1] for r in db] == sorted(m.fence for m in self.by_id.values())
            assert sum(1 for r in db if r[3] is None) <= 1, "two open leases"
            for lease_id, fence, expires_us, ended_us in db:
                model = self.by_id[lease_id]
                assert fence == model.fence and expires_us == model.expires_us
                assert (ended_us is not None) == model.ended

    return Leases


def test_lease_state_machine(db_url: str, keyring_file: Path) -> None:
    machine = _machine(db_url, keyring_file)
    run_state_machine_as_test(
        machine, settings=hsettings(max_examples=25, stateful_step_count=30, deadline=None)
    )
