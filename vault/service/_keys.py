"""Per-user data keys: created on a user's first ingest, unwrapped through the KEK provider, cached."""

from __future__ import annotations

from datetime import datetime

from vault.crypto import SecretBytes, dek_aad, generate_key
from vault.errors import DecryptionError
from vault.keys import DekCache, KekProvider, WrappedKey
from vault.store import Tx, UserKeyRow

__all__ = ["active_dek", "dek_by_version"]


async def active_dek(
    tx: Tx, kek: KekProvider, cache: DekCache, user_id: str, *, now: datetime
) -> tuple[int, SecretBytes]:
    """The user's active DEK, created and wrapped on first use. Call with the user's row locked."""
    row = await tx.active_user_key(user_id)
    if row is None:
        dek = generate_key()
        wrapped = await kek.wrap(dek, aad=dek_aad(user_id, 1))
        await tx.insert_user_key(
            UserKeyRow(
                user_id=user_id,
                dek_version=1,
                wrapped_dek=wrapped.blob,
                kek_id=wrapped.kek_id,
                kek_version=wrapped.kek_version,
                status="active",
                created_at=now,
            )
        )
        # Not cached yet: the transaction may still roll back.
        return 1, SecretBytes(dek)
    return row.dek_version, await _unwrap(row, kek, cache)


async def dek_by_version(
    tx: Tx, kek: KekProvider, cache: DekCache, user_id: str, version: int
) -> SecretBytes:
    cached = cache.get(user_id, version)
    if cached is not None:
        return cached
    row = await tx.user_key(user_id, version)
    if row is None:
        raise DecryptionError()
    return await _unwrap(row, kek, cache)


async def _unwrap(row: UserKeyRow, kek: KekProvider, cache: DekCache) -> SecretBytes:
    cached = cache.get(row.user_id, row.dek_version)
    if cached is not None:
        return cached
    wrapped = WrappedKey(kek_id=row.kek_id, kek_version=row.kek_version, blob=row.wrapped_dek)
    dek = SecretBytes(await kek.unwrap(wrapped, aad=dek_aad(row.user_id, row.dek_version)))
    cache.put(row.user_id, row.dek_version, dek)
    return dek
