"""How a :class:`~vault.store.Tx` runs its statements, through public driver APIs only.

Every statement is built once (per dialect, and per clock kind: the database's, or a test clock passed
as a parameter) with named bind parameters, so SQLAlchemy's per-call construction and cache-key work is
not paid on the hot path.

- **PostgreSQL**: the vault owns an asyncpg pool. A statement is compiled once to SQL text with ``$n``
  placeholders and run with ``Connection.fetch``; transactions and savepoints are asyncpg's
  ``Connection.transaction()``. Bound values go through the same bind processors SQLAlchemy would apply
  (``TypeEngine.bind_processor``), so a value is accepted or refused alike on both backends (a naive
  datetime is refused by :class:`~vault.store.UtcDateTime` on both).
- **SQLite**: SQLAlchemy's public async API (``AsyncConnection.execute``, ``begin``, ``begin_nested``).

Before any value reaches either driver it is checked against the column type it binds to, the same way
on both backends: a string longer than its ``String(n)``, holding a NUL or a lone surrogate, or an
integer outside its column's range raises ``ValueError``. PostgreSQL would refuse (or, for trailing
spaces, silently trim) such a value and SQLite would store it; the vault validates input at the API
boundary, so reaching this check is a bug in the vault, never an outage.

Errors are translated where the library is called, and nowhere else (as httpx does around httpcore): a
driver or connection error becomes :class:`~vault.errors.StoreUnavailable` (its text, which can quote
SQL or values, is never logged: only its type and SQLSTATE); anything raised by the caller's own code in
a transaction passes through unchanged, so a bug is a 500, not an outage.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from sqlalchemy import BigInteger, ColumnElement, Integer, String, bindparam, literal_column
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Executable

from vault.errors import StoreUnavailable

__all__ = ["Builder", "Executor", "translated"]

log = logging.getLogger("vault.store")

_NOW_SQL = {
    "postgresql": "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)",
    "sqlite": "CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)",
}
_PG = asyncpg_dialect()  # type: ignore[no-untyped-call]
_SQLITE = sqlite_dialect()
_INT_RANGE = {Integer: 2**31 - 1, BigInteger: 2**63 - 1}
# What the drivers raise when the database refuses a statement or the connection fails.
_DRIVER_ERRORS = (DBAPIError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)

# A statement builder gets the expression for "now, in microseconds" and returns the statement.
Builder = Callable[[ColumnElement[Any]], Executable]


@contextmanager
def translated() -> Iterator[None]:
    """Around one library call: driver and connection errors become StoreUnavailable; a value the
    SQLAlchemy bind processors refuse (SQLite) is re-raised as the processor's own error, as on PostgreSQL."""
    try:
        yield
    except _DRIVER_ERRORS as exc:
        orig = getattr(exc, "orig", None) or exc
        sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
        log.warning("database error: %s (sqlstate %s)", type(orig).__name__, sqlstate)
        # from None: the driver's text can quote values (asyncpg's includes the DETAIL line, "Key
        # (user_id)=(...)"), so it is neither the cause nor shown as the context; type and SQLSTATE suffice.
        raise StoreUnavailable() from None
    except StatementError as exc:  # raised before the driver ran: a bug in what the vault passed
        if exc.orig is not None:
            raise exc.orig from None
        raise


def _bound(type_: Any) -> Callable[[Any], None] | None:
    """The check a value bound to a column of ``type_`` must pass, or None for unbounded types."""
    impl = getattr(type_, "impl", type_)  # a TypeDecorator's underlying type
    if isinstance(impl, String):
        length = impl.length

        def text(value: Any) -> None:
            if isinstance(value, str):
                if length is not None and len(value) > length:
                    raise ValueError(f"a value longer than its column's {length} characters")
                if "\x00" in value:
                    raise ValueError("a value with a NUL character")
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    raise ValueError("a value that is not valid Unicode") from None

        return text
    for kind, limit in _INT_RANGE.items():
        if type(impl) is kind:

            def number(value: Any, limit: int = limit) -> None:
                if isinstance(value, int) and not -limit - 1 <= value <= limit:
                    raise ValueError("an integer outside its column's range")

            return number
    return None


