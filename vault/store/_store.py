"""Queries. The only module that speaks SQL; callers get plain rows and :class:`~vault.errors.VaultError`s.

Transaction boundaries belong to the service layer: it opens ``store.transaction()`` and calls the
methods of the :class:`Tx` it gets. Database errors become :class:`StoreUnavailable` without their text
(which can carry SQL and values), at the driver call that raised them (see :mod:`vault.store._exec`);
an exception raised by the caller's own code inside the block rolls the transaction back and passes
through unchanged.

On PostgreSQL the vault runs its statements on its own asyncpg pool (``VAULT_DB_POOL_SIZE``
connections); the SQLAlchemy engine is kept for the migrations. On SQLite everything goes through the
SQLAlchemy engine (one connection per process).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import datetime
from typing import Any, cast

import asyncpg
from sqlalchemy import ColumnElement, Table, bindparam, func, insert, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import Executable

from vault.store._audit import AuditQueries
from vault.store._batch import BatchQueries
from vault.store._engine import SQLITE_BUSY_TIMEOUT_MS, make_engine
from vault.store._exec import Builder, translated
from vault.store._keys import KeyQueries
from vault.store._models import ServiceToken, SessionRecord, User, UserKey
from vault.store._rows import SessionRow, TokenRow, UserKeyRow

__all__ = ["Store", "Tx"]

log = logging.getLogger("vault.store")

_SESSIONS: Table = cast(Table, SessionRecord.__table__)
_TOKENS: Table = cast(Table, ServiceToken.__table__)
_USERS: Table = cast(Table, User.__table__)
_KEYS: Table = cast(Table, UserKey.__table__)


class Store:
    """A handle on the database. Safe to share between tasks; each transaction takes its own connection."""

    def __init__(
        self, engine: AsyncEngine, *, pool_size: int = 10, clock_us: Callable[[], int] | None = None
    ) -> None:
        """``clock_us`` replaces the database's clock for lease decisions: for tests only."""
        self.engine = engine
        self.dialect = engine.dialect.name
        self.clock_us = clock_us
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()

    @classmethod
    def connect(cls, url: str, *, pool_size: int = 10, clock_us: Callable[[], int] | None = None) -> Store:
        return cls(make_engine(url, pool_size=pool_size), pool_size=pool_size, clock_us=clock_us)

    def __repr__(self) -> str:
        return f"Store(dialect={self.dialect!r}, pool_size={self._pool_size})"

    @property
    def connections(self) -> int:
        """How many transactions of this process can run at once: the pool's size (SQLite: one)."""
        return 1 if self.dialect == "sqlite" else self._pool_size

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        await self.engine.dispose()

    async def _pg_pool(self) -> asyncpg.Pool:
        async with self._pool_lock:
            if self._pool is None:
                # The engine's URL, as libpq's: postgresql://user:password@host:port/db?options
                dsn = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
                with translated():
                    self._pool = await asyncpg.create_pool(
                        dsn, min_size=0, max_size=self._pool_size, max_inactive_connection_lifetime=300,
                        reset=_no_session_state,
                    )  # fmt: skip
            return self._pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        """One database transaction: committed if the block succeeds, rolled back if it raises (the
        block's own exception then propagates unchanged; a failed rollback is logged by type only)."""
        if self.dialect == "postgresql":
            async with self._pg_transaction() as tx:
                yield tx
            return
        conn = self.engine.connect()
        with translated():
            await conn.start()
        try:
            with translated():
                await conn.begin()
            try:
                yield Tx(conn, self.dialect, self.clock_us)
            except BaseException:
                await _quietly(conn.rollback())
                raise
            with translated():
                await conn.commit()
        finally:
            await _quietly(conn.close())

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Tx]:
        """For reads only: on PostgreSQL a pooled connection with no transaction around the statements
        (each is its own snapshot; no BEGIN and COMMIT round trips); on SQLite a transaction."""
        if self.dialect != "postgresql":
            async with self.transaction() as tx:
                yield tx
            return
        pool = await self._pg_pool()
        with translated():
            conn = await pool.acquire()
        try:
            yield Tx(None, self.dialect, self.clock_us, pg=conn)
        finally:
            await _quietly(pool.release(conn))

    @asynccontextmanager
    async def _pg_transaction(self) -> AsyncIterator[Tx]:
        pool = await self._pg_pool()
        with translated():
            conn = await pool.acquire()
        try:
            outer = conn.transaction()
            with translated():
                await outer.start()
            try:
                yield Tx(None, self.dialect, self.clock_us, pg=conn)
            except BaseException:
                await _quietly(outer.rollback())
                raise
            with translated():
                await outer.commit()
        finally:
            await _quietly(pool.release(conn))

    async def forget_old_pages(self) -> bool:
        """After destroying data (a shred, a DEK rotation): on SQLite, checkpoint the WAL and truncate it,
        so the old page images that still held the data leave the ``-wal`` file (``secure_delete`` zeroes
        what the database file frees). False if another process's reader kept the checkpoint from
        finishing (the frames go at a later checkpoint). On PostgreSQL there is nothing the vault's role
        can force: old row versions stay until VACUUM reuses their space (SECURITY.md says so)."""
        if self.dialect != "sqlite":
            return True
        async with self.engine.connect() as conn:
            with translated():
                raw = await conn.get_raw_connection()
                driver = raw.driver_connection
                assert driver is not None
                # A TRUNCATE checkpoint waits for other processes' readers in the busy handler, holding this
                # process's one connection: wait one second at most, then leave it to a later checkpoint.
                await driver.execute("PRAGMA busy_timeout=1000")
                try:
                    cursor = await driver.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                    row = await cursor.fetchone()
                    await cursor.close()
                finally:
                    await driver.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        return row is not None and row[0] == 0

    async def ping(self) -> None:
        async with self.transaction() as tx:
            await tx.fetch(_ping)


