"""Key management: KEK providers (the local keyring, OpenBao / Vault Transit) and the DEK cache."""

from vault.keys._cache import DekCache
from vault.keys._files import write_private
from vault.keys._local import (
    LocalKeyringProvider,
    create_audit_keys_file,
    create_keyring_file,
    load_audit_keys_file,
    load_keyring_file,
)
from vault.keys._provider import KekProvider, KekStatus, WrappedKey
from vault.keys._transit import TransitProvider

__all__ = [
    "DekCache",
    "KekProvider",
    "KekStatus",
    "LocalKeyringProvider",
    "TransitProvider",
    "WrappedKey",
    "create_audit_keys_file",
    "create_keyring_file",
    "load_audit_keys_file",
    "load_keyring_file",
    "write_private",
]
