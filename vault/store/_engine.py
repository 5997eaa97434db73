"""Engine construction: the one place that knows how each backend must be configured."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

__all__ = ["SQLITE_BUSY_TIMEOUT_MS", "make_engine"]

SQLITE_BUSY_TIMEOUT_MS = 30_000  # how long a SQLite statement waits for another process's lock


def make_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    """Build an engine for ``postgresql+asyncpg://`` or ``sqlite+aiosqlite:///`` URLs.

    ``hide_parameters`` keeps bound values (ciphertext, token hashes) out of every SQLAlchemy exception
    message. On SQLite every transaction starts with ``BEGIN IMMEDIATE``: SQLite then serialises writers
    up front instead of failing a read-then-write transaction with ``database is locked`` later, which is
    what makes "lock the user, then write" correct there. Since SQLite runs one writer at a time anyway,
    a process uses one connection: transactions queue fairly in the pool instead of spinning in SQLite's
    busy handler (which starves some of them under load); other processes still wait on the file lock.
    """
    if url.startswith("sqlite"):
        del pool_size
        # aiosqlite logs every call at DEBUG with its SQL and parameters (ciphertext, token hashes): the
        # vault never lets it, whatever level the application's logging is configured at.
        logging.getLogger("aiosqlite").setLevel(logging.INFO)
        engine = create_async_engine(
            url,
            hide_parameters=True,
            pool_size=1,
            max_overflow=0,
            pool_timeout=120,
            connect_args={"timeout": 30, "check_same_thread": False},
        )
        _configure_sqlite(engine)
        return engine
    # No overflow: connections opened past the pool and closed again cost a server fork each.
    return create_async_engine(
        url, hide_parameters=True, pool_size=pool_size, max_overflow=0, pool_recycle=300
    )


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
