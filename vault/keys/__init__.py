"""Key management: KEK providers and the DEK cache."""

from vault.keys._cache import DekCache
from vault.keys._files import write_private
from vault.keys._local import (
    LocalKeyringProvider,
    create_audit_keys_file,
    create_keyring_file,
    load_audit_keys_file,
    load_keyring_file,
)
from vault.keys._provider import KekProvider, WrappedKey

__all__ = [
    "DekCache",
    "KekProvider",
    "LocalKeyringProvider",
    "WrappedKey",
    "create_audit_keys_file",
    "create_keyring_file",
    "load_audit_keys_file",
    "load_keyring_file",
    "write_private",
]
