"""Configuration: environment variables prefixed ``VAULT_``, read when the app is built, never at import.

``Settings.for_data_dir`` builds the embedded (dev) configuration: SQLite and a local keyring inside one
directory. ``Settings.check_production`` refuses missing or weak secrets; ``serve`` calls it, ``dev``
does not.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from vault.errors import ConfigError

__all__ = ["MAX_LEASE_TTL", "WEAK_DB_PASSWORDS", "Settings"]

MAX_LEASE_TTL = 86_400  # the longest lease any configuration or request may name, in seconds
_SCHEMES = ("postgresql+asyncpg://", "sqlite+aiosqlite:///")

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
    public_host: str = Field("127.0.0.1", min_length=1)
    public_port: int = Field(8080, ge=1, le=65535)
    internal_host: str = Field("127.0.0.1", min_length=1)
    internal_port: int = Field(8081, ge=1, le=65535)
    dek_cache_ttl_seconds: float = Field(60.0, ge=0, le=86400)  # 0: no cache
    dek_cache_max_entries: int = Field(10_000, ge=0, le=10_000_000)  # 0: no cache
    db_pool_size: int = Field(10, ge=1, le=1000)
    max_body_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024)
    lease_max_ttl_seconds: int = Field(300, ge=1, le=MAX_LEASE_TTL)
    audit_keys_file: Path | None = None
    audit_seal_interval_seconds: float = Field(1.0, le=3600)  # 0 or less: no sealer (serve refuses it)
    audit_checkpoint_interval_seconds: float = Field(60.0, gt=0, le=86400)
    dev_mode: bool = False
    access_log: bool = False  # security events are in the audit log; this is uvicorn's per-request line
    # Forwarded headers (X-Forwarded-For, X-Forwarded-Proto) are believed only from these peers: a comma-
    # separated list of addresses or networks. Empty (the default): the audited source is the TCP peer.
    trusted_proxies: str = ""
    # Slow and oversized requests, per listener: a request's headers must arrive whole within the header
    # deadline (counted from the connection or the request's first byte, never reset by further bytes),
    # its body within the body deadline after the headers; headers over the size limit are refused (431).
    http_header_timeout_seconds: float = Field(10.0, gt=0, le=3600)
    http_body_timeout_seconds: float = Field(30.0, gt=0, le=3600)
    http_max_header_bytes: int = Field(16 * 1024, ge=1024, le=1024 * 1024)
    http_max_connections: int = Field(1000, ge=1, le=1_000_000)  # per listener; past it, answered 503
    # A stored session expires at its cookie's Max-Age / Expires, and never later than this after ingest.
    session_max_lifetime_seconds: int = Field(30 * 86400, ge=1, le=10 * 366 * 86400)
    # Keyed-hash lookups (POST /v1/audit/hash) per auditor token, per vault process.
    audit_hash_rate_limit: str = "30/minute"

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(_SCHEMES):
            raise ValueError("must start with postgresql+asyncpg:// or sqlite+aiosqlite:///")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: str) -> str:
        for item in (part.strip() for part in value.split(",")):
            if item:
                try:
                    ipaddress.ip_network(item, strict=False)
                except ValueError:
                    raise ValueError("not an address or network") from None
        return value

    @field_validator("audit_hash_rate_limit")
    @classmethod
    def _rate(cls, value: str) -> str:
        from limits import parse

        try:
            parse(value)
        except ValueError:
            raise ValueError("not a rate such as 30/minute") from None
        return value

    def trusted_proxy_list(self) -> list[str]:
        """The trusted proxies as a list of addresses and networks (empty: trust no forwarded header)."""
        return [part.strip() for part in self.trusted_proxies.split(",") if part.strip()]

    @classmethod
    def load(cls, **overrides: object) -> Settings:
        """Settings from the environment (and ``overrides``); :class:`ConfigError` naming every bad
        ``VAULT_*`` setting and what is wrong with it, never its value."""
        try:
            return cls(**overrides)  # type: ignore[arg-type]
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from None

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
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from None

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


def _describe(exc: ValidationError) -> str:
    """``VAULT_NAME: what is wrong`` for each error; pydantic's messages name the rule, not the value."""
    parts = []
    for error in exc.errors(include_input=False, include_url=False):
        name = str(error["loc"][0]) if error["loc"] else "?"
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"VAULT_{name.upper()}: {message}")
    return "; ".join(parts)
