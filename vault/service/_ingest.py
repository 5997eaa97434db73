"""Ingest: validate a serialized session, encrypt it under the user's DEK, store it, supersede older ones."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from vault.crypto import seal, session_aad, unseal
from vault.errors import DecryptionError, InvalidSession, KeyUnavailable
from vault.keys import DekCache, KekProvider
from vault.service._audit import Auditor, Context
from vault.service._keys import Keys, active_dek, with_keys
from vault.sessions import ParsedSession, parse_session
from vault.store import LockedSession, SessionRow, Store

__all__ = ["IngestResult", "SessionIntake", "ingest", "open_session"]


@dataclass(frozen=True, slots=True)
class IngestResult:
    session_id: str
    user_id: str
    format: str
    has_signers: bool
    expires_at: datetime | None
    superseded: tuple[str, ...]


async def ingest(
    store: Store,
    kek: KekProvider,
    cache: DekCache,
    auditor: Auditor,
    ctx: Context,
    serialized: str,
    *,
    now: datetime,
    max_lifetime: timedelta | None = None,
) -> IngestResult:
    """Store ``serialized`` as the user's newest session, in one transaction.

    Raises :class:`~vault.errors.InvalidSession` / :class:`~vault.errors.SessionExpired` before touching
    the database, and :class:`~vault.errors.StoreUnavailable` / :class:`~vault.errors.KeyUnavailable` /
    :class:`~vault.errors.AuditUnavailable` with the transaction rolled back: on any failure no user, key
    or session row is written. A refused session is audited (in its own transaction) and re-raised.
    """
    try:
        parsed = parse_session(serialized, now=now, max_lifetime=max_lifetime)
    except InvalidSession as exc:
        async with store.transaction() as tx:
            await tx.insert_audit(auditor.record(ctx, "session.ingest", "denied", detail=exc.code))
        raise
    session_id = str(uuid.uuid4())
    try:
        return await with_keys(
            store,
            kek,
            cache,
            lambda keys: _store(store, keys, auditor, ctx, serialized, parsed, session_id, now),
        )
    except (DecryptionError, KeyUnavailable) as exc:  # a DEK that does not unwrap, or the KMS away: audited
        async with store.transaction() as tx:
            await tx.insert_audit(
                auditor.record(ctx, "session.ingest", "error", user_id=parsed.user_id, detail=exc.code)
            )
        raise


async def _store(
    store: Store,
    keys: Keys,
    auditor: Auditor,
    ctx: Context,
    serialized: str,
    parsed: ParsedSession,
    session_id: str,
    now: datetime,
) -> IngestResult:
    async with store.transaction() as tx:
        await tx.ensure_user_locked(parsed.user_id, now)
        dek_version, dek = await active_dek(tx, keys, parsed.user_id, now=now)
        ciphertext = seal(
            serialized.encode(),
            key=dek.reveal(),
            key_version=dek_version,
            aad=session_aad(parsed.user_id, session_id, 1),
        )
        superseded = await tx.supersede_active_sessions(parsed.user_id, now)
        for old in superseded:
            await tx.insert_audit(
                auditor.record(ctx, "session.supersede", "ok", user_id=parsed.user_id, session_id=old,
                               detail=f"by {session_id}")
            )  # fmt: skip
        await tx.insert_audit(
            auditor.record(ctx, "session.ingest", "ok", user_id=parsed.user_id, session_id=session_id,
                           detail=parsed.format.value, subjects=parsed.subjects)
        )  # fmt: skip
        await tx.insert_session(
            SessionRow(
                id=session_id,
                user_id=parsed.user_id,
                version=1,
                dek_version=dek_version,
                format=parsed.format.value,
                has_signers=parsed.has_signers,
                status="active",
                created_at=now,
                updated_at=now,
                expires_at=parsed.expires_at,
                ciphertext=ciphertext,
            )
        )
    return IngestResult(
        session_id=session_id,
        user_id=parsed.user_id,
        format=parsed.format.value,
        has_signers=parsed.has_signers,
        expires_at=parsed.expires_at,
        superseded=tuple(superseded),
    )


def open_session(keys: Keys, row: SessionRow | LockedSession) -> str:
    """Decrypt a stored session with a resolved DEK (no I/O). Raises :class:`~vault.errors.DecryptionError`
    on any mismatch, :class:`KeyNeeded` if the DEK is not resolved yet."""
    dek = keys.get(row.user_id, row.dek_version)
    plaintext = unseal(row.ciphertext, key=dek.reveal(), aad=session_aad(row.user_id, row.id, row.version))
    return plaintext.decode()


class SessionIntake:
    """Ingest for the API: both ingest routes call :meth:`ingest`."""

    def __init__(
        self,
        *,
        store: Store,
        kek: KekProvider,
        cache: DekCache,
        auditor: Auditor,
        clock: Callable[[], datetime],
        max_lifetime: timedelta,
    ) -> None:
        self.store = store
        self.kek = kek
        self.cache = cache
        self.auditor = auditor
        self.clock = clock
        self.max_lifetime = max_lifetime

    async def ingest(self, ctx: Context, serialized: str) -> IngestResult:
        return await ingest(
            self.store, self.kek, self.cache, self.auditor, ctx, serialized, now=self.clock(),
            max_lifetime=self.max_lifetime,
        )  # fmt: skip
