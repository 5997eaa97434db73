"""Lease queries (mixed into :class:`~vault.store.Tx`).

Exclusivity is the database's: the session row is locked (``SELECT ... FOR UPDATE`` on PostgreSQL; the
``BEGIN IMMEDIATE`` write lock on SQLite) for every lease decision, a partial unique index allows one open
lease per session, and fencing tokens are ``max + 1`` under that lock with ``(session_id,
fencing_token)`` unique. Lease times are microseconds on the database's clock, read in the same statement
that takes the lock, so replicas' clocks never matter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, and_, func, insert, literal, literal_column, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from vault.store._models import Lease, SessionRecord
from vault.store._rows import LeaseRow, LockedLease, LockedSession, SessionPeek

__all__ = ["LeaseQueries"]

_S = SessionRecord.__table__
_L = Lease.__table__

_NOW_SQL = {
    "postgresql": "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)",
    "sqlite": "CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)",
}


class LeaseQueries:
    conn: AsyncConnection
    _dialect: str
    _clock_us: Callable[[], int] | None

    def _now(self) -> ColumnElement[Any]:
        """The database's clock in microseconds, or the test clock when one is set."""
        if self._clock_us is not None:
            return literal(self._clock_us(), BigInteger)
        return literal_column(_NOW_SQL[self._dialect], BigInteger)

    def _now_col(self) -> ColumnElement[Any]:
        return self._now().label("now_us")

    async def peek_session(
        self, *, session_id: str | None = None, user_id: str | None = None
    ) -> SessionPeek | None:
        """Read, without locking, a session by id or the user's active (else newest) session, with the
        expiry of its open lease, if any. A grant decides "held" from this alone, so refusals never
        queue on the row lock that acquirers and releasers need; "free" is re-checked under the lock."""
        open_lease = and_(_L.c.session_id == _S.c.id, _L.c.ended_us.is_(None))
        query = select(
            _S.c.id, _S.c.user_id, _S.c.status, _S.c.expires_at, _L.c.expires_us.label("lease_expires_us"),
            self._now_col(),
        ).select_from(_S.outerjoin(_L, open_lease))  # fmt: skip
        if session_id is not None:
            query = query.where(_S.c.id == session_id)
        else:
            query = (
                query.where(_S.c.user_id == user_id)
                .order_by((_S.c.status == "active").desc(), _S.c.created_at.desc())
                .limit(1)
            )
        row = (await self.conn.execute(query)).mappings().first()
        return None if row is None else SessionPeek(**row)

    async def lock_session(self, session_id: str) -> LockedSession | None:
        """Lock a session row until commit and read it with the clock; None if it does not exist."""
        query = select(
            _S.c.id, _S.c.user_id, _S.c.version, _S.c.dek_version, _S.c.status, _S.c.expires_at,
            _S.c.ciphertext, self._now_col(),
        ).where(_S.c.id == session_id)  # fmt: skip
        if self._dialect == "postgresql":
            query = query.with_for_update()
        row = (await self.conn.execute(query)).mappings().first()
        return None if row is None else LockedSession(**row)

    async def open_lease(self, session_id: str) -> LeaseRow | None:
        result = await self.conn.execute(
            select(_L).where(_L.c.session_id == session_id, _L.c.ended_us.is_(None))
        )
        row = result.mappings().first()
        return None if row is None else LeaseRow(**row)

    async def end_lease(self, lease_id: str, *, now_us: int, reason: str) -> None:
        await self.conn.execute(
            update(Lease).where(Lease.id == lease_id).values(ended_us=now_us, end_reason=reason)
        )

    async def insert_lease(
        self,
        *,
        lease_id: str,
        session: LockedSession,
        holder_token_id: str,
        purpose: str,
        ttl_seconds: int,
    ) -> int:
        """Insert the new open lease; return its fencing token (the session's previous maximum + 1)."""
        fence = (
            select(func.coalesce(func.max(_L.c.fencing_token), 0) + 1)
            .where(_L.c.session_id == session.id)
            .scalar_subquery()
        )
        values = select(
            literal(lease_id), literal(session.id), literal(session.user_id), literal(session.version),
            fence, literal(holder_token_id), literal(purpose), literal(ttl_seconds),
            literal(session.now_us, BigInteger),
            literal(session.now_us + ttl_seconds * 1_000_000, BigInteger),
        )  # fmt: skip
        columns = [
            "id", "session_id", "user_id", "session_version", "fencing_token", "holder_token_id", "purpose",
            "ttl_seconds", "granted_us", "expires_us",
        ]  # fmt: skip
        result = await self.conn.execute(
            insert(Lease).from_select(columns, values).returning(Lease.fencing_token)
        )
        return int(result.scalar_one())

    async def lock_lease(self, lease_id: str) -> LockedLease | None:
        """Lock the lease's session row, then read the lease and the clock.

        Locks are always taken session row first (as grants do), so lease calls cannot deadlock with
        grants; the lease is read by a second statement, after the lock, so it is never a stale
        snapshot. No newer fencing token can exist for a lease that is still open: a grant ends the open
        lease before inserting the next one, and the partial unique index admits one open lease per session.
        """
        session_of_lease = select(_L.c.session_id).where(_L.c.id == lease_id).scalar_subquery()
        locking = select(_S.c.status, _S.c.version, _S.c.dek_version, self._now_col()).where(
            _S.c.id == session_of_lease
        )
        if self._dialect == "postgresql":
            locking = locking.with_for_update()
        session = (await self.conn.execute(locking)).mappings().first()
        if session is None:
            return None
        row = (await self.conn.execute(select(_L).where(_L.c.id == lease_id))).mappings().first()
        if row is None:
            return None
        return LockedLease(
            session_status=session["status"],
            session_version=session["version"],
            session_dek_version=session["dek_version"],
            now_us=session["now_us"],
            lease=LeaseRow(**row),
        )

    async def extend_lease(self, lease_id: str, *, expires_us: int) -> None:
        await self.conn.execute(update(Lease).where(Lease.id == lease_id).values(expires_us=expires_us))
