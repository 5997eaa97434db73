"""Key-management queries (mixed into :class:`~vault.store.Tx`): KEK status counts, rewrap, DEK rotation,
crypto-shredding.

A destroyed DEK keeps its row (``status = 'destroyed'``, ``wrapped_dek`` empty) so that its version
number is never reused: a new DEK is always ``max(dek_version) + 1`` for its user, and additional
authenticated data that names a version can never match a ciphertext sealed under another key.
Shredded sessions keep their row too (``status = 'shredded'``, ``ciphertext`` empty): leases and audit
events refer to them, and a lease request answers ``410 user_shredded`` from the row, under its lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, and_, bindparam, func, select, update
from sqlalchemy.sql import Executable

from vault.store._exec import Executor
from vault.store._models import Lease, SessionRecord, User, UserKey
from vault.store._rows import UserKeyRow

__all__ = ["KekCount", "KeyQueries", "RekeySession"]

_K: Table = cast(Table, UserKey.__table__)
_S: Table = cast(Table, SessionRecord.__table__)
_L: Table = cast(Table, Lease.__table__)
_U: Table = cast(Table, User.__table__)
_LIVE = _K.c.status != "destroyed"


@dataclass(frozen=True, slots=True)
class KekCount:
    """How many live DEKs are wrapped under one KEK id and version."""

    kek_id: str
    kek_version: int
    deks: int


@dataclass(frozen=True, slots=True)
class RekeySession:
    """A stored session as DEK rotation re-encrypts it (ciphertext: never log)."""

    id: str
    version: int
    dek_version: int
    ciphertext: bytes


def _kek_counts(_now: ColumnElement[Any]) -> Executable:
    return (
        select(_K.c.kek_id, _K.c.kek_version, func.count().label("deks"))
        .where(_LIVE)
        .group_by(_K.c.kek_id, _K.c.kek_version)
        .order_by(_K.c.kek_id, _K.c.kek_version)
    )


def _stale_keys(_now: ColumnElement[Any]) -> Executable:
    """Live DEKs of one KEK under a version older than the active one, after a cursor, in key order."""
    after = (_K.c.user_id > bindparam("after_user")) | and_(
        _K.c.user_id == bindparam("after_user"), _K.c.dek_version > bindparam("after_version")
    )
    return (
        select(_K)
        .where(_LIVE, _K.c.kek_id == bindparam("kek_id"), _K.c.kek_version < bindparam("active"), after)
        .order_by(_K.c.user_id, _K.c.dek_version)
        .limit(bindparam("limit"))
    )


def _replace_wrapped(_now: ColumnElement[Any]) -> Executable:
    """Compare-and-set: only if the wrapped key is still the one that was rewrapped."""
    return (
        update(_K)
        .where(
            _K.c.user_id == bindparam("owner"),
            _K.c.dek_version == bindparam("key_version"),
            _K.c.wrapped_dek == bindparam("old"),
            _LIVE,
        )
        .values(wrapped_dek=bindparam("new"), kek_version=bindparam("new_kek_version"))
        .returning(_K.c.user_id)
    )


def _dependents(_now: ColumnElement[Any]) -> Executable:
    return select(func.count().label("n")).where(
        _LIVE, _K.c.kek_id == bindparam("kek_id"), _K.c.kek_version <= bindparam("through")
    )


def _user_keys(_now: ColumnElement[Any]) -> Executable:
    return select(_K).where(_K.c.user_id == bindparam("user_id")).order_by(_K.c.dek_version)


def _max_dek_version(_now: ColumnElement[Any]) -> Executable:
    return select(func.coalesce(func.max(_K.c.dek_version), 0).label("v")).where(
        _K.c.user_id == bindparam("user_id")
    )


def _user_sessions(_now: ColumnElement[Any]) -> Executable:
    return (
        select(_S.c.id, _S.c.version, _S.c.dek_version, _S.c.ciphertext)
        .where(_S.c.user_id == bindparam("user_id"), _S.c.status != "shredded")
        .order_by(_S.c.id)
        .with_for_update()  # user, then sessions: the one lock order
    )


def _reseal_session(_now: ColumnElement[Any]) -> Executable:
    return (
        update(_S)
        .where(_S.c.id == bindparam("session_id"), _S.c.version == bindparam("expected_version"))
        .values(dek_version=bindparam("new_dek_version"), ciphertext=bindparam("sealed"))
        .returning(_S.c.id)
    )


def _destroy_keys(_now: ColumnElement[Any]) -> Executable:
    """Destroy the user's DEKs below a version (all of them with ``below`` past the newest)."""
    return (
        update(_K)
        .where(_K.c.user_id == bindparam("owner"), _K.c.dek_version < bindparam("below"), _LIVE)
        .values(status="destroyed", wrapped_dek=b"")
        .returning(_K.c.dek_version)
    )


