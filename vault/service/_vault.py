"""The vault's runtime: the store, the KEK provider and the DEK cache, built from settings.

One :class:`Vault` is shared by both ASGI apps of a process. It holds no state that correctness depends
on: every invariant lives in the database.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from vault.keys import DekCache, KekProvider, LocalKeyringProvider
from vault.service._ingest import IngestResult, ingest
from vault.service._leases import LeaseService
from vault.service._tokens import Principal, Role, authenticate
from vault.settings import Settings
from vault.store import Store

__all__ = ["Vault", "utcnow"]


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
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.store = store
        self.kek = kek
        self.dek_cache = dek_cache
        self.clock = clock
        self.leases = LeaseService(
            store=store, kek=kek, cache=dek_cache, max_ttl=settings.lease_max_ttl_seconds
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Vault:
        """Build the runtime. Raises :class:`~vault.errors.ConfigError` on missing or bad configuration."""
        url = settings.require_database_url()
        kek = LocalKeyringProvider.from_file(settings.require_keyring_file())
        return cls(
            settings=settings,
            store=Store.connect(url, pool_size=settings.db_pool_size),
            kek=kek,
            dek_cache=DekCache(
                ttl=settings.dek_cache_ttl_seconds, max_entries=settings.dek_cache_max_entries
            ),
        )

    def __repr__(self) -> str:
        return f"Vault(store={self.store.dialect!r}, kek={self.kek!r}, dek_cache={self.dek_cache!r})"

    async def close(self) -> None:
        self.dek_cache.clear()
        await self.kek.close()
        await self.store.close()

    async def ingest(self, serialized: str) -> IngestResult:
        return await ingest(self.store, self.kek, self.dek_cache, serialized, now=self.clock())

    async def authenticate(self, token: str | None, role: Role) -> Principal:
        return await authenticate(self.store, token, role=role, now=self.clock())

    async def ready(self) -> None:
        await self.store.ping()
