"""Logs and exceptions never carry values: no session, token, parameter value or SQL text.

Each test plants a canary where a leak would show it (a refused database write's parameters, an
unhandled exception's message, a malformed session), captures every log record at DEBUG from every
logger, and looks for the canary, and for SQL, in the records; and for the canary in the whole chain of
the exception that reached the caller. (aiosqlite logs every statement with its parameters at DEBUG:
the vault holds that logger at INFO.)
"""

from __future__ import annotations

import asyncio
import base64
import logging
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from tests.sessiongen import make_session
from vault.api import create_internal_app, create_public_app
from vault.errors import StoreUnavailable
from vault.service import Vault
from vault.settings import Settings
from vault.store import SessionRow, Store

CANARY = "canary-7f3a9c1e-must-never-be-logged"
SQL_WORDS = ("INSERT INTO", "SELECT ", "UPDATE ", "VALUES")


def _records_text(caplog: pytest.LogCaptureFixture) -> str:
    parts = []
    for record in caplog.records:
        parts.append(record.getMessage())
        if record.exc_info is not None:
            parts.append(logging.Formatter().formatException(record.exc_info))
        if record.exc_text:
            parts.append(record.exc_text)
    return "\n".join(parts)


def _chain_text(exc: BaseException | None) -> str:
    parts = []
    while exc is not None:
        parts += [str(exc), repr(exc)]
        # What a traceback shows, and so what a log handler would write.
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return "\n".join(parts)


def _clean(text: str, *, sql_allowed: bool = False) -> None:
    assert CANARY not in text
    assert CANARY.encode().hex() not in text
    for word in () if sql_allowed else SQL_WORDS:
        assert word not in text, word


def test_a_database_error_logs_no_parameter_or_sql(db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    now = datetime.now(UTC)
    row = SessionRow(
        id="d" * 36, user_id=CANARY, version=1, dek_version=1, format="para", has_signers=True,
        status="active", created_at=now, updated_at=now, expires_at=None, ciphertext=CANARY.encode(),
    )  # fmt: skip

    async def run() -> None:
        store = Store.connect(db_url, pool_size=1)
        try:
            async with store.transaction() as tx:
                await tx.insert_session(row)  # the user does not exist: the foreign key refuses it
        finally:
            await store.close()

    with pytest.raises(StoreUnavailable) as caught:
        asyncio.run(run())
    assert "database error" in caplog.text  # the failure is logged, by type
    _clean(_records_text(caplog))
    _clean(_chain_text(caught.value))


def test_an_unhandled_error_in_a_route_is_logged_by_type_only(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    async def run() -> httpx.Response:
        vault = Vault.from_settings(settings)
        try:

            async def broken() -> None:
                raise RuntimeError(f"a bug whose message quotes a secret: {CANARY}")

            vault.ready = broken  # type: ignore[method-assign]
            app = create_internal_app(settings, vault=vault)
            app.state.vault = vault
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://vault"
            ) as c:
                return await c.get("/readyz")
        finally:
            await vault.close()

    answer = asyncio.run(run())
    assert answer.status_code == 500 and answer.json() == {"error": "internal", "detail": "internal error"}
    assert "unhandled error: RuntimeError" in caplog.text
    _clean(_records_text(caplog))
    _clean(answer.text)


def test_a_bad_session_logs_nothing_of_it(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    _, body = make_session(441)
    body["wallets"] = CANARY  # malformed: not an object
    bad = base64.b64encode(__import__("json").dumps(body).encode()).decode()

    async def run() -> httpx.Response:
        vault = Vault.from_settings(settings)
        try:
            app = create_public_app(settings, vault=vault)
            app.state.vault = vault
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://vault"
            ) as c:
                return await c.post("/api/import-session", json={"session": bad})
        finally:
            await vault.close()

    answer = asyncio.run(run())
    assert answer.status_code == 422, answer.text
    _clean(_records_text(caplog))
    _clean(answer.text)
    assert bad[:40] not in _records_text(caplog)


def test_the_engine_hides_parameters_in_its_errors(db_url: str) -> None:
    """Every SQLAlchemy path (SQLite, migrations on either backend) builds errors without bound values."""

    async def run() -> None:
        store = Store.connect(db_url, pool_size=1)
        try:
            async with store.engine.connect() as conn:
                await conn.execute(text("SELECT * FROM no_such_table WHERE id = :v"), {"v": CANARY})
        finally:
            await store.close()

    with pytest.raises(DBAPIError) as caught:
        asyncio.run(run())
    assert "no_such_table" in str(caught.value)  # the message is there; the value is not
    _clean(str(caught.value), sql_allowed=True)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_driver_error_that_quotes_a_value_is_logged_by_type_only(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """asyncpg's own messages can quote a value (``invalid input for query argument $1: '...'``): the
    store logs the error's type and SQLSTATE, never its text (``%r`` or ``%s`` of it would leak)."""
    from sqlalchemy import Integer, bindparam, select

    caplog.set_level(logging.DEBUG)

    async def run() -> None:
        store = Store.connect(db_url, pool_size=1)
        try:
            async with store.transaction() as tx:
                # A value of the wrong type reaching the driver (a bug): asyncpg refuses it, quoting it.
                await tx.fetch_query(select(bindparam("v", value=CANARY, type_=Integer).label("v")))
        finally:
            await store.close()

    with pytest.raises(StoreUnavailable) as caught:
        asyncio.run(run())
    assert "database error: DataError" in caplog.text
    _clean(_records_text(caplog), sql_allowed=True)
    _clean(_chain_text(caught.value), sql_allowed=True)
