"""The vault's runtime: the store, the KEK provider, the DEK cache, the auditor and the sealer.

One :class:`Vault` is shared by both ASGI apps of a process. It holds no state that correctness depends
on: every invariant lives in the database. The sealer is a background task of every process; the chain
row's lock lets any number of them run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime

from vault.audit import AuditKeys
from vault.errors import AuthError, Forbidden, VaultError
from vault.keys import DekCache, KekProvider, LocalKeyringProvider, load_audit_keys_file
from vault.service._audit import Auditor, Context
from vault.service._ingest import IngestResult, ingest
from vault.service._leases import LeaseService
from vault.service._principal import Principal, Role
from vault.service._sealer import SealResult, seal
from vault.service._tokens import authenticate
from vault.settings import Settings
from vault.store import Store

__all__ = ["Vault", "utcnow"]

log = logging.getLogger("vault.audit")
_CLAIMED_ID = re.compile(r"svt_([0-9a-f]{16})_")
_SEAL_BATCH = 5000


def utcnow() -> datetime:
    return datetime.now(UTC)


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
    ) -> None:
        self.settings = settings
        self.store = store
        self.kek = kek
        self.dek_cache = dek_cache
        self.audit_keys = audit_keys
        self.auditor = Auditor(audit_keys)
        self.clock = clock
        self.leases = LeaseService(
            store=store,
            kek=kek,
            cache=dek_cache,
            auditor=self.auditor,
            max_ttl=settings.lease_max_ttl_seconds,
        )
        self._sealer: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Vault:
        """Build the runtime. Raises :class:`~vault.errors.ConfigError` on missing or bad configuration."""
        url = settings.require_database_url()
        kek = LocalKeyringProvider.from_file(settings.require_keyring_file())
        audit_keys = load_audit_keys_file(settings.require_audit_keys_file())
        return cls(
            settings=settings,
            store=Store.connect(url, pool_size=settings.db_pool_size),
            kek=kek,
            dek_cache=DekCache(
                ttl=settings.dek_cache_ttl_seconds, max_entries=settings.dek_cache_max_entries
            ),
            audit_keys=audit_keys,
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
        self.dek_cache.clear()
        await self.kek.close()
        await self.store.close()

    async def seal(self, *, now_us: int | None = None) -> SealResult:
        """One sealing step (the background task calls this; so do tests and the CLI)."""
        every = int(self.settings.audit_checkpoint_interval_seconds * 1_000_000)
        return await seal(
            self.store, self.audit_keys, checkpoint_every_us=every, now_us=now_us, batch=_SEAL_BATCH
        )

    async def _seal_forever(self) -> None:
        while True:
            try:
                result = await self.seal()
                if result.sealed == _SEAL_BATCH:
                    continue  # more are waiting
            except VaultError as exc:
                log.warning("audit sealing failed: %s", exc.code)
            except Exception as exc:  # keep sealing; never log the message (it may quote values)
                log.error("audit sealing failed: %s", type(exc).__name__)
            await asyncio.sleep(self.settings.audit_seal_interval_seconds)

    async def ingest(self, ctx: Context, serialized: str) -> IngestResult:
        return await ingest(
            self.store, self.kek, self.dek_cache, self.auditor, ctx, serialized, now=self.clock()
        )

    async def authenticate(self, token: str | None, role: Role, ctx: Context) -> Principal:
        """The principal for ``token`` if it has ``role``; failures are audited, then raised."""
        try:
            return await authenticate(self.store, token, role=role, now=self.clock())
        except AuthError as exc:
            claimed = _CLAIMED_ID.match(token or "")
            outcome = "denied" if isinstance(exc, Forbidden) else "unauthenticated"
            record = self.auditor.record(
                ctx, "auth.failure", outcome, detail=f"{exc.code}; needs {role.value}",
                actor_token_id=claimed.group(1) if claimed else None,
            )  # fmt: skip
            async with self.store.transaction() as tx:
                await tx.insert_audit(record)
            raise

    async def ready(self) -> None:
        await self.store.ping()
