"""Test databases: scratch PostgreSQL databases cloned from a migrated template, SQLite file copies,
and direct reads through a *different* driver (psycopg / sqlite3) than the vault's own."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from vault.store import Store, upgrade

TABLES = (
    "users", "user_keys", "sessions", "service_tokens", "leases", "audit_events", "audit_chain", "audit_checkpoints",
)  # fmt: skip
_counter = itertools.count()


def admin_dsn() -> str:
    url = os.environ.get("VAULT_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    return url.replace("postgresql+asyncpg://", "postgresql://")


def _with_db(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + name))


def pg_vault_url(name: str) -> str:
    return _with_db(admin_dsn(), name).replace("postgresql://", "postgresql+asyncpg://", 1)


def pg_execute(sql: str) -> None:
    with psycopg.connect(admin_dsn(), autocommit=True) as conn:
        conn.execute(sql)


def migrate(url: str) -> None:
    async def run() -> None:
        store = Store.connect(url, pool_size=1)
        try:
            await upgrade(store.engine)
        finally:
            await store.close()

    asyncio.run(run())


def new_pg_database(template: str) -> str:
    name = f"sv_t_{os.getpid()}_{next(_counter)}"
    pg_execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return name


def drop_pg_database(name: str) -> None:
    pg_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def new_sqlite_database(template: Path, directory: Path) -> str:
    target = directory / "vault.db"
    shutil.copyfile(template, target)
    return f"sqlite+aiosqlite:///{target}"


class RawDb:
    """Direct access to a test database, bypassing the vault."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")

    @property
    def sqlite_path(self) -> Path:
        return Path(self.url.split(":///", 1)[1])

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self.is_sqlite:
            with sqlite3.connect(self.sqlite_path) as conn:
                return list(conn.execute(sql.replace("%s", "?"), tuple(params)))
        with psycopg.connect(self.url.replace("postgresql+asyncpg://", "postgresql://")) as conn:
            return list(conn.execute(sql, tuple(params)))

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        if self.is_sqlite:
            with sqlite3.connect(self.sqlite_path) as conn:
                conn.execute(sql.replace("%s", "?"), tuple(params))
            return
        with psycopg.connect(self.url.replace("postgresql+asyncpg://", "postgresql://")) as conn:
            conn.execute(sql, tuple(params))

    def counts(self) -> dict[str, int]:
        return {t: int(self.query(f'SELECT count(*) FROM "{t}"')[0][0]) for t in TABLES}

    def everything(self) -> bytes:
        """Every value of every table; on SQLite also the raw database and WAL files, free pages included."""
        chunks: list[bytes] = []
        for table in TABLES:
            for row in self.query(f'SELECT * FROM "{table}"'):
                for value in row:
                    if isinstance(value, (bytes, bytearray, memoryview)):
                        chunks.append(bytes(value))
                    elif value is not None:
                        chunks.append(str(value).encode())
        if self.is_sqlite:
            for suffix in ("", "-wal"):
                path = Path(str(self.sqlite_path) + suffix)
                if path.exists():
                    chunks.append(path.read_bytes())
        return b"\n".join(chunks)


def tamper(db: RawDb, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
    """Run statements as an attacker with full database access: the append-only triggers are bypassed
    (PostgreSQL: replica mode for this session; SQLite: the triggers are dropped and re-created)."""
    if db.is_sqlite:
        with sqlite3.connect(db.sqlite_path) as conn:
            triggers = list(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"))
            for name, _ in triggers:
                conn.execute(f'DROP TRIGGER "{name}"')
            for sql, params in statements:
                conn.execute(sql.replace("%s", "?"), tuple(params))
            for _, sql in triggers:
                conn.execute(sql)
        return
    with psycopg.connect(db.url.replace("postgresql+asyncpg://", "postgresql://")) as conn:
        conn.execute("SET session_replication_role = replica")
        for sql, params in statements:
            conn.execute(sql, tuple(params))