def _retire_active(_now: ColumnElement[Any]) -> Executable:
    return (
        update(_K).where(_K.c.user_id == bindparam("owner"), _K.c.status == "active").values(status="retired")
    )


def _shred_sessions(_now: ColumnElement[Any]) -> Executable:
    return (
        update(_S)
        .where(_S.c.user_id == bindparam("owner"), _S.c.status != "shredded")
        .values(
            status="shredded",
            ciphertext=b"",
            updated_at=bindparam("now", type_=_S.c.updated_at.type),
        )
        .returning(_S.c.id)
    )


def _end_user_leases(now: ColumnElement[Any]) -> Executable:
    return (
        update(_L)
        .where(_L.c.user_id == bindparam("owner"), _L.c.ended_us.is_(None))
        .values(ended_us=now, end_reason="shredded")
        .returning(_L.c.id)
    )


def _mark_shredded(_now: ColumnElement[Any]) -> Executable:
    return (
        update(_U)
        .where(_U.c.id == bindparam("user_id"))
        .values(shredded_at=bindparam("now", type_=_U.c.shredded_at.type))
    )


class KeyQueries(Executor):
    async def kek_counts(self) -> list[KekCount]:
        """Live (not destroyed) DEKs per KEK id and version."""
        return [KekCount(**row) for row in await self.fetch(_kek_counts)]

    async def stale_keys(
        self, kek_id: str, active_version: int, *, after: tuple[str, int], limit: int
    ) -> list[UserKeyRow]:
        """Up to ``limit`` live DEKs of ``kek_id`` wrapped under a version below ``active_version``,
        ordered by (user, DEK version) and strictly after the ``after`` cursor (``("", 0)`` to start)."""
        params = {"kek_id": kek_id, "active": active_version, "after_user": after[0],
                  "after_version": after[1], "limit": limit}  # fmt: skip
        return [UserKeyRow(**row) for row in await self.fetch(_stale_keys, params)]

    async def replace_wrapped(self, row: UserKeyRow, new_blob: bytes, kek_version: int) -> bool:
        """Store a rewrapped DEK; False if the row changed meanwhile (rotated, destroyed, rewrapped)."""
        params = {"owner": row.user_id, "key_version": row.dek_version, "old": row.wrapped_dek,
                  "new": new_blob, "new_kek_version": kek_version}  # fmt: skip
        return bool(await self.fetch(_replace_wrapped, params))

    async def kek_dependents(self, kek_id: str, through_version: int) -> int:
        """Live DEKs that still need a KEK version at or below ``through_version``."""
        row = await self.fetch_one(_dependents, {"kek_id": kek_id, "through": through_version})
        return 0 if row is None else int(row["n"])

    async def user_keys(self, user_id: str) -> list[UserKeyRow]:
        return [UserKeyRow(**row) for row in await self.fetch(_user_keys, {"user_id": user_id})]

    async def max_dek_version(self, user_id: str) -> int:
        """The highest DEK version the user ever had (destroyed ones count): 0 for none."""
        row = await self.fetch_one(_max_dek_version, {"user_id": user_id})
        return 0 if row is None else int(row["v"])

    async def lock_user_sessions(self, user_id: str) -> list[RekeySession]:
        """The user's sessions that still hold ciphertext, row-locked. Call with the user locked."""
        return [RekeySession(**row) for row in await self.fetch(_user_sessions, {"user_id": user_id})]

    async def reseal_session(
        self, session_id: str, version: int, dek_version: int, ciphertext: bytes
    ) -> bool:
        params = {"session_id": session_id, "expected_version": version, "new_dek_version": dek_version,
                  "sealed": ciphertext}  # fmt: skip
        return bool(await self.fetch(_reseal_session, params))

    async def retire_active_key(self, user_id: str) -> None:
        await self.fetch(_retire_active, {"owner": user_id})

    async def destroy_user_keys(self, user_id: str, *, below: int) -> list[int]:
        """Destroy the user's live DEKs with a version below ``below``; return their versions."""
        rows = await self.fetch(_destroy_keys, {"owner": user_id, "below": below})
        return sorted(int(row["dek_version"]) for row in rows)

    async def shred_user(self, user_id: str, now: datetime) -> tuple[int, int, int]:
        """Destroy every DEK and session ciphertext of the user and end its open leases (on the
        database's clock). Call with the user locked. Returns (sessions, keys, leases) affected."""
        sessions = await self.fetch(_shred_sessions, {"owner": user_id, "now": now})
        keys = await self.fetch(_destroy_keys, {"owner": user_id, "below": 2**31 - 1})
        leases = await self.fetch(_end_user_leases, {"owner": user_id})
        await self.fetch(_mark_shredded, {"user_id": user_id, "now": now})
        return len(sessions), len(keys), len(leases)
