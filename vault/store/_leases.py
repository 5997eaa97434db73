"""Lease queries (mixed into :class:`~vault.store.Tx`).

Exclusivity is the database's: the session row is locked (``SELECT ... FOR UPDATE`` on PostgreSQL; the
``BEGIN IMMEDIATE`` write lock on SQLite) for every lease decision, a partial unique index allows one open
lease per session, and fencing tokens are ``max + 1`` under that lock with ``(session_id,
fencing_token)`` unique. Lease times are microseconds on the database's clock, so replicas' clocks never
matter. The clock is read by a statement that runs *after* the lock is held, never by the ``SELECT ...
FOR UPDATE`` itself: PostgreSQL computes that statement's columns before it waits for the lock, so a
grant that queued behind another transaction would be dated when it began waiting (born expired, while
the next grant lands beside its holder).
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import ColumnElement, Table, and_, bindparam, func, insert, literal, select, update
from sqlalchemy.sql import Executable

from vault.store._exec import Executor
from vault.store._models import Lease, SessionRecord, User
from vault.store._rows import LeaseRow, LockedLease, LockedSession, SessionPeek

__all__ = ["LeaseQueries"]

_S: Table = cast(Table, SessionRecord.__table__)
_L: Table = cast(Table, Lease.__table__)
_U: Table = cast(Table, User.__table__)
_OPEN = and_(_L.c.session_id == _S.c.id, _L.c.ended_us.is_(None))


def _peek_columns(now: ColumnElement[Any]) -> Any:
    return select(
        _S.c.id, _S.c.user_id, _S.c.status, _S.c.expires_at, _L.c.expires_us.label("lease_expires_us"),
        now.label("now_us"),
    ).select_from(_S.outerjoin(_L, _OPEN))  # fmt: skip


def _peek_by_id(now: ColumnElement[Any]) -> Executable:
    return _peek_columns(now).where(_S.c.id == bindparam("session_id"))  # type: ignore[no-any-return]


def _peek_by_user(now: ColumnElement[Any]) -> Executable:
    return (  # type: ignore[no-any-return]
        _peek_columns(now)
        .where(_S.c.user_id == bindparam("user_id"))
        .order_by((_S.c.status == "active").desc(), _S.c.created_at.desc())
        .limit(1)
    )


def _lock_session(_now: ColumnElement[Any]) -> Executable:
    return (
        select(
            _S.c.id,
            _S.c.user_id,
            _S.c.version,
            _S.c.dek_version,
            _S.c.status,
            _S.c.expires_at,
            _S.c.ciphertext,
        )
        .where(_S.c.id == bindparam("session_id"))
        .with_for_update()  # ignored by SQLite, whose BEGIN IMMEDIATE already holds the write lock
    )


def _open_lease_and_clock(now: ColumnElement[Any]) -> Executable:
    """The clock, and the session's open lease if any: one row either way (after the lock is held)."""
    one = select(literal(1).label("one")).subquery()
    is_open = and_(_L.c.session_id == bindparam("session_id"), _L.c.ended_us.is_(None))
    return select(now.label("now_us"), *_L.c).select_from(one.outerjoin(_L, is_open))


def _end_lease(_now: ColumnElement[Any]) -> Executable:
    return (
        update(_L)
        .where(_L.c.id == bindparam("lease_id"))
        .values(ended_us=bindparam("ended_us"), end_reason=bindparam("reason"))
    )


def _insert_lease(_now: ColumnElement[Any]) -> Executable:
    fence = (
        select(func.coalesce(func.max(_L.c.fencing_token), 0) + 1)
        .where(_L.c.session_id == bindparam("session_id"))
        .scalar_subquery()
    )
    names = ("id", "session_id", "user_id", "session_version", "holder_token_id", "purpose", "ttl_seconds",
             "granted_us", "expires_us", "allow_wallet_changes")  # fmt: skip
    row = select(*(bindparam(n, type_=_L.c[n].type) for n in names), fence)
    return insert(_L).from_select([*names, "fencing_token"], row).returning(_L.c.fencing_token)


def _lock_lease_session(_now: ColumnElement[Any]) -> Executable:
    session_of_lease = select(_L.c.session_id).where(_L.c.id == bindparam("lease_id")).scalar_subquery()
    return select(_S.c.version).where(_S.c.id == session_of_lease).with_for_update()


