"""``Keyring``: an immutable set of versioned 256-bit keys with one active version.

Serialized as JSON::

    {"format": "session-vault-keyring/1", "active": 2, "keys": {"1": "<base64>", "2": "<base64>"}}

Rotation adds a version and makes it active; old versions stay so old blobs still open, until
everything has been re-sealed and they are removed.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import Final, NoReturn, final

from vault.crypto._aead import (
    KEY_SIZE,
    MAX_KEY_VERSION,
    generate_key,
    is_valid_key_version,
    key_version_of,
    seal,
    unseal,
)
from vault.crypto._secret import SecretBytes
from vault.errors import ConfigError, DecryptionError

__all__ = ["Keyring", "seal_with", "unseal_with"]

FORMAT_TAG: Final = "session-vault-keyring/1"
_VERSION_NAME: Final = re.compile(r"[1-9][0-9]{0,9}")
_FIELDS: Final = frozenset({"format", "active", "keys"})


def _problem(keys: Mapping[int, bytes], active: int) -> str | None:
    """What is wrong with these keys, in words that name versions only; ``None`` if nothing."""
    if not keys:
        return "there are no keys"
    if not all(is_valid_key_version(version) for version in keys):
        return f"key versions must be integers in 1..{MAX_KEY_VERSION}"
    first_version: dict[bytes, int] = {}
    for version in sorted(keys):
        key = keys[version]
        if not isinstance(key, bytes) or len(key) != KEY_SIZE:
            return f"key {version} is not {KEY_SIZE} bytes"
        if len(set(key)) == 1:
            return f"key {version} is weak (all its bytes are equal)"
        first = first_version.setdefault(key, version)
        if first != version:
            return f"keys {first} and {version} are identical"
    if not is_valid_key_version(active):
        return f"the active version must be an integer in 1..{MAX_KEY_VERSION}"
    if active not in keys:
        return f"the active version {active} has no key"
    return None


@final
class Keyring:
    """Versioned 32-byte keys, exactly one of them active. Immutable: changes return a new keyring.

    ``Keyring(keys, active)`` raises ``ValueError`` for bad input (no keys, a version outside
    1..2**32-1, a key that is not 32 bytes, a weak key, two identical keys, an active version without a
    key); :meth:`from_json` reports the same problems as :class:`~vault.errors.ConfigError`.
    """

    __slots__ = ("_active", "_keys")
    __hash__ = None  # type: ignore[assignment]  # unhashable: holds secrets

    _active: int
    _keys: dict[int, SecretBytes]

    def __init__(self, keys: Mapping[int, bytes], active: int) -> None:
        problem = _problem(keys, active)
        if problem is not None:
            raise ValueError(f"invalid keyring: {problem}")
        object.__setattr__(self, "_keys", {v: SecretBytes(keys[v]) for v in sorted(keys)})
        object.__setattr__(self, "_active", active)

    @classmethod
    def generate(cls) -> Keyring:
        """A keyring with one random key, version 1, active."""
        return cls({1: generate_key()}, active=1)

    @property
    def active_version(self) -> int:
        return self._active

    @property
    def versions(self) -> tuple[int, ...]:
        """All versions, ascending."""
        return tuple(self._keys)

    def key(self, version: int) -> bytes:
        """The key of ``version``; :class:`DecryptionError` (opaque) if the keyring has no such version."""
        secret = self._keys.get(version)
        if secret is None:
            raise DecryptionError()
        return secret.reveal()

    def active_key(self) -> tuple[int, bytes]:
        """``(active_version, key)``."""
        return self._active, self._keys[self._active].reveal()

    def rotate(self, new_key: bytes | None = None) -> Keyring:
        """A new keyring with ``new_key`` (default: a random one) added as version max+1 and active."""
        version = max(self._keys) + 1
        if version > MAX_KEY_VERSION:
            raise ValueError("key versions are exhausted")
        keys = self._plain()
        keys[version] = generate_key() if new_key is None else new_key
        return Keyring(keys, active=version)

    def remove(self, version: int) -> Keyring:
        """A new keyring without ``version``. ``ValueError`` if it is the active or an unknown version."""
        if version == self._active:
            raise ValueError("cannot remove the active key version")
        if version not in self._keys:
            raise ValueError(f"there is no key version {int(version)}")
        keys = self._plain()
        del keys[version]
        return Keyring(keys, active=self._active)

    def to_json(self) -> bytes:
        """The keyring file's content (UTF-8 JSON). It is the keys: store it like one."""
        doc = {
            "format": FORMAT_TAG,
            "active": self._active,
            "keys": {str(v): base64.b64encode(k.reveal()).decode("ascii") for v, k in self._keys.items()},
        }
        return json.dumps(doc, indent=2).encode("utf-8") + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> Keyring:
        """Parse :meth:`to_json`'s output; :class:`ConfigError` with a non-secret detail if malformed."""
        try:
            doc = json.loads(data, object_pairs_hook=_unique_members)
        except _DuplicateMemberError:
            raise ConfigError("keyring: a JSON object has a duplicate member") from None
        except (ValueError, TypeError):
            raise ConfigError("keyring: not valid UTF-8 JSON") from None
        if not isinstance(doc, dict):
            raise ConfigError("keyring: the top level must be a JSON object")
        if set(doc) != _FIELDS:
            raise ConfigError('keyring: the top level must have exactly "format", "active" and "keys"')
        if doc["format"] != FORMAT_TAG:
            raise ConfigError(f'keyring: "format" must be "{FORMAT_TAG}"')
        active = doc["active"]
        if not is_valid_key_version(active):
            raise ConfigError(f'keyring: "active" must be an integer in 1..{MAX_KEY_VERSION}')
        raw_keys = doc["keys"]
        if not isinstance(raw_keys, dict) or not raw_keys:
            raise ConfigError('keyring: "keys" must be a non-empty object')
        keys: dict[int, bytes] = {}
        for name, encoded in raw_keys.items():
            if not _VERSION_NAME.fullmatch(name) or not is_valid_key_version(int(name)):
                raise ConfigError(
                    f'keyring: the names in "keys" must be decimal integers in 1..{MAX_KEY_VERSION}'
                )
            version = int(name)
            keys[version] = _decode_key(version, encoded)
        problem = _problem(keys, active)
        if problem is not None:
            raise ConfigError(f"keyring: {problem}")
        return cls(keys, active=active)

    def _plain(self) -> dict[int, bytes]:
        return {v: k.reveal() for v, k in self._keys.items()}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Keyring):
            return NotImplemented
        if self._active != other._active or self._keys.keys() != other._keys.keys():
            return False
        same = [self._keys[v] == other._keys[v] for v in self._keys]  # noqa: SLF001 - no early exit on key bytes
        return all(same)

    def __repr__(self) -> str:
        return f"Keyring(versions={self.versions!r}, active={self._active!r})"

    __str__ = __repr__

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("Keyring is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError("Keyring is immutable")

    def __copy__(self) -> Keyring:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Keyring:
        return self

    def __reduce__(self) -> NoReturn:
        raise TypeError("Keyring cannot be pickled")

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise TypeError("Keyring cannot be pickled")


class _DuplicateMemberError(ValueError):
    pass


def _unique_members(pairs: list[tuple[str, object]]) -> dict[str, object]:
    doc: dict[str, object] = {}
    for name, value in pairs:
        if name in doc:
            raise _DuplicateMemberError
        doc[name] = value
    return doc


def _decode_key(version: int, encoded: object) -> bytes:
    if not isinstance(encoded, str):
        raise ConfigError(f"keyring: key {version} must be a base64 string")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"keyring: key {version} is not valid base64") from None


def seal_with(keyring: Keyring, plaintext: bytes, *, aad: bytes) -> bytes:
    """:func:`~vault.crypto.seal` under the keyring's active key and version."""
    version, key = keyring.active_key()
    return seal(plaintext, key=key, key_version=version, aad=aad)


def unseal_with(keyring: Keyring, blob: bytes, *, aad: bytes) -> bytes:
    """:func:`~vault.crypto.unseal` with the key the blob's header names; :class:`DecryptionError` if
    the keyring lacks that version or decryption fails."""
    return unseal(blob, key=keyring.key(key_version_of(blob)), aad=aad)
