"""No key-provider call while a transaction is open, and one lock order (user, then session).

Before, a DEK was unwrapped inside the grant's (or ingest's, or write-back's) transaction: with a network
KMS, one slow call held a row lock and a pool connection, and with a small pool every other request,
token checks included, waited behind it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from tests.sessiongen import make_session, refresh_session
from vault.audit import AuditKeys
from vault.crypto import Keyring
from vault.errors import LeaseHeld, LeaseLost, SessionGone, StoreUnavailable
from vault.keys import DekCache, LocalKeyringProvider, WrappedKey
from vault.service import Auditor, Context, LeaseService, Principal, Role, authenticate, create_token, ingest
from vault.store import Store

SIGNER = Principal(token_id="7" * 16, name="signer", role=Role.SIGNER, purposes=None, max_ttl_seconds=None)
CTX = Context(principal=SIGNER, request_id="t", source="127.0.0.1")


class StallingKek(LocalKeyringProvider):
    """The local keyring, except that unwrapping for ``stalled_user`` waits until the test lets it go."""

    def __init__(self, keyring: Keyring) -> None:
        super().__init__(keyring)
        self.stalled_user: bytes | None = None
        self.entered = asyncio.Event()
        self.go = asyncio.Event()

    async def unwrap(self, wrapped: WrappedKey, *, aad: bytes) -> bytes:
        if self.stalled_user is not None and self.stalled_user in aad:
            self.entered.set()
            await self.go.wait()
        return await super().unwrap(wrapped, aad=aad)


class StallingRemoteKek(StallingKek):
    """A provider that claims to be remote (a KMS): its wrap of a new user's first DEK waits too."""

    @property
    def local(self) -> bool:
        return False

    async def wrap(self, dek: bytes, *, aad: bytes) -> WrappedKey:
        if self.stalled_user is not None and self.stalled_user in aad:
            self.entered.set()
            await self.go.wait()
        return await super().wrap(dek, aad=aad)


@dataclass
class World:
    store: Store
    kek: StallingKek
    cache: DekCache
    auditor: Auditor
    leases: LeaseService

    async def ingest(self, session: str) -> None:
        await ingest(
            self.store, self.kek, self.cache, self.auditor, Context(), session, now=datetime.now(UTC)
        )


@asynccontextmanager
async def _world(url: str, pool_size: int, kek_type: type[StallingKek] = StallingKek) -> AsyncIterator[World]:
    store = Store.connect(url, pool_size=pool_size)
    kek = kek_type(Keyring.generate())
    cache = DekCache(ttl=60, max_entries=100)
    auditor = Auditor(AuditKeys.generate())
    leases = LeaseService(store=store, kek=kek, cache=cache, auditor=auditor, max_ttl=300)
    try:
        yield World(store, kek, cache, auditor, leases)
    finally:
        await store.close()


def test_a_stalled_key_provider_delays_no_other_user(db_url: str) -> None:
    """Pool of one connection: while user A's DEK unwrap hangs, user B's grant and a token check finish."""

    async def run() -> None:
        async with _world(db_url, pool_size=1) as w:
            a_session, a = make_session(431)
            b_session, b = make_session(432)
            await w.ingest(a_session)
            await w.ingest(b_session)
            token, _ = await create_token(
                w.store, w.auditor, Context(), role=Role.AUDITOR, name="t", now=datetime.now(UTC)
            )
            w.cache.clear()
            grant_b_key = await w.leases.grant(CTX, purpose="warm", user_id=b["userId"])  # B's DEK cached
            await w.leases.release(CTX, grant_b_key.lease_id, fencing_token=grant_b_key.fencing_token)
            w.kek.stalled_user = a["userId"].encode()
            stalled = asyncio.create_task(w.leases.grant(CTX, purpose="sign", user_id=a["userId"]))
            await asyncio.wait_for(w.kek.entered.wait(), 10)  # A is inside the KEK call now
            # Before: A's transaction held the only connection during the call, and these waited for it.
            other = await asyncio.wait_for(w.leases.grant(CTX, purpose="sign", user_id=b["userId"]), 10)
            principal = await asyncio.wait_for(
                authenticate(w.store, w.auditor.keys, token, role=Role.AUDITOR, now=datetime.now(UTC)), 10
            )
            assert other.user_id == b["userId"] and principal.role is Role.AUDITOR
            assert not stalled.done()
            w.kek.go.set()
            granted = await asyncio.wait_for(stalled, 10)
            assert granted.session == a_session

    asyncio.run(run())


def test_a_remote_providers_wrap_for_a_new_user_happens_outside_the_transaction(db_url: str) -> None:
    """A KMS wrap of a new user's first DEK that hangs holds no connection: others are served meanwhile."""

    async def run() -> None:
        async with _world(db_url, pool_size=1, kek_type=StallingRemoteKek) as w:
            b_session, b = make_session(434)
            await w.ingest(b_session)
            new_session, new = make_session(435)
            w.kek.stalled_user = new["userId"].encode()
            stalled = asyncio.create_task(w.ingest(new_session))
            await asyncio.wait_for(w.kek.entered.wait(), 10)
            other = await asyncio.wait_for(w.leases.grant(CTX, purpose="sign", user_id=b["userId"]), 10)
            assert other.session == b_session and not stalled.done()
            w.kek.go.set()
            await asyncio.wait_for(stalled, 10)
            granted = await w.leases.grant(CTX, purpose="sign", user_id=new["userId"])
            assert granted.session == new_session

    asyncio.run(run())


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_write_back_and_ingest_of_one_user_never_deadlock(db_url: str) -> None:
    """Ingest locks the user, then the sessions it supersedes; a write-back locks the user first too."""

    async def run() -> None:
        async with _world(db_url, pool_size=4) as w:
            first, body = make_session(433)
            await w.ingest(first)
            failures: list[BaseException] = []

            async def ingests() -> None:
                for i in range(40):
                    await w.ingest(refresh_session(body, 1000 + i)[0])

            async def write_backs() -> None:
                for i in range(40):
                    try:
                        grant = await w.leases.grant(CTX, purpose="sign", user_id=body["userId"])
                        refreshed = refresh_session(body, 2000 + i)[0]
                        await w.leases.release(
                            CTX, grant.lease_id, fencing_token=grant.fencing_token, session=refreshed
                        )
                    except (SessionGone, LeaseLost, LeaseHeld):
                        pass  # superseded, or held by the other loop: answers, not a deadlock
                    except StoreUnavailable as exc:  # PostgreSQL's deadlock detector answers this way
                        failures.append(exc)

            await asyncio.wait_for(asyncio.gather(ingests(), write_backs(), write_backs()), 120)
            assert failures == []

    asyncio.run(run())
