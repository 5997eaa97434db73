"""Per-user data keys, resolved before the transaction that uses them: no KEK call under a lock.

A transaction never calls the key-encryption-key provider over the network (a KMS, later): a KEK call
that stalls while the transaction holds row locks and a pool connection would stall every other request.
(One exception, for a provider that wraps in process memory (``KekProvider.local``, the local keyring):
a new user's first DEK is wrapped inside the ingest transaction, which saves that ingest a second
transaction and cannot stall.)
Inside a transaction a DEK comes only from :class:`Keys` (what this request resolved already) or the DEK
cache; a miss raises :class:`KeyNeeded`, which rolls the transaction back. :func:`with_keys` then
resolves that key with no transaction open (one short read of the wrapped key, then the KEK call) and
runs the transaction again, which re-reads the key's version under its locks. If the version moved in
between (a rotation, or another request created the user's first key), it resolves again: once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from vault.crypto import SecretBytes, dek_aad, generate_key
from vault.errors import DecryptionError, KeyUnavailable
from vault.keys import DekCache, KekProvider, WrappedKey
from vault.store import Store, Tx, UserKeyRow

__all__ = [
    "KeyNeeded", "Keys", "NewKey", "active_dek", "insert_new_key", "new_key", "resolve_key", "with_keys",
]  # fmt: skip

T = TypeVar("T")
_ATTEMPTS = 3  # the first try, the one after resolving, and one more if the key moved meanwhile


class KeyNeeded(Exception):
    """Control flow inside the service layer: this transaction needs a DEK nobody resolved yet.
    ``version`` None: the user needs a new key (none yet, or all destroyed by a shred, or a rotation),
    which must be generated and wrapped for the version after the user's highest."""

    def __init__(self, user_id: str, version: int | None) -> None:
        super().__init__("a data key must be resolved before the transaction")
        self.user_id = user_id
        self.version = version


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly generated DEK, wrapped for ``version``, not stored yet."""

    version: int
    dek: SecretBytes = field(repr=False)
    wrapped: WrappedKey = field(repr=False)


@dataclass(eq=False)
class Keys:
    """The DEKs one request resolved outside its transaction, in front of the shared DEK cache."""

    cache: DekCache
    kek: KekProvider
    found: dict[tuple[str, int], SecretBytes] = field(default_factory=dict, repr=False)
    new: dict[str, NewKey] = field(default_factory=dict, repr=False)

    def get(self, user_id: str, version: int) -> SecretBytes:
        """The DEK, without any I/O; :class:`KeyNeeded` if it has not been resolved."""
        dek = self.found.get((user_id, version)) or self.cache.get(user_id, version)
        if dek is None:
            raise KeyNeeded(user_id, version)
        return dek


async def active_dek(tx: Tx, keys: Keys, user_id: str, *, now: datetime) -> tuple[int, SecretBytes]:
    """The user's active DEK (version, key), inserting the one resolved for a user that has none (new,
    or shredded). Call with the user's row locked. No KEK call: :class:`KeyNeeded` when the key is not
    resolved yet."""
    row = await tx.active_user_key(user_id)
    if row is not None:
        return row.dek_version, keys.get(user_id, row.dek_version)
    return await insert_new_key(tx, keys, user_id, now=now)


async def insert_new_key(tx: Tx, keys: Keys, user_id: str, *, now: datetime) -> tuple[int, SecretBytes]:
    """Store the user's next DEK version as its active key (the caller retires the previous one first).
    Call with the user's row locked. Versions are never reused: the next is the highest ever + 1."""
    version = await tx.max_dek_version(user_id) + 1
    prepared = keys.new.get(user_id)
    if (prepared is None or prepared.version != version) and keys.kek.local:
        # Wrapping cannot stall: no second transaction for a new user.
        await new_key(keys, user_id, version)
        prepared = keys.new[user_id]
    if prepared is None or prepared.version != version:
        raise KeyNeeded(user_id, None)
    wrapped = prepared.wrapped
    await tx.insert_user_key(
        UserKeyRow(
            user_id=user_id, dek_version=version, wrapped_dek=wrapped.blob, kek_id=wrapped.kek_id,
            kek_version=wrapped.kek_version, status="active", created_at=now,
        )
    )  # fmt: skip
    return version, prepared.dek  # not cached: the transaction may still roll back


async def new_key(keys: Keys, user_id: str, version: int) -> None:
    """Generate a DEK for ``version`` and wrap it (a KEK call: never with a transaction open, unless
    the provider is local)."""
    fresh = generate_key()
    wrapped = await keys.kek.wrap(fresh, aad=dek_aad(user_id, version))
    keys.new[user_id] = NewKey(version, SecretBytes(fresh), wrapped)


async def resolve_key(store: Store, keys: Keys, need: KeyNeeded) -> None:
    """With no transaction open: unwrap the needed DEK (or make the user's next one)."""
    if need.version is None:
        async with store.transaction() as tx:
            highest = await tx.max_dek_version(need.user_id)
        await new_key(keys, need.user_id, highest + 1)
        return
    async with store.transaction() as tx:
        row = await tx.user_key(need.user_id, need.version)
    if row is None or row.status == "destroyed":
        raise DecryptionError()
    wrapped = WrappedKey(kek_id=row.kek_id, kek_version=row.kek_version, blob=row.wrapped_dek)
    dek = SecretBytes(await keys.kek.unwrap(wrapped, aad=dek_aad(row.user_id, row.dek_version)))
    keys.found[(row.user_id, row.dek_version)] = dek
    keys.cache.put(row.user_id, row.dek_version, dek)


async def with_keys(
    store: Store, kek: KekProvider, cache: DekCache, attempt: Callable[[Keys], Awaitable[T]]
) -> T:
    """Run ``attempt`` (which opens its own transaction) until no key it needs is missing.

    Raises :class:`KeyUnavailable` if the key still moved after one retry (the caller may retry), and
    whatever ``attempt`` or the KEK provider raise.
    """
    keys = Keys(cache, kek)
    for _ in range(_ATTEMPTS):
        try:
            return await attempt(keys)
        except KeyNeeded as need:
            await resolve_key(store, keys, need)
    raise KeyUnavailable("the user's data key changed during the request; retry")
