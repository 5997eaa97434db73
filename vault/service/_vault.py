"""The vault's runtime: the store, the KEK provider, the DEK cache, the auditor and the sealer.

One :class:`Vault` is shared by both ASGI apps of a process. It holds no state that correctness depends
on: every invariant lives in the database. The sealer is a background task of every process; the chain
row's lock lets any number of them run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from vault.audit import AuditKeys
from vault.errors import (
    AuditChainBroken,
    VaultError,
)
from vault.keys import DekCache, KekProvider, LocalKeyringProvider, TransitProvider, load_audit_keys_file
from vault.service._audit import Auditor, utcnow
from vault.service._audit_log import AuditLog
from vault.service._ingest import SessionIntake
from vault.service._key_admin import KeyAdmin
from vault.service._leases import LeaseService
from vault.service._sealer import SealResult, seal
from vault.service._tokens import TokenService
from vault.settings import Settings
from vault.store import Store

__all__ = ["Vault", "utcnow"]

log = logging.getLogger("vault.audit")
_SEAL_BATCH = 5000


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Vault:
    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        kek: KekProvider,
        dek_cache: DekCache,
        audit_keys: AuditKeys,
        clock: Callable[[], datetime] = utcnow,
        actor_name: str | None = None,
    ) -> None:
        """``actor_name`` names the actor of events with no principal (the CLI's operator)."""
        self.settings = settings
        self.store = store
        self.kek = kek
        self.dek_cache = dek_cache
        self.audit_keys = audit_keys
        self.auditor = Auditor(
            audit_keys, actor_name=actor_name,
            clock_us=lambda: (clock() - _EPOCH) // timedelta(microseconds=1),
        )  # fmt: skip
        self.clock = clock
        self.max_lifetime = timedelta(seconds=settings.session_max_lifetime_seconds)
        # The services the API calls (it reaches nothing else of the vault).
        self.sessions = SessionIntake(
            store=store, kek=kek, cache=dek_cache, auditor=self.auditor, clock=clock,
            max_lifetime=self.max_lifetime,
        )  # fmt: skip
        # never more batches at once than connections (SQLite: one): the others would only queue for one
        inflight = min(settings.batch_max_inflight, store.connections)
        self.tokens = TokenService(
            store=store, auditor=self.auditor, clock=clock, batch_max_size=settings.batch_max_size,
            batch_max_inflight=inflight,
        )  # fmt: skip
        self.audit_log = AuditLog(
            store=store, auditor=self.auditor, hash_rate_limit=settings.audit_hash_rate_limit
        )
        self.leases = LeaseService(
            store=store,
            kek=kek,
            cache=dek_cache,
            auditor=self.auditor,
            max_ttl=settings.lease_max_ttl_seconds,
            max_lifetime=self.max_lifetime,
            clock=clock,
            batch_max_size=settings.batch_max_size,
            batch_max_wait=settings.batch_max_wait_ms / 1000,
            batch_max_inflight=inflight,
        )
        self.key_admin = KeyAdmin(store=store, kek=kek, cache=dek_cache, auditor=self.auditor, clock=clock)
        self._sealer: asyncio.Task[None] | None = None
        self._refused_rows: set[int] = set()  # forged audit rows already logged by this process

    @classmethod
    def from_settings(
        cls, settings: Settings, *, actor_name: str | None = None, clock: Callable[[], datetime] = utcnow
    ) -> Vault:
        """Build the runtime. Raises :class:`~vault.errors.ConfigError` on missing or bad configuration."""
        url = settings.require_database_url()
        audit_keys = load_audit_keys_file(settings.require_audit_keys_file())  # before the KMS client exists
        kek: KekProvider
        if settings.kek_provider == "transit":
            kek = TransitProvider.from_settings(settings)  # reads VAULT_TRANSIT_TOKEN_FILE once, here
        else:
            kek = LocalKeyringProvider.from_file(settings.require_keyring_file())
        return cls(
            settings=settings,
            store=Store.connect(url, pool_size=settings.db_pool_size),
            kek=kek,
            dek_cache=DekCache(
                ttl=settings.dek_cache_ttl_seconds, max_entries=settings.dek_cache_max_entries
            ),
            audit_keys=audit_keys,
            actor_name=actor_name,
            clock=clock,
        )

    def __repr__(self) -> str:
        return f"Vault(store={self.store.dialect!r}, kek={self.kek!r}, dek_cache={self.dek_cache!r})"

    def start(self) -> None:
        """Start the background sealer (unless sealing is switched off). Call from inside the event loop."""
        if self.settings.audit_seal_interval_seconds > 0 and self._sealer is None:
            self._sealer = asyncio.create_task(self._seal_forever(), name="audit-sealer")

    async def close(self) -> None:
        if self._sealer is not None:
            self._sealer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sealer
            self._sealer = None
        await self.leases.drain()
        await self.key_admin.close()
        self.dek_cache.clear()
        await self.kek.close()
        await self.store.close()

    async def seal(self, *, now_us: int | None = None) -> SealResult:
        """One sealing step (the background task calls this; so do tests and the CLI)."""
        every = int(self.settings.audit_checkpoint_interval_seconds * 1_000_000)
        return await seal(
            self.store, self.audit_keys, checkpoint_every_us=every, batch=_SEAL_BATCH,
            now_us=self.auditor.clock_us() if now_us is None else now_us,
            reported=self._refused_rows,
        )  # fmt: skip

    async def _seal_forever(self) -> None:
        last_problem: str | None = None  # each distinct failure is logged once, not every interval
        while True:
            problem = None
            try:
                result = await self.seal()
                if result.sealed == _SEAL_BATCH:
                    continue  # more are waiting
            except AuditChainBroken as exc:
                problem = f"audit sealing stopped: {exc.code}: {exc.detail}"
                if problem != last_problem:
                    log.error("%s", problem)
            except VaultError as exc:
                problem = f"audit sealing failed: {exc.code}"
                if problem != last_problem:
                    log.warning("%s", problem)
            except Exception as exc:  # keep sealing; never log the message (it may quote values)
                problem = f"audit sealing failed: {type(exc).__name__}"
                if problem != last_problem:
                    log.error("%s", problem)
            last_problem = problem
            await asyncio.sleep(self.settings.audit_seal_interval_seconds)

    async def ready(self) -> None:
        """Raises StoreUnavailable or KeyUnavailable (the KMS is unreachable, sealed or refuses)."""
        await self.store.ping()
        await self.kek.check()
