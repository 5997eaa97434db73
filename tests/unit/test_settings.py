"""Settings are validated where they are declared: every bad value is a ConfigError naming the setting
(as its VAULT_* variable) and the rule, never the value, and never a silent fallback; the CLI prints it
as one line and exits 1, without a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vault.errors import ConfigError
from vault.settings import Settings

BAD = [
    ("VAULT_PUBLIC_PORT", "0"),
    ("VAULT_INTERNAL_PORT", "65536"),
    ("VAULT_PUBLIC_PORT", "http"),
    ("VAULT_DB_POOL_SIZE", "0"),
    ("VAULT_DEK_CACHE_TTL_SECONDS", "-1"),
    ("VAULT_LEASE_MAX_TTL_SECONDS", "0"),
    ("VAULT_AUDIT_CHECKPOINT_INTERVAL_SECONDS", "0"),
    ("VAULT_HTTP_HEADER_TIMEOUT_SECONDS", "0"),
    ("VAULT_HTTP_MAX_CONNECTIONS", "0"),
    ("VAULT_MAX_BODY_BYTES", "10"),
    ("VAULT_SESSION_MAX_LIFETIME_SECONDS", "0"),
    ("VAULT_TRUSTED_PROXIES", "10.0.0.1,not-an-address"),
    ("VAULT_AUDIT_HASH_RATE_LIMIT", "lots"),
    ("VAULT_DATABASE_URL", "mysql://vault:secret-password-123@db/vault"),
    ("VAULT_KEK_PROVIDER", "magic"),
]


@pytest.mark.parametrize(("name", "value"), BAD)
def test_a_bad_value_names_the_setting_and_not_the_value(
    name: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        Settings.load()
    assert caught.value.detail.startswith(f"{name}: "), caught.value.detail
    if len(value) > 4:  # a distinctive value (short numbers can occur in the rule itself)
        assert value not in caught.value.detail


def test_defaults_load(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("VAULT_"):
            monkeypatch.delenv(key)
    assert Settings.load().public_port == 8080


def test_a_dev_port_out_of_range_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^VAULT_PUBLIC_PORT: "):
        Settings.for_data_dir(tmp_path, public_port=70000)


def test_the_cli_prints_one_line_and_exits_1(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    env |= {"VAULT_DATABASE_URL": "mysql://vault:secret-password-123@db/vault", "VAULT_PUBLIC_PORT": "0"}
    result = subprocess.run(
        [sys.executable, "-m", "vault.cli", "token", "list"], capture_output=True, text=True, env=env, timeout=60,
        check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("error: config_error: VAULT_DATABASE_URL: must start with"), result.stderr
    assert "VAULT_PUBLIC_PORT" in result.stderr and len(result.stderr.splitlines()) == 1
    assert "Traceback" not in result.stderr and "secret-password-123" not in result.stderr
