"""AES-256-GCM sealing in the vault's versioned blob format, and the associated-data encoding.

Blob format 1::

    offset  size    field
    0       1       format version, 0x01
    1       4       key version, unsigned big-endian, 1..2**32-1
    5       12      random nonce
    17      n + 16  AES-256-GCM ciphertext of the n-byte plaintext, then the 16-byte tag

The AEAD associated data is ``header || aad``: the header is authenticated, so editing its key version
(to steer decryption to another key) fails exactly like a forged tag. ``aad`` binds a blob to where it
belongs (user, session, version); build it with :func:`build_aad` or its helpers.

Random 96-bit nonces: keep each key's use well under 2**32 seals (NIST SP 800-38D, 8.3), which key
rotation does in practice.
"""

from __future__ import annotations

import os
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vault.errors import DecryptionError

__all__ = [
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "KEY_SIZE",
    "build_aad",
    "dek_aad",
    "generate_key",
    "key_version_of",
    "seal",
    "session_aad",
    "unseal",
]

KEY_SIZE: Final = 32
FORMAT_VERSION: Final = 1
HEADER_SIZE: Final = 17
NONCE_SIZE: Final = 12
TAG_SIZE: Final = 16
MAX_KEY_VERSION: Final = 2**32 - 1

_AAD_MAGIC: Final = b"sv-aad-1"
_MAX_FIELD: Final = 2**32 - 1


def generate_key() -> bytes:
    """A new random 256-bit key."""
    return os.urandom(KEY_SIZE)


def is_valid_key_version(version: object) -> bool:
    return isinstance(version, int) and not isinstance(version, bool) and 1 <= version <= MAX_KEY_VERSION


def seal(plaintext: bytes, *, key: bytes, key_version: int, aad: bytes) -> bytes:
    """Encrypt and authenticate ``plaintext`` under ``key`` with a fresh random nonce.

    ``ValueError`` (a programming error, not a :class:`~vault.errors.VaultError`) if ``key`` is not
    :data:`KEY_SIZE` bytes or ``key_version`` is not in 1..2**32-1.
    """
    return _seal_with_nonce(
        plaintext, key=key, key_version=key_version, aad=aad, nonce=os.urandom(NONCE_SIZE)
    )


def _seal_with_nonce(plaintext: bytes, *, key: bytes, key_version: int, aad: bytes, nonce: bytes) -> bytes:
    """:func:`seal` with a caller-chosen nonce. Only for :func:`seal` and known-answer tests: reusing a
    nonce under one key destroys GCM's confidentiality and authenticity."""
    if len(key) != KEY_SIZE:
        raise ValueError(f"key must be {KEY_SIZE} bytes")
    if not is_valid_key_version(key_version):
        raise ValueError(f"key_version must be an int in 1..{MAX_KEY_VERSION}")
    if len(nonce) != NONCE_SIZE:
        raise ValueError(f"nonce must be {NONCE_SIZE} bytes")
    header = bytes((FORMAT_VERSION,)) + key_version.to_bytes(4, "big") + nonce
    return header + AESGCM(key).encrypt(nonce, plaintext, header + aad)


def _parse_header(blob: bytes) -> tuple[int, bytes]:
    """``(key_version, nonce)``; :class:`DecryptionError` unless ``blob`` can be a format-1 blob."""
    if len(blob) < HEADER_SIZE + TAG_SIZE or blob[0] != FORMAT_VERSION:
        raise DecryptionError()
    key_version = int.from_bytes(blob[1:5], "big")
    if key_version == 0:
        raise DecryptionError()
    return key_version, blob[5:HEADER_SIZE]


def key_version_of(blob: bytes) -> int:
    """The key version named in ``blob``'s header (not yet authenticated: only use it to pick a key).

    :class:`DecryptionError` if the blob is shorter than a header and tag, of another format, or names
    key version 0.
    """
    return _parse_header(blob)[0]


def unseal(blob: bytes, *, key: bytes, aad: bytes) -> bytes:
    """Decrypt a blob made by :func:`seal` with the same ``key`` and ``aad``.

    Every failure (too short, unknown format, wrong key or key length, wrong ``aad``, any edited byte)
    raises the same :class:`DecryptionError` with its default detail and no cause.
    """
    if len(key) != KEY_SIZE:
        raise DecryptionError()
    _, nonce = _parse_header(blob)
    try:
        return AESGCM(key).decrypt(nonce, blob[HEADER_SIZE:], blob[:HEADER_SIZE] + aad)
    except InvalidTag:
        raise DecryptionError() from None


def _field(item: str | int) -> bytes:
    if isinstance(item, bool):
        raise TypeError("associated-data parts must be str or int, not bool")
    if isinstance(item, int):
        data = str(int(item)).encode("ascii")
    elif isinstance(item, str):
        data = item.encode("utf-8")
    else:
        raise TypeError("associated-data parts must be str or int")
    if len(data) > _MAX_FIELD:
        raise ValueError("associated-data part is too long")
    return len(data).to_bytes(4, "big") + data


def build_aad(context: str, *parts: str | int) -> bytes:
    """Unambiguous associated data: ``b"sv-aad-1"``, then ``context`` and each part as a 4-byte
    big-endian length and the UTF-8 bytes (ints as decimal strings, so ``1`` and ``"1"`` encode alike).
    """
    if not isinstance(context, str):
        raise TypeError("context must be str")
    if not context:
        raise ValueError("context must not be empty")
    return _AAD_MAGIC + b"".join(_field(item) for item in (context, *parts))


def session_aad(user_id: str, session_id: str, version: int) -> bytes:
    """Associated data binding a sealed session to its user, session id and version."""
    return build_aad("session", user_id, session_id, version)


def dek_aad(user_id: str, dek_version: int) -> bytes:
    """Associated data binding a wrapped data-encryption key to its user and DEK version."""
    return build_aad("user-dek", user_id, dek_version)