async def _no_session_state(_conn: asyncpg.Connection) -> None:
    """The pool's reset before a connection is reused. asyncpg always rolls back a transaction left open
    (``Connection._reset`` runs on every release, whatever this does); its default reset query (``RESET ALL;
    UNLISTEN *; CLOSE ALL; SELECT pg_advisory_unlock_all()``, a round trip and a transaction of its own on
    every release) is not needed: the vault keeps no session state (no ``SET``, ``LISTEN``, cursors or
    advisory locks outside the transaction that ended)."""


async def _quietly(step: Any) -> None:
    """Clean-up after a failure: its own error must not hide the first one (logged by type only)."""
    try:
        await step
    except Exception as exc:
        log.warning("database clean-up failed: %s", type(exc).__name__)


def _ping(_now: ColumnElement[Any]) -> Executable:
    return select(literal(1).label("one"))


def _typed(table: Any, names: list[str]) -> dict[str, Any]:
    return {n: bindparam(n, type_=table.c[n].type) for n in names}


def _upsert_user(dialect_insert: Any) -> Builder:
    def build(_now: ColumnElement[Any]) -> Executable:
        values = dialect_insert(_USERS).values(_typed(_USERS, ["id", "created_at"]))
        return values.on_conflict_do_nothing(index_elements=["id"])  # type: ignore[no-any-return]

    return build


_UPSERT_USER = {"postgresql": _upsert_user(postgresql.insert), "sqlite": _upsert_user(sqlite.insert)}


def _lock_user(_now: ColumnElement[Any]) -> Executable:
    return select(_USERS.c.id).where(_USERS.c.id == bindparam("user_id")).with_for_update()


def _active_key(_now: ColumnElement[Any]) -> Executable:
    return select(_KEYS).where(_KEYS.c.user_id == bindparam("user_id"), _KEYS.c.status == "active")


def _key_version(_now: ColumnElement[Any]) -> Executable:
    return select(_KEYS).where(
        _KEYS.c.user_id == bindparam("user_id"), _KEYS.c.dek_version == bindparam("version")
    )


def _insert_key(_now: ColumnElement[Any]) -> Executable:
    return insert(_KEYS).values(_typed(_KEYS, [c.name for c in _KEYS.c])).inline()


def _supersede(_now: ColumnElement[Any]) -> Executable:
    return (
        update(_SESSIONS)
        .where(_SESSIONS.c.user_id == bindparam("owner"), _SESSIONS.c.status == "active")
        .values(status="superseded", updated_at=bindparam("now", type_=_SESSIONS.c.updated_at.type))
        .returning(_SESSIONS.c.id)
    )


def _insert_session(_now: ColumnElement[Any]) -> Executable:
    return insert(_SESSIONS).values(_typed(_SESSIONS, [c.name for c in _SESSIONS.c])).inline()


def _session(_now: ColumnElement[Any]) -> Executable:
    return select(_SESSIONS).where(_SESSIONS.c.id == bindparam("session_id"))


def _write_back(_now: ColumnElement[Any]) -> Executable:
    names = ["dek_version", "ciphertext", "format", "has_signers", "expires_at", "updated_at"]
    return (
        update(_SESSIONS)
        .where(
            _SESSIONS.c.id == bindparam("session_id"), _SESSIONS.c.version == bindparam("expected_version")
        )
        .values(version=bindparam("new_version"), **_typed(_SESSIONS, names))
        .returning(_SESSIONS.c.id)
    )


def _insert_token(_now: ColumnElement[Any]) -> Executable:
    return insert(_TOKENS).values(_typed(_TOKENS, [c.name for c in _TOKENS.c])).inline()


def _token(_now: ColumnElement[Any]) -> Executable:
    return select(_TOKENS).where(_TOKENS.c.id == bindparam("token_id"))


def _tokens_any(_now: ColumnElement[Any]) -> Executable:
    """PostgreSQL only: ``id = ANY($1)``, one text array parameter."""
    ids = bindparam("token_ids", type_=postgresql.ARRAY(_TOKENS.c.id.type))
    return select(_TOKENS).where(_TOKENS.c.id == func.any(ids))


