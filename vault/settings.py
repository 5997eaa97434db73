"""Configuration: environment variables prefixed ``VAULT_``, read when the app is built, never at import.

``Settings.for_data_dir`` builds the embedded (dev) configuration: SQLite and a local keyring inside one
directory. ``Settings.check_production`` refuses missing or weak secrets; ``serve`` calls it, ``dev``
does not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from vault.errors import ConfigError

__all__ = ["WEAK_DB_PASSWORDS", "Settings"]

# Passwords that appear in tutorials and default images; a production database URL must not use them.
WEAK_DB_PASSWORDS = frozenset(
    {"postgres", "password", "passw0rd", "changeme", "secret", "admin", "root", "vault", "test", "example"}
)


class Settings(BaseSettings):
    """All of the vault's settings. Frozen: build a new one to change anything."""

    model_config = SettingsConfigDict(env_prefix="VAULT_", frozen=True, extra="forbid")

    database_url: SecretStr | None = None
    keyring_file: Path | None = None
    kek_provider: Literal["local"] = "local"
    public_host: str = "127.0.0.1"
    public_port: int = 8080
    internal_host: str = "127.0.0.1"
    internal_port: int = 8081
    dek_cache_ttl_seconds: float = 60.0
    dek_cache_max_entries: int = 10_000
    db_pool_size: int = 10
    max_body_bytes: int = 64 * 1024
    lease_max_ttl_seconds: int = 300
    audit_keys_file: Path | None = None
    audit_seal_interval_seconds: float = 1.0
    audit_checkpoint_interval_seconds: float = 60.0
    dev_mode: bool = False
    access_log: bool = False  # security events are in the audit log; this is uvicorn's per-request line

    @classmethod
    def for_data_dir(cls, data_dir: Path, **overrides: object) -> Settings:
        """The embedded configuration: ``DIR/vault.db`` (SQLite) and ``DIR/keyring.json``."""
        data_dir = data_dir.resolve()
        values: dict[str, object] = {
            "database_url": SecretStr(f"sqlite+aiosqlite:///{data_dir / 'vault.db'}"),
            "keyring_file": data_dir / "keyring.json",
            "audit_keys_file": data_dir / "audit-keys.json",
            "dev_mode": True,
        }
        values.update(overrides)
        return cls.model_validate(values)

    def require_database_url(self) -> str:
        if self.database_url is None:
            raise ConfigError("VAULT_DATABASE_URL is not set (or pass --data-dir for a dev data directory)")
        url = self.database_url.get_secret_value()
        if not url.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite:///")):
            raise ConfigError(
                "VAULT_DATABASE_URL must start with postgresql+asyncpg:// or sqlite+aiosqlite:///"
            )
        return url

    def require_keyring_file(self) -> Path:
        if self.keyring_file is None:
            raise ConfigError("VAULT_KEYRING_FILE is not set")
        return self.keyring_file

    def require_audit_keys_file(self) -> Path:
        if self.audit_keys_file is None:
            raise ConfigError("VAULT_AUDIT_KEYS_FILE is not set")
        return self.audit_keys_file

    def check_production(self) -> None:
        """Refuse to serve on missing or weak secrets. Raises :class:`ConfigError` naming the setting."""
        if self.dev_mode:
            raise ConfigError("VAULT_DEV_MODE is set: use `session-vault dev` for a dev vault, never `serve`")
        url = self.require_database_url()
        password = urlsplit(url).password
        if password is not None and (password.lower() in WEAK_DB_PASSWORDS or len(password) < 12):
            raise ConfigError("the database password in VAULT_DATABASE_URL is weak (known or under 12 chars)")
        # The key files' existence, mode and contents are checked where they are loaded (vault.keys).
        self.require_keyring_file()
        self.require_audit_keys_file()
        if self.audit_seal_interval_seconds <= 0:
            raise ConfigError("VAULT_AUDIT_SEAL_INTERVAL_SECONDS must be positive in production")
