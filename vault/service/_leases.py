"""Leases: release a decrypted session to one holder at a time, with fencing tokens and write-back.

Every decision runs in one transaction that holds the session's row lock and reads the database's
clock, and writes its audit event in that same transaction. A grant's plaintext is decrypted inside
the transaction but returned only after the commit (with its audit event) succeeded: if the audit
write fails, the transaction rolls back and nothing is released (fail-closed). Refusals are audited
too: their transaction commits the audit event, then the refusal is raised.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from vault.crypto import seal, session_aad
from vault.errors import (
    DecryptionError,
    InvalidRequest,
    InvalidSession,
    KeyUnavailable,
    LeaseLost,
    NoLease,
    PurposeNotAllowed,
    VaultError,
)
from vault.keys import DekCache, KekProvider
from vault.service._audit import Auditor, Context, utcnow
from vault.service._batch import Batcher
from vault.service._ids import PURPOSE_PATTERN
from vault.service._ingest import open_session
from vault.service._keys import KeyNeeded, Keys, active_dek, resolve_key, with_keys
from vault.service._lease_batch import (
    Grant,
    GrantJob,
    RowBusy,
    audit_grant_error,
    from_us,
    grant_batch,
    release_batch,
    release_refusal,
)
from vault.sessions import ParsedSession, parse_session, wallet_change
from vault.store import AuditRecord, GrantRequest, LockedLease, ReleaseRequest, Store, Tx, holder_refusal

__all__ = ["DEFAULT_TTL", "Grant", "LeaseService", "Renewal", "from_us"]

DEFAULT_TTL = 30
_KEY_ATTEMPTS = 3  # as with_keys: the first try, the one after resolving, one more if the key moved
_PURPOSE_RE = re.compile(PURPOSE_PATTERN)


@dataclass(frozen=True, slots=True)
class Renewal:
    lease_id: str
    expires_at: datetime


class LeaseService:
    def __init__(
        self,
        *,
        store: Store,
        kek: KekProvider,
        cache: DekCache,
        auditor: Auditor,
        max_ttl: int,
        max_lifetime: timedelta | None = None,
        clock: Callable[[], datetime] = utcnow,
        batch_max_size: int = 64,
        batch_max_wait: float = 0.0,
        batch_max_inflight: int = 1,
    ) -> None:
        """``clock`` dates write-backs and checks a refreshed session's expiry. Lease decisions (granted,
        expired, held, renewed) use the database's clock instead, on purpose: every replica must agree on
        them, whatever its own clock says. ``batch_*``: the group commit of grants and releases
        (:class:`~vault.service._batch.Batcher`; ``VAULT_BATCH_*``)."""
        self.clock = clock
        self.store = store
        self.kek = kek
        self.cache = cache
        self.auditor = auditor
        self.max_ttl = max_ttl
        self.max_lifetime = max_lifetime
        self._grants: Batcher[GrantJob, Grant] = Batcher(
            self._grant_batch, max_size=batch_max_size, max_wait=batch_max_wait,
            max_inflight=batch_max_inflight,
        )  # fmt: skip
        self._releases: Batcher[tuple[Context, ReleaseRequest], None] = Batcher(
            self._release_batch, max_size=batch_max_size, max_wait=batch_max_wait,
            max_inflight=batch_max_inflight,
        )  # fmt: skip

    async def drain(self) -> None:
        """Let the batches that are running finish (at shutdown)."""
        await self._grants.drain()
        await self._releases.drain()

    async def _check_request(
        self, ctx: Context, purpose: str, ttl_seconds: int | None, user_id: str | None, session_id: str | None
    ) -> int:
        """Validate purpose and TTL; return the TTL to use: 30 s by default, or the caller's lower maximum."""
        principal = ctx.principal
        assert principal is not None
        if not _PURPOSE_RE.fullmatch(purpose):
            raise InvalidRequest("purpose must be 1-64 letters, digits or ._:-")
        limit = min(self.max_ttl, principal.max_ttl_seconds or self.max_ttl)
        ttl = min(DEFAULT_TTL, limit) if ttl_seconds is None else ttl_seconds
        if not 1 <= ttl <= limit:
            raise InvalidRequest(f"ttl_seconds must be between 1 and {limit}")
        if principal.purposes is not None and purpose not in principal.purposes:
            error = PurposeNotAllowed()
            async with self.store.transaction() as tx:
                record = self.auditor.record(
                    ctx, "lease.grant", "denied", detail=error.code, purpose=purpose, user_id=user_id,
                    session_id=session_id,
                )  # fmt: skip
                await tx.insert_audit(record)
            raise error
        return ttl

    async def grant(
        self,
        ctx: Context,
        *,
        purpose: str,
        ttl_seconds: int | None = None,
        user_id: str | None = None,
        session_id: str | None = None,
        allow_wallet_changes: bool = False,
    ) -> Grant:
        """Lease a session (by id) or a user's newest session to ``ctx.principal``.

        Raises NoSession (404), SessionRevoked / SessionSuperseded / StoredSessionExpired (410), LeaseHeld
        (409), InvalidRequest (422), PurposeNotAllowed (403); AuditUnavailable or StoreUnavailable (503)
        with nothing released. A session that does not decrypt raises DecryptionError (500): no lease is
        kept, and the failure is audited (outcome ``error``) in a transaction of its own.

        Grants that arrive together are decided in one transaction (group commit, see
        :func:`grant_batch`); each gets its own lock, fencing token, lease and audit rows.
        """
        assert ctx.principal is not None and (user_id is None) != (session_id is None)
        ttl = await self._check_request(ctx, purpose, ttl_seconds, user_id, session_id)
        request = GrantRequest(
            session_id=session_id, user_id=user_id, lease_id=str(uuid.uuid4()),
            holder_token_id=ctx.principal.token_id, purpose=purpose, ttl_seconds=ttl,
            allow_wallet_changes=allow_wallet_changes,
        )  # fmt: skip
        keys = Keys(self.cache, self.kek)
        job = GrantJob(ctx, request, keys)
        for _ in range(_KEY_ATTEMPTS):
            try:
                try:
                    return await self._grants.submit(job)
                except RowBusy:  # its row is locked elsewhere: wait for it alone, holding up no batch
                    (alone,) = await grant_batch(self.store, self.auditor, [job], wait=True)
                    if isinstance(alone, BaseException):
                        raise alone from None
                    return alone
            except KeyNeeded as need:  # resolved here, with no transaction open and no batch waiting
                try:
                    await resolve_key(self.store, keys, need)
                except (DecryptionError, KeyUnavailable) as exc:  # a key that does not open, or a KMS away
                    await audit_grant_error(self.store, self.auditor, ctx, request, exc)
                    raise
        raise KeyUnavailable("the user's data key changed during the request; retry")

    async def _grant_batch(self, jobs: Sequence[GrantJob]) -> list[Grant | BaseException]:
        return await grant_batch(self.store, self.auditor, jobs)

    async def _release_batch(
        self, jobs: Sequence[tuple[Context, ReleaseRequest]]
    ) -> list[BaseException | None]:
        return await release_batch(self.store, self.auditor, jobs)

    def _holder_error(self, ctx: Context, state: LockedLease | None, fencing_token: int) -> VaultError | None:
        if state is None:
            return NoLease()
        assert ctx.principal is not None
        outcome = holder_refusal(state, ctx.principal.token_id, fencing_token)
        return None if outcome is None else release_refusal(outcome)

    async def _refuse(
        self,
        tx: Tx,
        ctx: Context,
        action: str,
        error: VaultError,
        state: LockedLease | None,
        lease_id: str,
        fence: int,
    ) -> None:
        lease = None if state is None else state.lease
        await tx.insert_audit(
            self.auditor.record(
                ctx, action, "denied", at_us=None if state is None else state.now_us, detail=error.code,
                lease_id=lease_id, fencing_token=fence, user_id=None if lease is None else lease.user_id,
                session_id=None if lease is None else lease.session_id,
            )
        )  # fmt: skip

    async def renew(self, ctx: Context, lease_id: str, *, fencing_token: int) -> Renewal:
        """Extend a lease by its TTL from now. NoLease (404), Forbidden (403), LeaseLost (409)."""
        async with self.store.transaction() as tx:
            state = await tx.lock_lease(lease_id)
            error = self._holder_error(ctx, state, fencing_token)
            if error is not None or state is None:
                error = error or NoLease()
                await self._refuse(tx, ctx, "lease.renew", error, state, lease_id, fencing_token)
            else:
                lease = state.lease
                expires_us = state.now_us + lease.ttl_seconds * 1_000_000
                await tx.extend_lease(lease_id, expires_us=expires_us)
                await tx.insert_audit(
                    self.auditor.record(
                        ctx, "lease.renew", "ok", at_us=state.now_us, lease_id=lease_id,
                        fencing_token=lease.fencing_token, user_id=lease.user_id, session_id=lease.session_id,
                        purpose=lease.purpose,
                    )
                )  # fmt: skip
        if error is not None:
            raise error
        return Renewal(lease_id=lease_id, expires_at=from_us(expires_us))

    async def release(
        self, ctx: Context, lease_id: str, *, fencing_token: int, session: str | None = None
    ) -> None:
        """End a lease, storing ``session`` (the refreshed session) as the session's next version.

        The refreshed session must pass ingest validation, belong to the same user and keep the stored
        session's wallet ids and signers (unless the grant allowed wallet changes), else InvalidSession /
        SessionExpired (422) and the lease is kept. NoLease, Forbidden and LeaseLost as
        for renew (checked first, so only the holder learns about its session); on any refusal nothing
        changes.
        """
        if session is None:  # a plain release: group-committed with the others that arrive together
            assert ctx.principal is not None
            request = ReleaseRequest(lease_id, ctx.principal.token_id, fencing_token)
            try:
                await self._releases.submit((ctx, request))
            except RowBusy:  # its row is locked elsewhere: wait for it alone, holding up no batch
                (error,) = await release_batch(self.store, self.auditor, [(ctx, request)], wait=True)
                if error is not None:
                    raise error from None
            return
        parsed, invalid = None, None
        if session is not None:
            try:
                parsed = parse_session(session, now=self.clock(), max_lifetime=self.max_lifetime)
            except InvalidSession as exc:
                invalid = exc
        try:
            error = await with_keys(
                self.store, self.kek, self.cache,
                lambda keys: self._release_in(keys, ctx, lease_id, fencing_token, session, parsed, invalid),
            )  # fmt: skip
        except (DecryptionError, KeyUnavailable) as exc:  # a key that does not open, or the KMS away: audited
            async with self.store.transaction() as tx:
                await tx.insert_audit(
                    self.auditor.record(ctx, "lease.release", "error", lease_id=lease_id,
                                        fencing_token=fencing_token, detail=exc.code)
                )  # fmt: skip
            raise
        if error is not None:
            raise error

    async def _release_in(
        self,
        keys: Keys,
        ctx: Context,
        lease_id: str,
        fencing_token: int,
        session: str | None,
        parsed: ParsedSession | None,
        invalid: VaultError | None,
    ) -> VaultError | None:
        async with self.store.transaction() as tx:
            if parsed is not None:  # a write-back may touch the user's keys: lock user, then session
                await tx.lock_user_of_lease(lease_id)
            state = await tx.lock_lease(lease_id)
            error = self._holder_error(ctx, state, fencing_token) or invalid
            if (
                error is None
                and state is not None
                and parsed is not None
                and parsed.user_id != state.lease.user_id
            ):
                error = InvalidSession("the refreshed session belongs to a different user")
            if (
                error is None
                and state is not None
                and parsed is not None
                and not state.lease.allow_wallet_changes
            ):
                error = await self._wallet_change(tx, keys, state, parsed)
            if error is not None or state is None:
                error = error or NoLease()
                await self._refuse(tx, ctx, "lease.release", error, state, lease_id, fencing_token)
            else:
                await self._finish(tx, keys, ctx, state, session if parsed is not None else None, parsed)
        return error

    async def _wallet_change(
        self, tx: Tx, keys: Keys, state: LockedLease, parsed: ParsedSession
    ) -> VaultError | None:
        """A refusal if ``parsed`` changes the stored session's wallet ids or drops a signer."""
        stored = await tx.session(state.lease.session_id)
        assert stored is not None  # sessions are never deleted
        current = parse_session(open_session(keys, stored), now=from_us(0))
        reason = wallet_change(current, parsed)
        return None if reason is None else InvalidSession(reason)

    async def _finish(
        self,
        tx: Tx,
        keys: Keys,
        ctx: Context,
        state: LockedLease,
        session: str | None,
        parsed: ParsedSession | None,
    ) -> None:
        """Write the refreshed session back (if any) as the next version, then end the lease."""
        lease = state.lease

        def event(action: str, detail: str | None = None) -> AuditRecord:
            return self.auditor.record(
                ctx, action, "ok", at_us=state.now_us, detail=detail, lease_id=lease.id,
                fencing_token=lease.fencing_token, user_id=lease.user_id, session_id=lease.session_id,
                purpose=lease.purpose,
            )  # fmt: skip

        if session is not None and parsed is not None:
            now = self.clock()
            dek_version, dek = await active_dek(tx, keys, lease.user_id, now=now)
            version = state.session_version + 1
            aad = session_aad(lease.user_id, lease.session_id, version)
            ciphertext = seal(session.encode(), key=dek.reveal(), key_version=dek_version, aad=aad)
            stored = await tx.write_back_session(
                session_id=lease.session_id,
                expected_version=state.session_version,
                dek_version=dek_version,
                ciphertext=ciphertext,
                session_format=parsed.format.value,
                has_signers=parsed.has_signers,
                expires_at=parsed.expires_at,
                now=now,
            )
            if not stored:  # cannot happen while we hold the lease and the row lock; refuse rather than guess
                raise LeaseLost()
            await tx.insert_audit(event("lease.write_back", f"version {version}"))
        await tx.end_lease(lease.id, now_us=state.now_us, reason="released")
        await tx.insert_audit(event("lease.release"))
