"""The local keyring KEK provider: versioned 256-bit keys in a JSON file of mode 0600.

For the embedded (dev) vault and single-machine deployments. The file is the KEK: whoever reads it and
the database can decrypt everything, so keep it off the database host's backups.

The file is the one source of truth for every process that uses it (the server's replicas on this
machine, the CLI): ``rotate`` and ``retire`` rewrite it atomically under an exclusive ``flock`` on
``<file>.lock`` (read, change, write a temporary file, fsync, rename), so two concurrent rotations
never lose a version; every provider stats the file before each use and reloads it when it changed, so
a rotation or retirement made by another process applies without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from vault.audit import AuditKeys
from vault.crypto import Keyring, key_version_of, seal_with, unseal_with
from vault.errors import ConfigError, DecryptionError, InvalidRequest, KeyUnavailable
from vault.keys._files import read_private, write_private
from vault.keys._provider import KekStatus, WrappedKey

__all__ = [
    "LocalKeyringProvider",
    "create_audit_keys_file",
    "create_keyring_file",
    "load_audit_keys_file",
    "load_keyring_file",
]

_Signature = tuple[int, int, int]  # (st_ino, st_mtime_ns, st_size): a rename or a rewrite changes it


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
    """Wraps DEKs with AES-256-GCM under the keyring's active key; unwraps with any version it holds.

    Built with :meth:`from_file`, it follows the file (see the module docstring). Built from a
    :class:`Keyring` alone, it keeps the keyring in memory (tests): ``rotate`` and ``retire`` change only
    this instance.
    """

    def __init__(self, keyring: Keyring, *, kek_id: str = "local", path: Path | None = None) -> None:
        self._kek_id = kek_id
        self._path = path
        # The keyring and the signature of the file it was read from, swapped as one (a rotation runs in
        # a worker thread). None: not known to match the file, reloaded on first use.
        self._state: tuple[Keyring, _Signature | None] = (keyring, None)

    @classmethod
    def from_file(cls, path: Path) -> LocalKeyringProvider:
        """The provider of the keyring file ``path``; :class:`ConfigError` if it is missing or bad."""
        return cls(load_keyring_file(path), path=path)

    def __repr__(self) -> str:
        return f"LocalKeyringProvider(kek_id={self._kek_id!r}, keyring={self._state[0]!r})"

    @property
    def kek_id(self) -> str:
        return self._kek_id

    @property
    def local(self) -> bool:
        return True  # AES-GCM in this process: no network (a stat of a local file per call)

    async def wrap(self, dek: bytes, *, aad: bytes) -> WrappedKey:
        return self._wrap(self._current(), dek, aad)

    async def unwrap(self, wrapped: WrappedKey, *, aad: bytes) -> bytes:
        return self._unwrap(self._current(), wrapped, aad)

    async def status(self) -> KekStatus:
        keyring = self._current()
        versions = keyring.versions
        return KekStatus(self._kek_id, keyring.active_version, versions[0], versions)

    async def rewrap(self, items: Sequence[tuple[WrappedKey, bytes]]) -> list[WrappedKey | None]:
        keyring = self._current()
        out: list[WrappedKey | None] = []
        for wrapped, aad in items:
            try:
                dek = self._unwrap(keyring, wrapped, aad)
            except DecryptionError:
                out.append(None)
                continue
            out.append(self._wrap(keyring, dek, aad))
        return out

    async def rotate(self) -> int:
        return await self._change(lambda keyring: keyring.rotate())

    async def retire(self, through_version: int) -> None:
        def retired(keyring: Keyring) -> Keyring:
            if not 1 <= through_version < keyring.active_version:
                raise InvalidRequest(
                    f"only versions below the active one ({keyring.active_version}) can be retired"
                )
            for version in keyring.versions:
                if version <= through_version:
                    keyring = keyring.remove(version)
            return keyring

        await self._change(retired)

    async def check(self) -> None:
        if self._path is not None:
            self._reload(self._path)

    async def close(self) -> None:
        return None

    def _wrap(self, keyring: Keyring, dek: bytes, aad: bytes) -> WrappedKey:
        blob = seal_with(keyring, dek, aad=aad)
        return WrappedKey(kek_id=self._kek_id, kek_version=keyring.active_version, blob=blob)

    def _unwrap(self, keyring: Keyring, wrapped: WrappedKey, aad: bytes) -> bytes:
        if wrapped.kek_id != self._kek_id:
            raise DecryptionError()
        if key_version_of(wrapped.blob) not in keyring.versions and self._path is not None:
            # Rotated by another process within the file's timestamp granularity: look once more.
            keyring = self._current(force=True)
        return unseal_with(keyring, wrapped.blob, aad=aad)

    def _current(self, *, force: bool = False) -> Keyring:
        """The keyring, reloaded if the file changed since it was read. :class:`KeyUnavailable` if the
        file can no longer be read: serving on with keys the file no longer has (a retired version)
        would be wrong."""
        keyring, seen = self._state
        if self._path is None:
            return keyring
        try:
            changed = force or _signature(self._path) != seen
        except OSError:
            changed = True  # gone or unreadable: the reload says which
        if not changed:
            return keyring
        try:
            return self._reload(self._path)
        except ConfigError as exc:
            raise KeyUnavailable(f"the keyring file changed and cannot be used: {exc.detail}") from None

    def _reload(self, path: Path) -> Keyring:
        try:
            signature = _signature(path)  # before reading: a change in between is seen next time
        except FileNotFoundError:
            raise ConfigError("the keyring file does not exist") from None
        except OSError:
            raise ConfigError("the keyring file cannot be read") from None
        keyring = load_keyring_file(path)
        self._state = (keyring, signature)
        return keyring

    async def _change(self, change: Callable[[Keyring], Keyring]) -> int:
        """Apply ``change`` to the newest keyring and store the result; the new active version."""
        path = self._path
        if path is None:
            keyring = change(self._state[0])
            self._state = (keyring, None)
            return keyring.active_version
        return await asyncio.to_thread(self._change_file, path, change)

    def _change_file(self, path: Path, change: Callable[[Keyring], Keyring]) -> int:
        with _exclusive(path.with_name(path.name + ".lock")):
            current = self._reload(path)  # never a cached copy: another process may have changed it
            keyring = change(current)
            if keyring is not current:
                try:
                    write_private(path, keyring.to_json(), replace=True)
                    _fsync_directory(path.parent)
                except OSError:
                    raise KeyUnavailable("the keyring file cannot be written") from None
                self._reload(path)
        return keyring.active_version


def _signature(path: Path) -> _Signature:
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns, st.st_size


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (created with mode 0600, never deleted: deleting a
    lock file lets two processes lock two different files)."""
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        raise KeyUnavailable("the keyring lock file cannot be opened") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _fsync_directory(directory: Path) -> None:
    """Make a rename durable: the directory entry, not only the file's data."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
