"""The lease baseline: the vault's own store statements and decrypt, called directly, no HTTP.

What the baseline is for: the floor under a lease-and-release cycle, the work no implementation of
this API can skip. Per cycle: check the token, lock the session, insert the lease, insert the audit
event, commit, decrypt the session; then check the token again, lock the lease, end it, insert the audit
event, commit. bench/lease.py reports the vault against it ("rate vs. baseline", "CPU vs. baseline").

It runs exactly the vault's statements, so it cannot drift from the vault's SQL: a
:class:`vault.store.Store` on the path's database (its own asyncpg pool, as a vault process has) and
the :class:`vault.store.Tx` methods the lease service calls, in the same order:

- token check: ``Tx.token`` in a transaction of its own (as every vault request authenticates), and
  the row must be an unrevoked signer token. Not done: the SHA-256 compare of the secret and the
  row's MAC check (``vault.service.authenticate`` does those: microseconds of CPU, no database work);
- grant transaction (``LeaseService._grant_in``): ``peek_session`` (by user), ``lock_session`` (the
  row lock, then the clock and the open lease), ``end_lease`` and a ``lease.takeover`` event if that
  lease has expired, ``insert_lease``, ``insert_audit``, then the session decrypt inside the
  transaction (``vault.service.open_session``, with the DEK from the vault's ``DekCache`` at the
  vault's default size and TTL, empty at the start and kept across the baseline's runs as a vault
  process keeps its own; a miss is resolved outside the transaction by ``vault.service.with_keys``,
  as the vault does), commit. A lease found held is a refusal with its
  ``denied`` event, as in the vault;
- release transaction (``LeaseService._release_in``, no write-back): ``lock_lease``, the holder and
  fencing checks, ``end_lease``, ``insert_audit``, commit.

Audit events are :class:`vault.store.AuditRecord` rows with the fields the vault fills, but their MAC
is random bytes: the canonical JSON and HMAC of ``vault.service.Auditor`` are left out (no vault
process runs on the baseline's database, so no sealer checks them). No HTTP, no FastAPI, no JSON, no
request validation.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from bench._lease_load import PURPOSE, TOKEN_NAME, TTL_SECONDS, Cycle, Tally
from vault.errors import VaultError
from vault.keys import DekCache, LocalKeyringProvider
from vault.service import Keys, open_session, with_keys
from vault.settings import Settings
from vault.store import AuditRecord, Store, Tx

__all__ = ["BASELINE", "POOL", "Baseline", "Caller", "baseline_cycle", "dek_cache"]

BASELINE = "baseline asyncpg"
# The baseline's connections at most: the default pool of the two vault processes of a run
# (VAULT_DB_POOL_SIZE, 10 each).
POOL = 2 * int(Settings.model_fields["db_pool_size"].default)
MAC_BYTES = 32  # HMAC-SHA256


@dataclass(frozen=True)
class Caller:
    """What the vault knows about the caller and the request: the values its audit rows carry."""

    token_id: str
    name: str = TOKEN_NAME
    source: str = "127.0.0.1"

    def event(
        self,
        action: str,
        outcome: str,
        at_us: int,
        user_id: str,
        session_id: str,
        *,
        lease_id: str | None = None,
        fencing_token: int | None = None,
        detail: str | None = None,
    ) -> AuditRecord:
        """An audit row as the vault writes it (at the database's clock), with random bytes for its MAC."""
        return AuditRecord(
            uid=os.urandom(16).hex(), at_us=at_us, action=action, outcome=outcome,
            actor_token_id=self.token_id, actor_name=self.name, user_id=user_id, session_id=session_id,
            lease_id=lease_id, fencing_token=fencing_token, purpose=PURPOSE, detail=detail,
            request_id=str(uuid.uuid4()), source=self.source, mac=os.urandom(MAC_BYTES),
        )  # fmt: skip


def dek_cache() -> DekCache:
    """A DEK cache as a vault process has with the default settings."""
    fields = Settings.model_fields
    return DekCache(
        ttl=float(fields["dek_cache_ttl_seconds"].default),
        max_entries=int(fields["dek_cache_max_entries"].default),
    )


@dataclass(frozen=True)
class Baseline:
    """What the baseline's cycles share: the store on the path's database, the KEK, the DEK cache."""

    store: Store
    kek: LocalKeyringProvider
    cache: DekCache
    caller: Caller

    @classmethod
    def connect(cls, db_url: str, pool_size: int, keyring: Path, cache: DekCache, caller: Caller) -> Baseline:
        """``db_url``: a ``postgresql+asyncpg://`` URL."""
        return cls(Store.connect(db_url, pool_size=pool_size), LocalKeyringProvider.from_file(keyring), cache,
                   caller)  # fmt: skip

    async def close(self) -> None:
        await self.store.close()

    async def authenticate(self) -> None:
        async with self.store.transaction() as tx:
            row = await tx.token(self.caller.token_id)
        if row is None or row.role != "signer" or row.revoked_at is not None:
            raise RuntimeError("the signer token is missing from the baseline's database")

    async def grant(self, user_id: str) -> tuple[str, int] | None:
        """The grant: (lease id, fencing token), or None if the lease is held (audited as denied)."""

        async def attempt(keys: Keys) -> tuple[str, int] | None:
            async with self.store.transaction() as tx:
                return await self._grant_in(tx, keys, user_id)

        return await with_keys(self.store, self.kek, self.cache, attempt)

    async def _grant_in(self, tx: Tx, keys: Keys, user_id: str) -> tuple[str, int] | None:
        event = self.caller.event
        peek = await tx.peek_session(user_id=user_id)
        if peek is None or peek.status != "active":
            raise RuntimeError(f"user {user_id} has no active session in the baseline's database")
        user, session = peek.user_id, peek.id

        async def held(at_us: int) -> None:  # the refusal, audited as the vault does
            await tx.insert_audit(event("lease.grant", "denied", at_us, user, session, detail="lease_held"))

        if peek.lease_expires_us is not None and peek.lease_expires_us > peek.now_us:
            await held(peek.now_us)
            return None
        found = await tx.lock_session(peek.id)
        assert found is not None  # sessions are never deleted
        locked, current = found
        now_us = locked.now_us
        if current is not None and current.expires_us > now_us:
            await held(now_us)
            return None
        keys.get(locked.user_id, locked.dek_version)  # KeyNeeded before any write, as in the vault
        if current is not None:
            await tx.end_lease(current.id, now_us=now_us, reason="expired")
            await tx.insert_audit(
                event("lease.takeover", "ok", now_us, user, session, lease_id=current.id,
                      fencing_token=current.fencing_token)
            )  # fmt: skip
        lease_id = str(uuid.uuid4())
        fence = await tx.insert_lease(
            lease_id=lease_id,
            session=locked,
            holder_token_id=self.caller.token_id,
            purpose=PURPOSE,
            ttl_seconds=TTL_SECONDS,
        )
        await tx.insert_audit(
            event("lease.grant", "ok", now_us, user, session, lease_id=lease_id, fencing_token=fence)
        )
        open_session(keys, locked)  # the plaintext, decrypted inside the transaction as the vault does
        return lease_id, fence

    async def release(self, lease_id: str, fencing_token: int) -> None:
        """The release transaction of ``LeaseService.release`` without write-back."""
        async with self.store.transaction() as tx:
            state = await tx.lock_lease(lease_id)
            if state is None:
                raise RuntimeError(f"lease {lease_id} vanished")
            lease = state.lease
            if (
                lease.holder_token_id != self.caller.token_id
                or lease.ended_us is not None
                or lease.expires_us <= state.now_us
                or lease.fencing_token != fencing_token
            ):
                raise RuntimeError(f"lease {lease_id} was lost")
            await tx.end_lease(lease_id, now_us=state.now_us, reason="released")
            await tx.insert_audit(
                self.caller.event(
                    "lease.release", "ok", state.now_us, lease.user_id, lease.session_id, lease_id=lease_id,
                    fencing_token=fencing_token,
                )
            )  # fmt: skip


def baseline_cycle(baseline: Baseline) -> Cycle:
    """Token check + grant (the grant latency), token check + release."""

    async def cycle(user_id: str, tally: Tally) -> None:
        try:
            started = time.perf_counter()
            await baseline.authenticate()
            granted = await baseline.grant(user_id)
            grant_seconds = time.perf_counter() - started
            if granted is None:
                tally.held += 1
                return
            await baseline.authenticate()
            await baseline.release(*granted)
        except VaultError as exc:  # StoreUnavailable, KeyUnavailable, AuditUnavailable, ...
            tally.failed(f"baseline {exc.code}")
            return
        tally.done(grant_seconds)

    return cycle
