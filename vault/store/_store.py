"""Queries. The only module that speaks SQL; callers get plain rows and :class:`~vault.errors.VaultError`s.

Transaction boundaries belong to the service layer: it opens ``store.transaction()`` and calls the
methods of the :class:`Tx` it gets. Database errors become :class:`StoreUnavailable` without their text
(which can carry SQL and values).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from vault.errors import StoreUnavailable, VaultError
from vault.store._audit import AuditQueries
from vault.store._engine import make_engine
from vault.store._leases import LeaseQueries
from vault.store._models import ServiceToken, SessionRecord, User, UserKey
from vault.store._rows import SessionRow, TokenRow, UserKeyRow

__all__ = ["Store", "Tx"]

log = logging.getLogger("vault.store")

_SESSIONS = SessionRecord.__table__
_TOKENS = ServiceToken.__table__


class Store:
    """A handle on the database. Safe to share between tasks; each transaction takes its own connection."""

    def __init__(self, engine: AsyncEngine, *, clock_us: Callable[[], int] | None = None) -> None:
        """``clock_us`` replaces the database's clock for lease decisions: for tests only."""
        self.engine = engine
        self.dialect = engine.dialect.name
        self.clock_us = clock_us

    @classmethod
    def connect(cls, url: str, *, pool_size: int = 10, clock_us: Callable[[], int] | None = None) -> Store:
        return cls(make_engine(url, pool_size=pool_size), clock_us=clock_us)

    async def close(self) -> None:
        await self.engine.dispose()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        """One database transaction: committed if the block succeeds, rolled back if it raises."""
        try:
            async with self.engine.begin() as conn:
                yield Tx(conn, self.dialect, self.clock_us)
        except VaultError:
            raise
        except (DBAPIError, SQLAlchemyError, OSError) as exc:
            # The type and SQLSTATE say what went wrong; the message could carry values, so it is not logged.
            orig = getattr(exc, "orig", None)
            log.warning(
                "database error: %s (sqlstate %s)",
                type(orig or exc).__name__,
                getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None),
            )
            raise StoreUnavailable() from exc

    async def ping(self) -> None:
        async with self.transaction() as tx:
            await tx.conn.execute(text("SELECT 1"))


class Tx(LeaseQueries, AuditQueries):
    """The queries available inside one transaction."""

    def __init__(
        self, conn: AsyncConnection, dialect: str, clock_us: Callable[[], int] | None = None
    ) -> None:
        self.conn = conn
        self._dialect = dialect
        self._clock_us = clock_us

    # users and keys -------------------------------------------------------------------------------

    async def ensure_user_locked(self, user_id: str, now: datetime) -> None:
        """Create the user if missing and hold its row lock until commit.

        Serialises everything that changes one user's sessions or keys (ingest, supersede, rotation).
        On PostgreSQL this is ``SELECT ... FOR UPDATE``; on SQLite ``BEGIN IMMEDIATE`` already holds the
        database write lock for the whole transaction.
        """
        upsert = postgresql.insert if self._dialect == "postgresql" else sqlite.insert
        await self.conn.execute(
            upsert(User).values(id=user_id, created_at=now).on_conflict_do_nothing(index_elements=["id"])
        )
        query = select(User.id).where(User.id == user_id)
        if self._dialect == "postgresql":
            query = query.with_for_update()
        await self.conn.execute(query)

    async def active_user_key(self, user_id: str) -> UserKeyRow | None:
        result = await self.conn.execute(
            select(UserKey.__table__).where(UserKey.user_id == user_id, UserKey.status == "active")
        )
        row = result.mappings().first()
        return None if row is None else UserKeyRow(**row)

    async def user_key(self, user_id: str, dek_version: int) -> UserKeyRow | None:
        result = await self.conn.execute(
            select(UserKey.__table__).where(UserKey.user_id == user_id, UserKey.dek_version == dek_version)
        )
        row = result.mappings().first()
        return None if row is None else UserKeyRow(**row)

    async def insert_user_key(self, row: UserKeyRow) -> None:
        await self.conn.execute(
            insert(UserKey).values(
                user_id=row.user_id,
                dek_version=row.dek_version,
                wrapped_dek=row.wrapped_dek,
                kek_id=row.kek_id,
                kek_version=row.kek_version,
                status=row.status,
                created_at=row.created_at,
            )
        )

    # sessions ---------------------------------------------------------------------------------------

    async def supersede_active_sessions(self, user_id: str, now: datetime) -> list[str]:
        """Mark every active session of the user superseded; return their ids."""
        result = await self.conn.execute(
            select(SessionRecord.id).where(SessionRecord.user_id == user_id, SessionRecord.status == "active")
        )
        ids = list(result.scalars())
        if ids:
            await self.conn.execute(
                update(SessionRecord)
                .where(SessionRecord.id.in_(ids))
                .values(status="superseded", updated_at=now)
            )
        return ids

    async def insert_session(self, row: SessionRow) -> None:
        await self.conn.execute(
            insert(SessionRecord).values(
                id=row.id,
                user_id=row.user_id,
                version=row.version,
                dek_version=row.dek_version,
                format=row.format,
                has_signers=row.has_signers,
                status=row.status,
                created_at=row.created_at,
                updated_at=row.updated_at,
                expires_at=row.expires_at,
                ciphertext=row.ciphertext,
            )
        )

    async def session(self, session_id: str) -> SessionRow | None:
        result = await self.conn.execute(select(_SESSIONS).where(SessionRecord.id == session_id))
        row = result.mappings().first()
        return None if row is None else SessionRow(**row)

    async def sessions_of_user(self, user_id: str) -> list[SessionRow]:
        result = await self.conn.execute(
            select(_SESSIONS)
            .where(SessionRecord.user_id == user_id)
            .order_by(SessionRecord.created_at.desc(), SessionRecord.id)
        )
        return [SessionRow(**row) for row in result.mappings()]

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
        result = await self.conn.execute(
            update(SessionRecord)
            .where(SessionRecord.id == session_id, SessionRecord.version == expected_version)
            .values(
                version=expected_version + 1,
                dek_version=dek_version,
                ciphertext=ciphertext,
                format=session_format,
                has_signers=has_signers,
                expires_at=expires_at,
                updated_at=now,
            )
        )
        return bool(result.rowcount)

    # service tokens ---------------------------------------------------------------------------------

    async def insert_token(self, row: TokenRow) -> None:
        await self.conn.execute(
            insert(ServiceToken).values(
                id=row.id,
                name=row.name,
                role=row.role,
                secret_hash=row.secret_hash,
                purposes=None if row.purposes is None else json.dumps(list(row.purposes)),
                max_ttl_seconds=row.max_ttl_seconds,
                created_at=row.created_at,
                expires_at=row.expires_at,
                revoked_at=row.revoked_at,
            )
        )

    async def token(self, token_id: str) -> TokenRow | None:
        result = await self.conn.execute(select(_TOKENS).where(ServiceToken.id == token_id))
        row = result.mappings().first()
        return None if row is None else _token_row(row)

    async def tokens(self) -> list[TokenRow]:
        result = await self.conn.execute(select(_TOKENS).order_by(ServiceToken.created_at))
        return [_token_row(row) for row in result.mappings()]

    async def revoke_token(self, token_id: str, now: datetime) -> bool:
        result = await self.conn.execute(
            update(ServiceToken)
            .where(ServiceToken.id == token_id, ServiceToken.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        return bool(result.rowcount)


def _token_row(row: Any) -> TokenRow:
    values = dict(row)
    purposes = values.pop("purposes")
    return TokenRow(**values, purposes=None if purposes is None else tuple(json.loads(purposes)))
