"""Errors are translated at the driver call, not around the caller's block; savepoints undo only theirs.

Before, ``Store.transaction`` turned any SQLAlchemy error or ``OSError`` raised anywhere in the caller's
block into ``StoreUnavailable`` (a 503 the client retries), so a bug looked like an outage.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from tests._db import RawDb
from vault.errors import StoreUnavailable
from vault.store import Store

NOW = datetime(2026, 12, 1, tzinfo=UTC)


class Bug(Exception):
    pass


def _run(url: str, block: object) -> None:
    async def go() -> None:
        store = Store.connect(url, pool_size=1)
        try:
            await block(store)  # type: ignore[operator]
        finally:
            await store.close()

    asyncio.run(go())


@pytest.mark.parametrize("bug", [Bug("a bug"), OSError("looks like I/O"), SQLAlchemyError("looks like SQL")])
def test_an_error_raised_by_the_callers_code_passes_through_and_rolls_back(
    db_url: str, raw: RawDb, bug: Exception
) -> None:
    async def block(store: Store) -> None:
        async with store.transaction() as tx:
            await tx.ensure_user_locked("u1", NOW)
            raise bug

    with pytest.raises(type(bug)) as caught:
        _run(db_url, block)
    assert caught.value is bug  # not StoreUnavailable
    assert raw.query("SELECT count(*) FROM users")[0][0] == 0


def test_a_database_refusal_is_store_unavailable(db_url: str, raw: RawDb) -> None:
    raw.execute("INSERT INTO users (id, created_at) VALUES ('u1', %s)", [NOW])

    async def block(store: Store) -> None:
        async with store.transaction() as tx:
            await tx.fetch_query(text("SELECT * FROM no_such_table"))

    with pytest.raises(StoreUnavailable):
        _run(db_url, block)


def test_a_failed_savepoint_undoes_only_its_own_work(db_url: str, raw: RawDb) -> None:
    async def block(store: Store) -> None:
        async with store.transaction() as tx:
            await tx.ensure_user_locked("kept", NOW)
            with pytest.raises(Bug):
                async with tx.savepoint():
                    await tx.ensure_user_locked("undone", NOW)
                    raise Bug
            with pytest.raises(StoreUnavailable):  # the database refuses inside a savepoint ...
                async with tx.savepoint():
                    await tx.fetch_query(text("SELECT * FROM no_such_table"))
            async with tx.savepoint():  # ... and the transaction goes on
                await tx.ensure_user_locked("also kept", NOW)

    _run(db_url, block)
    assert sorted(r[0] for r in raw.query("SELECT id FROM users")) == ["also kept", "kept"]


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_connection_released_inside_a_transaction_is_rolled_back_before_reuse(
    db_url: str, raw: RawDb
) -> None:
    """The pool skips asyncpg's reset query (the vault keeps no session state), yet a connection that comes
    back inside a transaction (a rollback that failed) has it rolled back before reuse: its work is undone
    and the next transaction starts clean on it (asyncpg does this on every release; pinned below 0.40)."""

    async def run() -> list[str]:
        store = Store.connect(db_url, pool_size=1)
        try:
            pool = await store._pg_pool()
            conn = await pool.acquire()
            await conn.execute("BEGIN")
            await conn.execute("INSERT INTO users (id, created_at) VALUES ('left-open', now())")
            await pool.release(conn)  # still inside that transaction
            async with store.transaction() as tx:  # the pool's only connection: the one released above
                counts = await tx.kek_counts()
            assert counts == []
            return [r["id"] for r in await conn_rows(store)]
        finally:
            await store.close()

    async def conn_rows(store: Store) -> list[dict[str, str]]:
        pool = await store._pg_pool()
        async with pool.acquire() as conn:
            return [dict(r) for r in await conn.fetch("SELECT id FROM users")]

    assert asyncio.run(run()) == []
    assert raw.query("SELECT count(*) FROM users") == [(0,)]
