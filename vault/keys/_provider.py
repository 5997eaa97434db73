"""The key-encryption-key (KEK) provider interface.

A provider wraps and unwraps data keys (DEKs). It never sees session data. Implementations: the local
keyring (``_local.py``) and OpenBao / HashiCorp Vault Transit (``_transit.py``).

KEK versions: a provider wraps under its active version and unwraps with any version that has not been
retired. Rotation adds a version; rewrap moves wrapped DEKs to the active version; retirement stops old
versions from unwrapping. The provider does not know the database: the caller
(:mod:`vault.service._key_admin`) makes sure no DEK still depends on a version before retiring it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["KekProvider", "KekStatus", "WrappedKey"]


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A DEK as stored: the provider's key id and version, and the opaque wrapped bytes."""

    kek_id: str
    kek_version: int
    blob: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class KekStatus:
    """The KEK's versions: new wraps use ``active_version``; ``versions`` (ascending) can still unwrap,
    none of them below ``min_decryption_version``."""

    kek_id: str
    active_version: int
    min_decryption_version: int
    versions: tuple[int, ...]


class KekProvider(Protocol):
    """Wraps DEKs under a KEK. ``aad`` names the owner so a wrapped key cannot be moved to another user.

    Raises :class:`~vault.errors.KeyUnavailable` when the KEK cannot be reached and
    :class:`~vault.errors.DecryptionError` when a wrapped key does not unwrap (including one wrapped
    under a retired version: that DEK can no longer be opened, which is not an outage).
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

    async def status(self) -> KekStatus: ...

    async def rewrap(self, items: Sequence[tuple[WrappedKey, bytes]]) -> list[WrappedKey | None]:
        """Each ``(wrapped, aad)`` wrapped again under the active version, in the same order; ``None``
        for an item that does not unwrap. :class:`~vault.errors.KeyUnavailable` if the KEK cannot be
        reached (then nothing is returned: the caller retries the batch)."""
        ...

    async def rotate(self) -> int:
        """Make a new KEK version active and return it."""
        ...

    async def retire(self, through_version: int) -> None:
        """Stop every version ``<= through_version`` from unwrapping. :class:`~vault.errors.InvalidRequest`
        unless ``1 <= through_version < active_version``. Never re-enables a version retired before."""
        ...

    async def check(self) -> None:
        """Startup and readiness: :class:`~vault.errors.ConfigError` if the KEK is misconfigured (no such
        key, a key that cannot bind the owner), :class:`~vault.errors.KeyUnavailable` if unreachable."""
        ...

    async def close(self) -> None: ...