def _tokens(_now: ColumnElement[Any]) -> Executable:
    return select(_TOKENS).order_by(_TOKENS.c.created_at, _TOKENS.c.id)  # ties in a stable order


def _revoke(_now: ColumnElement[Any]) -> Executable:
    return (
        update(_TOKENS)
        .where(_TOKENS.c.id == bindparam("token_id"), _TOKENS.c.revoked_at.is_(None))
        .values(revoked_at=bindparam("now", type_=_TOKENS.c.revoked_at.type), mac=bindparam("mac"))
        .returning(_TOKENS.c.id)
    )


class Tx(BatchQueries, AuditQueries, KeyQueries):
    """The queries available inside one transaction."""

    def __init__(
        self,
        conn: AsyncConnection | None,
        dialect: str,
        clock_us: Callable[[], int] | None = None,
        *,
        pg: asyncpg.Connection | None = None,
    ) -> None:
        self._sa = conn
        self._pg = pg
        self._dialect = dialect
        self._clock_us = clock_us

    # users and keys -------------------------------------------------------------------------------

    async def ensure_user_locked(self, user_id: str, now: datetime) -> None:
        """Create the user if missing and hold its row lock until commit.

        Serialises everything that changes one user's sessions or keys (ingest, supersede, rotation).
        On PostgreSQL this is ``SELECT ... FOR UPDATE``; on SQLite ``BEGIN IMMEDIATE`` already holds the
        database write lock for the whole transaction.
        """
        await self.fetch(_UPSERT_USER[self._dialect], {"id": user_id, "created_at": now})
        if self._dialect == "postgresql":
            await self.fetch(_lock_user, {"user_id": user_id})

    async def active_user_key(self, user_id: str) -> UserKeyRow | None:
        row = await self.fetch_one(_active_key, {"user_id": user_id})
        return None if row is None else UserKeyRow(**row)

    async def user_key(self, user_id: str, dek_version: int) -> UserKeyRow | None:
        row = await self.fetch_one(_key_version, {"user_id": user_id, "version": dek_version})
        return None if row is None else UserKeyRow(**row)

    async def insert_user_key(self, row: UserKeyRow) -> None:
        await self.fetch(_insert_key, asdict(row))

    # sessions ---------------------------------------------------------------------------------------

    async def supersede_active_sessions(self, user_id: str, now: datetime) -> list[str]:
        """Mark every active session of the user superseded; return their ids."""
        return [row["id"] for row in await self.fetch(_supersede, {"owner": user_id, "now": now})]

    async def insert_session(self, row: SessionRow) -> None:
        await self.fetch(_insert_session, asdict(row))

    async def session(self, session_id: str) -> SessionRow | None:
        row = await self.fetch_one(_session, {"session_id": session_id})
        return None if row is None else SessionRow(**row)

    async def write_back_session(
        self,
        *,
        session_id: str,
        expected_version: int,
        dek_version: int,
        ciphertext: bytes,
        session_format: str,
        has_signers: bool,
        expires_at: datetime | None,
        now: datetime,
    ) -> bool:
        """Store the next version of a session; False if its version moved on meanwhile."""
        params = {
            "session_id": session_id,
            "expected_version": expected_version,
            "new_version": expected_version + 1,
            "dek_version": dek_version,
            "ciphertext": ciphertext,
            "format": session_format,
            "has_signers": has_signers,
            "expires_at": expires_at,
            "updated_at": now,
        }
        return bool(await self.fetch(_write_back, params))

    # service tokens ---------------------------------------------------------------------------------

    async def insert_token(self, row: TokenRow) -> None:
        values = asdict(row)
        values["purposes"] = None if row.purposes is None else json.dumps(list(row.purposes))
        await self.fetch(_insert_token, values)

    async def token(self, token_id: str) -> TokenRow | None:
        row = await self.fetch_one(_token, {"token_id": token_id})
        return None if row is None else _token_row(row)

    async def tokens_by_id(self, token_ids: Sequence[str]) -> dict[str, TokenRow]:
        """The token rows among ``token_ids`` (one statement for all of them)."""
        if self._pg is not None:
            rows = await self.fetch(_tokens_any, {"token_ids": list(token_ids)})
        else:
            rows = await self.fetch_query(select(_TOKENS).where(_TOKENS.c.id.in_(list(token_ids))))
        return {row["id"]: _token_row(row) for row in rows}

    async def tokens(self) -> list[TokenRow]:
        return [_token_row(row) for row in await self.fetch(_tokens)]

    async def revoke_token(self, token_id: str, now: datetime, mac: bytes) -> bool:
        """Set ``revoked_at`` (and the row's new MAC) on an unrevoked token; False if there is none."""
        return bool(await self.fetch(_revoke, {"token_id": token_id, "now": now, "mac": mac}))


def _token_row(row: Any) -> TokenRow:
    values = dict(row)
    purposes = values.pop("purposes")
    return TokenRow(**values, purposes=None if purposes is None else tuple(json.loads(purposes)))