@dataclass(frozen=True, slots=True)
class _Prepared:
    statement: Executable
    checks: dict[str, Callable[[Any], None]] = field(default_factory=dict)  # per bind parameter
    sql: str = ""  # PostgreSQL only: the compiled text with $n placeholders ...
    names: tuple[str, ...] = ()  # ... the bind parameter behind each $n ...
    processors: tuple[Callable[[Any], Any] | None, ...] = ()  # ... its bind processor ...
    fixed: dict[str, Any] = field(default_factory=dict)  # ... and the values of literals in the statement

    def check(self, values: Mapping[str, Any]) -> None:
        for name, value in values.items():
            check = self.checks.get(name)
            if check is not None and value is not None:
                check(value)

    def args(self, values: Mapping[str, Any]) -> list[Any]:
        self.check(values)
        merged = {**self.fixed, **values}
        out = []
        for name, process in zip(self.names, self.processors, strict=True):
            value = merged[name]
            out.append(value if process is None or value is None else process(value))
        return out


_prepared: dict[tuple[Builder, str, bool], _Prepared] = {}


def _prepare(statement: Executable, dialect: str) -> _Prepared:
    compiled: Any = statement.compile(dialect=_PG if dialect == "postgresql" else _SQLITE)  # type: ignore[attr-defined]
    checks = {name: c for name, bind in compiled.binds.items() if (c := _bound(bind.type)) is not None}
    fixed = {name: bind.value for name, bind in compiled.binds.items() if not bind.required}
    prepared = _Prepared(statement, checks)
    prepared.check(fixed)  # literals in a statement built per call (auditors' filters)
    if dialect != "postgresql":
        return prepared
    names = tuple(compiled.positiontup or ())
    processors = tuple(compiled.binds[name].type.bind_processor(_PG) for name in names)
    return _Prepared(statement, checks, str(compiled), names, processors, fixed)


class Executor:
    """The statements of one transaction. Exactly one of ``_pg`` (asyncpg) and ``_sa`` (SQLite) is set."""

    _dialect: str
    _clock_us: Callable[[], int] | None
    _pg: asyncpg.Connection | None = None
    _sa: AsyncConnection | None = None

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

    async def _run(self, prepared: _Prepared, values: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        if self._pg is not None:
            args = prepared.args(values)  # outside translated(): a refused value is the caller's bug
            with translated():
                records = await self._pg.fetch(prepared.sql, *args)
            return [dict(r) for r in records]
        assert self._sa is not None
        prepared.check(values)
        with translated():
            result = await self._sa.execute(prepared.statement, dict(values))
            return [dict(r) for r in result.mappings()] if result.returns_rows else []

    async def fetch(
        self, builder: Builder, params: Mapping[str, Any] | None = None
    ) -> list[Mapping[str, Any]]:
        return await self._run(self._statement(builder), self._with_clock(params or {}))

    async def fetch_one(
        self, builder: Builder, params: Mapping[str, Any] | None = None
    ) -> Mapping[str, Any] | None:
        rows = await self.fetch(builder, params)
        return rows[0] if rows else None

    async def fetch_query(self, query: Executable) -> list[Mapping[str, Any]]:
        """Run a statement built for this call only (auditors' filtered reads: not the hot path)."""
        prepared = _prepare(query, self._dialect)
        return await self._run(prepared, {})

    async def execute_many(self, builder: Builder, rows: Sequence[Mapping[str, Any]]) -> None:
        prepared = self._statement(builder)
        if self._pg is not None:
            args = [prepared.args(r) for r in rows]
            with translated():
                await self._pg.executemany(prepared.sql, args)
            return
        assert self._sa is not None
        for row in rows:
            prepared.check(row)
        with translated():
            await self._sa.execute(prepared.statement, [dict(r) for r in rows])

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        """A savepoint: if the block raises, only its own statements are undone, and the error propagates;
        the transaction goes on (a batch of grants survives one grant's failure)."""
        if self._pg is not None:
            nested = self._pg.transaction()  # inside a transaction, asyncpg makes this a SAVEPOINT
            with translated():
                await nested.start()
            try:
                yield
            except BaseException:
                with translated():
                    await nested.rollback()
                raise
            with translated():
                await nested.commit()
            return
        assert self._sa is not None
        with translated():
            sqlite_nested = await self._sa.begin_nested()
        try:
            yield
        except BaseException:
            with translated():
                await sqlite_nested.rollback()
            raise
        with translated():
            await sqlite_nested.commit()
