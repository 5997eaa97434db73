"""Key management for admins: KEK status, rotation, rewrap and retirement; DEK rotation; crypto-shredding.

Every operation writes its audit event (``key.rotate``, ``key.rewrap``, ``key.retire``,
``user.rotate_dek``, ``user.shred``) in the transaction of what it records; the KEK provider's own
changes (a new version, a raised minimum decryption version) happen in the KMS, right before that
transaction. As everywhere, no KEK call runs with a transaction open (see :mod:`vault.service._keys`):
rewrap reads a batch, rewraps it with no transaction open, then stores each result with a
compare-and-set, so rewrap runs online beside ingest and leases, is idempotent, and resumes after a kill
by simply running again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from vault.crypto import dek_aad, seal, session_aad, unseal
from vault.errors import InvalidRequest, KeyUnavailable, NotFound, UserShredded, VaultError
from vault.keys import DekCache, KekProvider, KekStatus, WrappedKey
from vault.service._audit import Auditor, Context
from vault.service._keys import KeyNeeded, Keys, insert_new_key, with_keys
from vault.store import KekCount, Store

__all__ = ["DekRotation", "KeyAdmin", "KeysStatus", "RewrapProgress", "Shredded"]

log = logging.getLogger("vault.keys")


@dataclass(frozen=True, slots=True)
class KeysStatus:
    """The KEK as the provider reports it, and the live DEKs per KEK id and version."""

    kek: KekStatus
    counts: tuple[KekCount, ...]

    @property
    def total(self) -> int:
        return sum(c.deks for c in self.counts)

    @property
    def stale(self) -> int:
        """DEKs not wrapped under the active version of the active KEK (what a rewrap would move)."""
        kek = self.kek
        return sum(
            c.deks for c in self.counts if c.kek_id == kek.kek_id and c.kek_version < kek.active_version
        )

    @property
    def foreign(self) -> int:
        """DEKs under another KEK id (another provider or key): this vault cannot rewrap them."""
        return sum(c.deks for c in self.counts if c.kek_id != self.kek.kek_id)


@dataclass(slots=True)
class RewrapProgress:
    """A rewrap run so far. ``remaining`` was counted when the run started."""

    remaining: int
    rewrapped: int = 0
    failed: int = 0  # did not unwrap: left as they were, counted, never retried in this run
    skipped: int = 0  # changed meanwhile (rotated, shredded): nothing to do
    batches: int = 0
    dry_run: bool = False

    @property
    def done(self) -> int:
        return self.rewrapped + self.failed + self.skipped


@dataclass(frozen=True, slots=True)
class DekRotation:
    user_id: str
    dek_version: int
    sessions: int
    destroyed: tuple[int, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class Shredded:
    user_id: str
    sessions: int
    keys: int
    leases: int


class KeyAdmin:
    """The admin's key operations, for the CLI and the admin API."""

    def __init__(
        self,
        *,
        store: Store,
        kek: KekProvider,
        cache: DekCache,
        auditor: Auditor,
        clock: Callable[[], datetime],
    ) -> None:
        self.store = store
        self.kek = kek
        self.cache = cache
        self.auditor = auditor
        self.clock = clock
        self._kek_seen: KekStatus | None = None  # the provider's last answer, for progress during an outage
        self.background: RewrapProgress | None = None  # this process's last background rewrap
        self.background_error: str | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def rewrapping(self) -> bool:
        """Whether this process runs a background rewrap now."""
        return self._task is not None and not self._task.done()

    def start_rewrap(self, ctx: Context, *, batch: int = 500) -> bool:
        """Start a background rewrap in this process (for the admin API); False if one runs already.
        Progress is in :attr:`background`; any replica's status shows what is left (:meth:`status`)."""
        if self.rewrapping:
            return False
        if not 1 <= batch <= 10_000:
            raise InvalidRequest("batch must be between 1 and 10000")
        self.background, self.background_error = RewrapProgress(remaining=0), None

        def seen(progress: RewrapProgress) -> None:
            self.background = progress

        async def run() -> None:
            try:
                await self.rewrap(ctx, batch=batch, progress=seen)
            except VaultError as exc:
                self.background_error = exc.code
                log.warning("background rewrap stopped: %s", exc.code)
            except Exception as exc:  # logged by type only: a message may quote values
                self.background_error = "internal"
                log.error("background rewrap failed: %s", type(exc).__name__)

        self._task = asyncio.create_task(run(), name="kek-rewrap")
        return True

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def status(self) -> KeysStatus:
        kek = await self.kek.status()
        self._kek_seen = kek
        async with self.store.transaction() as tx:
            counts = await tx.kek_counts()
        return KeysStatus(kek=kek, counts=tuple(counts))

    async def stale(self) -> int | None:
        """Data keys still under an older KEK version: from the database, against the provider's active
        version, or its last known one while the KMS cannot be reached (None if never known). Rewrap
        progress stays readable during an outage."""
        try:
            return (await self.status()).stale
        except KeyUnavailable:
            if self._kek_seen is None:
                return None
            async with self.store.transaction() as tx:
                counts = await tx.kek_counts()
            return KeysStatus(kek=self._kek_seen, counts=tuple(counts)).stale

    async def rotate_kek(self, ctx: Context) -> KeysStatus:
        """Make a new KEK version active: new DEKs are wrapped under it at once, on every replica."""
        version = await self.kek.rotate()
        async with self.store.transaction() as tx:
            await tx.insert_audit(
                self.auditor.record(ctx, "key.rotate", "ok", detail=f"{self.kek.kek_id} version {version}")
            )
        return await self.status()

    async def rewrap(
        self,
        ctx: Context,
        *,
        batch: int = 500,
        dry_run: bool = False,
        progress: Callable[[RewrapProgress], None] | None = None,
    ) -> RewrapProgress:
        """Rewrap every live DEK of this KEK that is under an older version, ``batch`` at a time.

        Each batch: read (short transaction), rewrap (KEK call, no transaction), store each result only
        if its row still holds the wrapped key that was rewrapped, and audit the batch's counts, in one
        transaction. A DEK that does not unwrap is counted as failed and left alone.
        """
        if not 1 <= batch <= 10_000:
            raise InvalidRequest("batch must be between 1 and 10000")
        state = await self.status()  # one KMS read: the active version this run rewraps to
        kek = state.kek
        run = RewrapProgress(remaining=state.stale, dry_run=dry_run)
        if progress is not None:
            progress(run)
        cursor = ("", 0)
        while True:
            async with self.store.transaction() as tx:
                rows = await tx.stale_keys(kek.kek_id, kek.active_version, after=cursor, limit=batch)
            if not rows:
                break
            cursor = (rows[-1].user_id, rows[-1].dek_version)
            run.batches += 1
            if dry_run:
                run.skipped += len(rows)
                if progress is not None:
                    progress(run)
                continue
            wrapped = [WrappedKey(r.kek_id, r.kek_version, r.wrapped_dek) for r in rows]
            aads = [dek_aad(r.user_id, r.dek_version) for r in rows]
            results = await self.kek.rewrap(list(zip(wrapped, aads, strict=True)))
            stored = failed = skipped = 0
            async with self.store.transaction() as tx:
                for row, new in zip(rows, results, strict=True):
                    if new is None:
                        failed += 1
                    elif await tx.replace_wrapped(row, new.blob, new.kek_version):
                        stored += 1
                    else:
                        skipped += 1
                await tx.insert_audit(
                    self.auditor.record(
                        ctx, "key.rewrap", "ok" if failed == 0 else "error",
                        detail=f"{kek.kek_id} to version {kek.active_version}: {stored} rewrapped,"
                        f" {failed} failed, {skipped} skipped",
                    )
                )  # fmt: skip
            run.rewrapped += stored
            run.failed += failed
            run.skipped += skipped
            if progress is not None:
                progress(run)
        return run

    async def retire_kek(self, ctx: Context, through_version: int) -> KeysStatus:
        """Stop every KEK version up to ``through_version`` from unwrapping; refused while a DEK needs one."""
        kek = await self.kek.status()
        if not 1 <= through_version < kek.active_version:
            raise InvalidRequest(f"only versions below the active one ({kek.active_version}) can be retired")
        async with self.store.transaction() as tx:
            dependents = await tx.kek_dependents(kek.kek_id, through_version)
        if dependents:
            raise InvalidRequest(
                f"{dependents} data keys still depend on KEK version {through_version} or older:"
                " run `session-vault keys rewrap` first"
            )
        await self.kek.retire(through_version)
        async with self.store.transaction() as tx:
            late = await tx.kek_dependents(kek.kek_id, through_version)
            await tx.insert_audit(
                self.auditor.record(
                    ctx, "key.retire", "ok" if late == 0 else "error",
                    detail=f"{kek.kek_id} through version {through_version}"
                    + ("" if late == 0 else f"; {late} data keys were wrapped under it meanwhile"),
                )
            )  # fmt: skip
        if late:
            log.error("key retirement raced with %d new data keys under a retired version", late)
        return await self.status()

    async def rotate_dek(self, ctx: Context, user_id: str) -> DekRotation:
        """Re-encrypt the user's stored sessions under a new DEK version, then destroy the older ones.

        Session versions do not change, so a lease in progress keeps its write-back (which seals under
        the active DEK when it lands). Lock order: the user, then the user's sessions.
        """

        async def attempt(keys: Keys) -> DekRotation:
            now = self.clock()
            async with self.store.transaction() as tx:
                if await tx.max_dek_version(user_id) == 0:
                    raise NotFound("no such user")
                await tx.ensure_user_locked(user_id, now)
                if await tx.active_user_key(user_id) is None:
                    raise UserShredded()
                sessions = await tx.lock_user_sessions(user_id)
                opened = [
                    (s, unseal(s.ciphertext, key=keys.get(user_id, s.dek_version).reveal(),
                               aad=session_aad(user_id, s.id, s.version)))
                    for s in sessions
                ]  # fmt: skip
                await tx.retire_active_key(user_id)
                version, dek = await insert_new_key(tx, keys, user_id, now=now)
                for session, plaintext in opened:
                    sealed = seal(plaintext, key=dek.reveal(), key_version=version,
                                  aad=session_aad(user_id, session.id, session.version))  # fmt: skip
                    if not await tx.reseal_session(session.id, session.version, version, sealed):
                        raise KeyNeeded(user_id, session.dek_version)  # cannot happen under the locks
                destroyed = await tx.destroy_user_keys(user_id, below=version)
                await tx.insert_audit(
                    self.auditor.record(
                        ctx, "user.rotate_dek", "ok", user_id=user_id,
                        detail=f"dek version {version}; {len(opened)} sessions re-encrypted;"
                        f" {len(destroyed)} keys destroyed",
                    )
                )  # fmt: skip
            for old in destroyed:
                self.cache.drop(user_id, old)
            await self._forget()
            return DekRotation(user_id, version, len(opened), tuple(destroyed))

        return await with_keys(self.store, self.kek, self.cache, attempt)

    async def shred(self, ctx: Context, user_id: str) -> Shredded:
        """Destroy every DEK and stored session ciphertext of the user; end their open leases."""
        now = self.clock()
        async with self.store.transaction() as tx:
            if await tx.max_dek_version(user_id) == 0:
                raise NotFound("no such user")
            await tx.ensure_user_locked(user_id, now)
            sessions, keys, leases = await tx.shred_user(user_id, now)
            await tx.insert_audit(
                self.auditor.record(
                    ctx, "user.shred", "ok", user_id=user_id,
                    detail=f"{sessions} sessions, {keys} keys destroyed; {leases} leases ended",
                )
            )  # fmt: skip
        self.cache.drop_user(user_id)
        await self._forget()
        return Shredded(user_id, sessions, keys, leases)

    async def _forget(self) -> None:
        if not await self.store.forget_old_pages():
            log.warning("destroyed data stays in the SQLite WAL file until its next checkpoint (readers)")
