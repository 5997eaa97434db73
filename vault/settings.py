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

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from vault.errors import ConfigError

__all__ = ["MAX_LEASE_TTL", "WEAK_DB_PASSWORDS", "Settings"]

MAX_LEASE_TTL = 86_400  # the longest lease any configuration or request may name, in seconds
_SCHEMES = ("postgresql+asyncpg://", "sqlite+aiosqlite:///")
# Transit names: path segments of letters, digits, ``_ . -`` (never ``..``, never empty): they go into URLs.
_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"
_NAME = rf"^{_SEGMENT}$"
_PATH = rf"^{_SEGMENT}(/{_SEGMENT}){{0,7}}$"

# Passwords that appear in tutorials and default images; a production database URL must not use them.
WEAK_DB_PASSWORDS = frozenset(
    {"postgres", "password", "passw0rd", "changeme", "secret", "admin", "root", "vault", "test", "example"}
)


class Settings(BaseSettings):
    """All of the vault's settings. Frozen: build a new one to change anything."""

    model_config = SettingsConfigDict(env_prefix="VAULT_", frozen=True, extra="forbid")

    database_url: SecretStr | None = None
    keyring_file: Path | None = None
    kek_provider: Literal["local", "transit"] = "local"
    # OpenBao / HashiCorp Vault Transit (kek_provider "transit"). The key must be created with
    # derived=true: each wrap is bound to its user and DEK version through the derivation context.
    transit_addr: str | None = None  # https://...; plain http:// only to a loopback address
    transit_key: str | None = Field(None, pattern=_NAME)
    transit_mount: str = Field("transit", pattern=_PATH)
    transit_namespace: str | None = Field(None, pattern=_PATH)  # sent as X-Vault-Namespace
    transit_token: SecretStr | None = None  # or transit_token_file: exactly one of them
    transit_token_file: Path | None = None  # read once at startup; mode 0600
    transit_ca_file: Path | None = None  # PEM CA bundle for https:// (default: httpx's, certifi)
    transit_timeout_seconds: float = Field(5.0, gt=0, le=300)  # per attempt
    transit_retries: int = Field(3, ge=0, le=10)  # after the first attempt, with jittered backoff
    public_host: str = Field("127.0.0.1", min_length=1)
    public_port: int = Field(8080, ge=1, le=65535)
    internal_host: str = Field("127.0.0.1", min_length=1)
    internal_port: int = Field(8081, ge=1, le=65535)
    dek_cache_ttl_seconds: float = Field(60.0, ge=0, le=86400)  # 0: no cache
    dek_cache_max_entries: int = Field(10_000, ge=0, le=10_000_000)  # 0: no cache
    db_pool_size: int = Field(10, ge=1, le=1000)
    # Group commit: grants (and releases) that arrive together share one transaction and one commit. A
    # batch holds at most batch_max_size requests; at most batch_max_inflight batches of each kind run at
    # once per process; a batch waits batch_max_wait_ms for company before it starts (0: never waits).
    batch_max_size: int = Field(64, ge=1, le=1000)
    batch_max_wait_ms: float = Field(0.0, ge=0, le=100)
    batch_max_inflight: int = Field(1, ge=1, le=64)
    # Processes of `serve`, sharing both listeners, each with its own database pool (0: one per core).
    workers: int = Field(0, ge=0, le=64)
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

    @field_validator("transit_addr")
    @classmethod
    def _transit_addr(cls, value: str | None) -> str | None:
        if value is None:
            return None
        problem = _addr_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value.rstrip("/")

    @model_validator(mode="after")
    def _transit(self) -> Settings:
        """The Transit settings that only make sense together (reported without a field name)."""
        if self.kek_provider == "transit":
            if self.transit_addr is None:
                raise ValueError("VAULT_TRANSIT_ADDR is required when VAULT_KEK_PROVIDER is transit")
            if self.transit_key is None:
                raise ValueError("VAULT_TRANSIT_KEY is required when VAULT_KEK_PROVIDER is transit")
            if (self.transit_token is None) == (self.transit_token_file is None):
                raise ValueError(
                    "exactly one of VAULT_TRANSIT_TOKEN and VAULT_TRANSIT_TOKEN_FILE must be set"
                    " when VAULT_KEK_PROVIDER is transit"
                )
        if self.transit_ca_file is not None and not (self.transit_addr or "").startswith("https://"):
            raise ValueError("VAULT_TRANSIT_CA_FILE is set but VAULT_TRANSIT_ADDR is not an https:// URL")
        return self

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
        if self.kek_provider == "local":
            self.require_keyring_file()
        self.require_audit_keys_file()
        if self.audit_seal_interval_seconds <= 0:
            raise ConfigError("VAULT_AUDIT_SEAL_INTERVAL_SECONDS must be positive in production")


def _describe(exc: ValidationError) -> str:
    """``VAULT_NAME: what is wrong`` for each error; pydantic's messages name the rule, not the value."""
    parts = []
    for error in exc.errors(include_input=False, include_url=False):
        message = str(error["msg"]).removeprefix("Value error, ")
        if not error["loc"]:  # a rule across settings: its message names them
            parts.append(message)
            continue
        parts.append(f"VAULT_{str(error['loc'][0]).upper()}: {message}")
    return "; ".join(parts)


def _addr_problem(addr: str) -> str | None:
    """What is wrong with a Transit address, without quoting it; ``None`` if nothing. Plain http is
    allowed only to a loopback host: the token and every data key would otherwise cross the network
    in the clear."""
    try:
        parts = urlsplit(addr)
        _ = parts.port  # raises ValueError for a malformed port
    except ValueError:
        return "not a valid URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host"
    if parts.username is not None or parts.password is not None:
        return "must not contain credentials (use VAULT_TRANSIT_TOKEN or VAULT_TRANSIT_TOKEN_FILE)"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return "must be the server's base URL (no path, query or fragment)"
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        return (
            "plain http:// is allowed only to a loopback address (127.0.0.0/8, ::1, localhost): use https://"
        )
    return None


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
