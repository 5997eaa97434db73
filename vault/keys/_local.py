"""The local keyring KEK provider: versioned 256-bit keys in a JSON file of mode 0600.

For the embedded (dev) vault and single-machine deployments. The file is the KEK: whoever reads it and
the database can decrypt everything, so keep it off the database host's backups.
"""

from __future__ import annotations

from pathlib import Path

from vault.audit import AuditKeys
from vault.crypto import Keyring, seal_with, unseal_with
from vault.errors import DecryptionError
from vault.keys._files import read_private, write_private
from vault.keys._provider import WrappedKey

__all__ = [
    "LocalKeyringProvider",
    "create_audit_keys_file",
    "create_keyring_file",
    "load_audit_keys_file",
    "load_keyring_file",
]


def create_keyring_file(path: Path) -> None:
    """Write a new keyring to ``path`` with mode 0600. Refuses to overwrite an existing file."""
    write_private(path, Keyring.generate().to_json())


def load_keyring_file(path: Path) -> Keyring:
    """Read a keyring file; :class:`ConfigError` if missing, readable by others, or malformed."""
    return Keyring.from_json(read_private(path, "keyring"))


def create_audit_keys_file(path: Path) -> None:
    """Write new audit keys (checkpoint signing key, audit HMAC key) to ``path`` with mode 0600."""
    write_private(path, AuditKeys.generate().to_json())


def load_audit_keys_file(path: Path) -> AuditKeys:
    return AuditKeys.from_json(read_private(path, "audit keys"))


class LocalKeyringProvider:
    """Wraps DEKs with AES-256-GCM under the keyring's active key; unwraps with any version it holds."""

    def __init__(self, keyring: Keyring, *, kek_id: str = "local") -> None:
        self._keyring = keyring
        self._kek_id = kek_id

    @classmethod
    def from_file(cls, path: Path) -> LocalKeyringProvider:
        return cls(load_keyring_file(path))

    def __repr__(self) -> str:
        return f"LocalKeyringProvider(kek_id={self._kek_id!r}, keyring={self._keyring!r})"

    @property
    def kek_id(self) -> str:
        return self._kek_id

    @property
    def local(self) -> bool:
        return True  # AES-GCM in this process: no I/O

    async def wrap(self, dek: bytes, *, aad: bytes) -> WrappedKey:
        blob = seal_with(self._keyring, dek, aad=aad)
        return WrappedKey(kek_id=self._kek_id, kek_version=self._keyring.active_version, blob=blob)

    async def unwrap(self, wrapped: WrappedKey, *, aad: bytes) -> bytes:
        if wrapped.kek_id != self._kek_id:
            raise DecryptionError()
        return unseal_with(self._keyring, wrapped.blob, aad=aad)

    async def close(self) -> None:
        return None
