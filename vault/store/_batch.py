"""Batched lease decisions (mixed into :class:`~vault.store.Tx`): many grants, or many releases, in one
transaction.

The rules are those of :mod:`vault.store._leases`, per request, in a fixed order: every request is
peeked first (without a lock: a refusal on what the peek saw never queues on a row lock), then the
requests are taken in session-id order (the lock order of every batch, so two batches cannot deadlock on
session rows), each locking its session row, reading the clock after the lock and deciding. Two
requests of one batch for the same session are decided one after the other: the second finds the
first's lease. Each request's writes run in a savepoint (a subtransaction): if they fail, only they are
undone and the request's decision is ``error``.

- **PostgreSQL**: one call of ``vault_grant_batch`` / ``vault_release_batch`` (migrations 0005, 0006), one
  round trip for the whole batch. A batch never waits for a row lock another transaction holds: that request
  comes back ``busy`` and the service runs it again alone, waiting (``wait=True``).
- **SQLite**: the same steps here, statement by statement, on the process's one connection (no round
  trips: SQLite runs in process).

The audit events are not written here: the service writes them in the same transaction, since their
MAC needs the vault's key.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from vault.errors import StoreUnavailable
from vault.store._exec import translated
from vault.store._leases import LeaseQueries
from vault.store._rows import (
    GrantDecision,
    GrantRequest,
    LockedLease,
    LockedSession,
    ReleaseDecision,
    ReleaseRequest,
    SessionPeek,
)

__all__ = ["BatchQueries", "holder_refusal", "lease_refusal"]

log = logging.getLogger("vault.store")

_GRANT_SQL = (
    "SELECT * FROM vault_grant_batch($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],"
    " $6::integer[], $7::boolean[], $8::bigint, $9::boolean) ORDER BY o_item"
)
_RELEASE_SQL = (
    "SELECT * FROM vault_release_batch($1::text[], $2::text[], $3::bigint[], $4::bigint, $5::boolean)"
    " ORDER BY o_item"
)


def lease_refusal(
    status: str, expires_at_us: float | None, lease_expires_us: int | None, now_us: int
) -> str | None:
    """Why a lease may not be granted now (``vault_lease_refusal`` in SQL), or None."""
    if status in ("revoked", "superseded", "shredded"):
        return status
    if expires_at_us is not None and expires_at_us <= now_us:
        return "expired"
    if lease_expires_us is not None and lease_expires_us > now_us:
        return "held"
    return None


def holder_refusal(state: LockedLease, holder_token_id: str, fencing_token: int) -> str | None:
    """Why ``holder_token_id`` may not renew or release this lease now (as in ``vault_release_batch``):
    ``not_holder``, ``shredded`` or ``lost`` (ended, expired, or an older fencing token), or None."""
    lease = state.lease
    if lease.holder_token_id != holder_token_id:
        return "not_holder"
    if lease.end_reason == "shredded":
        return "shredded"
    if lease.ended_us is not None or lease.expires_us <= state.now_us or lease.fencing_token != fencing_token:
        return "lost"
    return None


def _retry_after(lease_expires_us: int | None, now_us: int) -> int | None:
    return None if lease_expires_us is None else -(-(lease_expires_us - now_us) // 1_000_000)


def _expiry_us(row: SessionPeek | LockedSession) -> float | None:
    return None if row.expires_at is None else row.expires_at.timestamp() * 1_000_000


def _session_order(peek: SessionPeek | None, index: int) -> tuple[str, int]:
    """Requests without a session first, then by session id (as ``ORDER BY id NULLS FIRST``)."""
    return ("" if peek is None else "~" + peek.id, index)


def _unpack(row: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    return {name: row["o_" + name] for name in names}


_GRANT_FIELDS = [f for f in GrantDecision.__dataclass_fields__]
_RELEASE_FIELDS = [f for f in ReleaseDecision.__dataclass_fields__]


class BatchQueries(LeaseQueries):
    async def grant_batch(
        self, requests: Sequence[GrantRequest], *, wait: bool = False
    ) -> list[GrantDecision]:
        """Decide every request (in the order given back: one decision per request). Without ``wait``, a
        request whose session row another transaction holds locked is not waited for: its decision is
        ``busy`` (PostgreSQL; SQLite's one write lock, held already, leaves no row locked elsewhere)."""
        if self._pg is not None:
            now = None if self._clock_us is None else self._clock_us()
            with translated():
                rows = await self._pg.fetch(
                    _GRANT_SQL,
                    [r.session_id for r in requests], [r.user_id for r in requests],
                    [r.lease_id for r in requests], [r.holder_token_id for r in requests],
                    [r.purpose for r in requests], [r.ttl_seconds for r in requests],
                    [r.allow_wallet_changes for r in requests], now, wait,
                )  # fmt: skip
            decisions = [GrantDecision(**_unpack(row, _GRANT_FIELDS)) for row in rows]
        else:
            decisions = await self._grant_each(requests)
        for decision in decisions:
            if decision.outcome == "error":
                log.warning("a batched grant failed: sqlstate %s", decision.sqlstate)
        return decisions

    async def _grant_each(self, requests: Sequence[GrantRequest]) -> list[GrantDecision]:
        peeks = [await self.peek_session(session_id=r.session_id, user_id=r.user_id) for r in requests]
        out: list[GrantDecision | None] = [None] * len(requests)
        for i in sorted(range(len(requests)), key=lambda i: _session_order(peeks[i], i)):
            request, peek = requests[i], peeks[i]
            if peek is None:
                out[i] = GrantDecision("no_session", session_id=request.session_id, user_id=request.user_id)
                continue
            why = lease_refusal(peek.status, _expiry_us(peek), peek.lease_expires_us, peek.now_us)
            if why is not None:
                out[i] = GrantDecision(
                    why, peek.now_us, peek.id, peek.user_id,
                    retry_after=_retry_after(peek.lease_expires_us, peek.now_us),
                )  # fmt: skip
                continue
            try:
                async with self.savepoint():
                    out[i] = await self._grant_one(request, peek.id)
            except StoreUnavailable:
                out[i] = GrantDecision("error", session_id=peek.id, sqlstate="sqlite")
        return [d for d in out if d is not None]

    async def _grant_one(self, request: GrantRequest, session_id: str) -> GrantDecision:
        found = await self.lock_session(session_id)
        assert found is not None  # sessions are never deleted
        locked, current = found
        now = locked.now_us
        why = lease_refusal(
            locked.status, _expiry_us(locked), None if current is None else current.expires_us, now
        )
        if why is not None:
            return GrantDecision(
                why, now, locked.id, locked.user_id,
                retry_after=_retry_after(None if current is None else current.expires_us, now),
            )  # fmt: skip
        if current is not None:
            await self.end_lease(current.id, now_us=now, reason="expired")
        fence = await self.insert_lease(
            lease_id=request.lease_id, session=locked, holder_token_id=request.holder_token_id,
            purpose=request.purpose, ttl_seconds=request.ttl_seconds,
            allow_wallet_changes=request.allow_wallet_changes,
        )  # fmt: skip
        return GrantDecision(
            "granted", now, locked.id, locked.user_id, session_version=locked.version,
            dek_version=locked.dek_version, ciphertext=locked.ciphertext, fencing_token=fence,
            ended_lease_id=None if current is None else current.id,
            ended_fence=None if current is None else current.fencing_token,
        )  # fmt: skip

    async def release_batch(
        self, requests: Sequence[ReleaseRequest], *, wait: bool = False
    ) -> list[ReleaseDecision]:
        """End every lease whose holder and fencing token match (in the order given back); ``busy`` as for
        :meth:`grant_batch`."""
        if self._pg is not None:
            now = None if self._clock_us is None else self._clock_us()
            with translated():
                rows = await self._pg.fetch(
                    _RELEASE_SQL, [r.lease_id for r in requests], [r.holder_token_id for r in requests],
                    [r.fencing_token for r in requests], now, wait,
                )  # fmt: skip
            decisions = [ReleaseDecision(**_unpack(row, _RELEASE_FIELDS)) for row in rows]
        else:
            decisions = await self._release_each(requests)
        for decision in decisions:
            if decision.outcome == "error":
                log.warning("a batched release failed: sqlstate %s", decision.sqlstate)
        return decisions

    async def _release_each(self, requests: Sequence[ReleaseRequest]) -> list[ReleaseDecision]:
        out: list[ReleaseDecision | None] = [None] * len(requests)
        for i, request in enumerate(requests):  # SQLite's one write lock: no lock order to keep
            try:
                async with self.savepoint():
                    out[i] = await self._release_one(request)
            except StoreUnavailable:
                out[i] = ReleaseDecision("error", sqlstate="sqlite")
        return [d for d in out if d is not None]

    async def _release_one(self, request: ReleaseRequest) -> ReleaseDecision:
        state = await self.lock_lease(request.lease_id)
        if state is None:
            return ReleaseDecision("no_lease")
        lease, now = state.lease, state.now_us
        outcome = holder_refusal(state, request.holder_token_id, request.fencing_token) or "released"
        if outcome == "released":
            await self.end_lease(lease.id, now_us=now, reason="released")
        return ReleaseDecision(
            outcome, now, lease.session_id, lease.user_id, lease.fencing_token, lease.purpose
        )
