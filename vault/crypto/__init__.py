"""Pure byte-level cryptography for the vault: AES-256-GCM blobs, associated data, keyrings, secrets.

No I/O here (no files, database, network, logging or clock): callers bring the bytes. Imports only the
standard library, ``cryptography`` and :mod:`vault.errors`.

Every decryption failure is the same opaque :class:`vault.errors.DecryptionError`; malformed keyring
JSON is a :class:`vault.errors.ConfigError`; misuse by the caller (a wrong-size key when sealing, a key
version out of range) is a plain ``ValueError``.
"""

from vault.crypto._aead import (
    FORMAT_VERSION,
    HEADER_SIZE,
    KEY_SIZE,
    build_aad,
    dek_aad,
    generate_key,
    key_version_of,
    seal,
    session_aad,
    unseal,
)
from vault.crypto._keyring import Keyring, seal_with, unseal_with
from vault.crypto._secret import SecretBytes

__all__ = [
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "KEY_SIZE",
    "Keyring",
    "SecretBytes",
    "build_aad",
    "dek_aad",
    "generate_key",
    "key_version_of",
    "seal",
    "seal_with",
    "session_aad",
    "unseal",
    "unseal_with",
]
