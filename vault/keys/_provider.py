"""The key-encryption-key (KEK) provider interface.

A provider wraps and unwraps data keys (DEKs). It never sees session data. Implementations: the local
keyring (``_local.py``); a KMS (OpenBao Transit) comes later behind the same interface.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["KekProvider", "WrappedKey"]


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A DEK as stored: the provider's key id and version, and the opaque wrapped bytes."""

    kek_id: str
    kek_version: int
    blob: bytes = field(repr=False)


class KekProvider(Protocol):
    """Wraps DEKs under a KEK. ``aad`` names the owner so a wrapped key cannot be moved to another user.

    Raises :class:`~vault.errors.KeyUnavailable` when the KEK cannot be reached and
    :class:`~vault.errors.DecryptionError` when a wrapped key does not unwrap.
    """

    @property
    def kek_id(self) -> str: ...

    @property
    def local(self) -> bool:
        """True when wrapping is CPU work in this process (no I/O, so it cannot stall): a new user's
        first DEK may then be wrapped inside the ingest transaction. A KMS provider answers False."""
        ...

    async def wrap(self, dek: bytes, *, aad: bytes) -> WrappedKey: ...

    async def unwrap(self, wrapped: WrappedKey, *, aad: bytes) -> bytes: ...

    async def close(self) -> None: ...