def _lock_user_of_lease(_now: ColumnElement[Any]) -> Executable:
    owner = select(_L.c.user_id).where(_L.c.id == bindparam("lease_id")).scalar_subquery()
    return select(_U.c.id).where(_U.c.id == owner).with_for_update()


def _lease_and_clock(now: ColumnElement[Any]) -> Executable:
    return select(now.label("now_us"), *_L.c).where(_L.c.id == bindparam("lease_id"))


def _extend_lease(_now: ColumnElement[Any]) -> Executable:
    return update(_L).where(_L.c.id == bindparam("lease_id")).values(expires_us=bindparam("expires_us"))


class LeaseQueries(Executor):
    async def peek_session(
        self, *, session_id: str | None = None, user_id: str | None = None
    ) -> SessionPeek | None:
        """Read, without locking, a session by id or the user's active (else newest) session, with the
        expiry of its open lease, if any. A grant decides "held" from this alone, so refusals never
        queue on the row lock that acquirers and releasers need; "free" is re-checked under the lock."""
        if session_id is not None:
            row = await self.fetch_one(_peek_by_id, {"session_id": session_id})
        else:
            row = await self.fetch_one(_peek_by_user, {"user_id": user_id})
        return None if row is None else SessionPeek(**row)

    async def lock_session(self, session_id: str) -> tuple[LockedSession, LeaseRow | None] | None:
        """Lock a session row until commit; then read the clock and the session's open lease, if any.
        None if the session does not exist."""
        row = await self.fetch_one(_lock_session, {"session_id": session_id})
        if row is None:
            return None
        after = dict(await self.fetch_one(_open_lease_and_clock, {"session_id": session_id}) or {})
        now_us = after.pop("now_us")
        lease = None if after.get("id") is None else LeaseRow(**after)
        return LockedSession(**row, now_us=now_us), lease

    async def end_lease(self, lease_id: str, *, now_us: int, reason: str) -> None:
        await self.fetch(_end_lease, {"lease_id": lease_id, "ended_us": now_us, "reason": reason})

    async def insert_lease(
        self,
        *,
        lease_id: str,
        session: LockedSession,
        holder_token_id: str,
        purpose: str,
        ttl_seconds: int,
        allow_wallet_changes: bool = False,
    ) -> int:
        """Insert the new open lease; return its fencing token (the session's previous maximum + 1)."""
        params = {
            "id": lease_id, "session_id": session.id, "user_id": session.user_id,
            "session_version": session.version, "holder_token_id": holder_token_id, "purpose": purpose,
            "ttl_seconds": ttl_seconds, "granted_us": session.now_us,
            "expires_us": session.now_us + ttl_seconds * 1_000_000,
            "allow_wallet_changes": allow_wallet_changes,
        }  # fmt: skip
        row = await self.fetch_one(_insert_lease, params)
        assert row is not None
        return int(row["fencing_token"])

    async def lock_user_of_lease(self, lease_id: str) -> None:
        """Lock the row of the lease's user (a write-back may change the user's keys), before any session
        row: the one lock order, user then session, that ingest and key rotation use too. SQLite's
        ``BEGIN IMMEDIATE`` holds the database write lock already."""
        if self._dialect == "postgresql":
            await self.fetch(_lock_user_of_lease, {"lease_id": lease_id})

    async def lock_lease(self, lease_id: str) -> LockedLease | None:
        """Lock the lease's session row, then read the lease and the clock.

        Locks are always taken session row first (as grants do), so lease calls cannot deadlock with
        grants; the lease and the clock are read by a second statement, after the lock, so the lease is
        never a stale snapshot and the time is not the moment the wait began. No newer fencing token
        can exist for a lease that is still open: a grant ends the open lease before inserting the next
        one, and the partial unique index admits one open lease per session.
        """
        session = await self.fetch_one(_lock_lease_session, {"lease_id": lease_id})
        if session is None:
            return None
        row = dict(await self.fetch_one(_lease_and_clock, {"lease_id": lease_id}) or {})
        if not row:
            return None
        now_us = row.pop("now_us")
        return LockedLease(session_version=session["version"], now_us=now_us, lease=LeaseRow(**row))

    async def extend_lease(self, lease_id: str, *, expires_us: int) -> None:
        await self.fetch(_extend_lease, {"lease_id": lease_id, "expires_us": expires_us})
