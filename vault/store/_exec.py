"""How a :class:`~vault.store.Tx` runs its statements.

Every statement is built once (per dialect, and per clock kind: the database's, or a test clock passed
as a parameter) with named bind parameters, so SQLAlchemy's per-call construction and cache-key work is
not paid on the hot path. On SQLite statements run through SQLAlchemy. On PostgreSQL the statement is
compiled once to SQL text and sent straight to the asyncpg connection underneath the SQLAlchemy
transaction: the same SQL SQLAlchemy would send, without its per-execution machinery (which was half
the vault's CPU per lease; bench/results/profile.md). The transaction itself (BEGIN, COMMIT, ROLLBACK,
pool) stays SQLAlchemy's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from sqlalchemy import BigInteger, ColumnElement, bindparam, literal_column
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Executable

__all__ = ["PG_ERRORS", "Builder", "Executor"]

# Errors the raw PostgreSQL path can raise; Store.transaction translates them like SQLAlchemy's own.
PG_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError)

_NOW_SQL = {
    "postgresql": "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)",
    "sqlite": "CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)",
}
_PG = asyncpg_dialect()  # type: ignore[no-untyped-call]

# A statement builder gets the expression for "now, in microseconds" and returns the statement.
Builder = Callable[[ColumnElement[Any]], Executable]


@dataclass(frozen=True, slots=True)
class _Prepared:
    statement: Executable
    sql: str = ""  # PostgreSQL only: the compiled text with $n placeholders ...
    names: tuple[str, ...] = ()  # ... the bind parameter behind each $n ...
    fixed: dict[str, Any] = field(default_factory=dict)  # ... and the values of literals in the statement


_prepared: dict[tuple[Builder, str, bool], _Prepared] = {}


def _prepare(statement: Executable, dialect: str) -> _Prepared:
    if dialect != "postgresql":
        return _Prepared(statement)
    compiled: Any = statement.compile(dialect=_PG)  # type: ignore[attr-defined]
    fixed = {name: bind.value for name, bind in compiled.binds.items() if not bind.required}
    return _Prepared(statement, str(compiled), tuple(compiled.positiontup or ()), fixed)


class Executor:
    conn: AsyncConnection
    _dialect: str
    _clock_us: Callable[[], int] | None
    _raw: Any = None

    def _statement(self, builder: Builder) -> _Prepared:
        test_clock = self._clock_us is not None
        key = (builder, self._dialect, test_clock)
        prepared = _prepared.get(key)
        if prepared is None:
            now: ColumnElement[Any] = (
                bindparam("now_us", type_=BigInteger)
                if test_clock
                else literal_column(_NOW_SQL[self._dialect], BigInteger)
            )
            prepared = _prepared[key] = _prepare(builder(now), self._dialect)
        return prepared

    def _with_clock(self, params: Mapping[str, Any]) -> dict[str, Any]:
        values = dict(params)
        if self._clock_us is not None:
            values["now_us"] = self._clock_us()
        return values

    async def _asyncpg(self) -> Any:
        """The asyncpg connection under this transaction, with the transaction begun."""
        if self._raw is None:
            adapted: Any = (await self.conn.get_raw_connection()).dbapi_connection
            if adapted._transaction is None:  # SQLAlchemy begins lazily, on the first statement
                await adapted._start_transaction()
            self._raw = adapted._connection
        return self._raw

    async def fetch(
        self, builder: Builder, params: Mapping[str, Any] | None = None
    ) -> list[Mapping[str, Any]]:
        prepared = self._statement(builder)
        values = self._with_clock(params or {})
        if self._dialect == "postgresql":
            values = {**prepared.fixed, **values}
            records = await (await self._asyncpg()).fetch(prepared.sql, *(values[n] for n in prepared.names))
            return [dict(r) for r in records]
        result = await self.conn.execute(prepared.statement, values)
        return [dict(r) for r in result.mappings()] if result.returns_rows else []

    async def fetch_one(
        self, builder: Builder, params: Mapping[str, Any] | None = None
    ) -> Mapping[str, Any] | None:
        rows = await self.fetch(builder, params)
        return rows[0] if rows else None

    async def execute_many(self, builder: Builder, rows: Sequence[Mapping[str, Any]]) -> None:
        prepared = self._statement(builder)
        if self._dialect == "postgresql":
            args = [tuple({**prepared.fixed, **r}[n] for n in prepared.names) for r in rows]
            await (await self._asyncpg()).executemany(prepared.sql, args)
            return
        await self.conn.execute(prepared.statement, [dict(r) for r in rows])
