"""The ``session-vault`` command as a user runs it: real processes, real ports, real files."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests._db import drop_pg_database, pg_execute, pg_vault_url
from tests.sessiongen import make_session
from vault.keys import create_audit_keys_file, create_keyring_file

CLI = [sys.executable, "-m", "vault.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    full_env.update(env or {})
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env=full_env, timeout=60, check=False
    )


@contextmanager
def _dev(data_dir: Path, log: Path) -> Iterator[tuple[int, int, float]]:
    """Run ``session-vault dev``; yield its ports and the moment the public port first accepted."""
    public, internal = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*CLI, "dev", "--data-dir", str(data_dir), "--public-port", str(public), "--internal-port", str(internal)],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "dev did not start"
            try:
                socket.create_connection(("127.0.0.1", public), timeout=0.2).close()
                listening_at = time.time()
                break
            except OSError:
                time.sleep(0.05)
        while "vault ready" not in log.read_text():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        yield public, internal, listening_at
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0, log.read_text()


def test_dev_runs_with_no_configuration_and_keeps_its_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "dv"
    session, body = make_session(51)
    with _dev(data_dir, tmp_path / "dev1.log") as (public, internal, listening_at):
        token_file = data_dir / "admin.token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert token_file.stat().st_mtime <= listening_at, "the admin token must exist before listening"
        assert stat.S_IMODE((data_dir / "keyring.json").stat().st_mode) == 0o600
        log = (tmp_path / "dev1.log").read_text()
        assert "NOT FOR PRODUCTION" in log and str(token_file) in log
        admin = token_file.read_text().strip()
        assert admin not in log

        response = httpx.post(f"http://127.0.0.1:{public}/api/import-session", json={"session": session})
        assert response.status_code == 201, response.text

        # The CLI acts on the running dev vault's data directory.
        created = _run("token", "create", "--data-dir", str(data_dir), "--role", "ingest", "--name", "app")
        assert created.returncode == 0, created.stderr
        ingest_token = created.stdout.strip()
        assert created.stdout == ingest_token + "\n"
        listed = _run("token", "list", "--data-dir", str(data_dir))
        assert listed.returncode == 0 and '"role": "ingest"' in listed.stdout
        assert ingest_token[21:] not in listed.stdout and admin[21:] not in listed.stdout
        url = f"http://127.0.0.1:{internal}/v1/sessions"
        headers = {"Authorization": f"Bearer {ingest_token}"}
        assert httpx.post(url, json={"session": make_session(52)[0]}, headers=headers).status_code == 201
        revoked = _run("token", "revoke", "--data-dir", str(data_dir), ingest_token[4:20])
        assert revoked.returncode == 0, revoked.stderr
        assert httpx.post(url, json={"session": make_session(53)[0]}, headers=headers).status_code == 401
        keyring_before = (data_dir / "keyring.json").read_bytes()

    with _dev(data_dir, tmp_path / "dev2.log") as (_public, internal, _):
        assert (data_dir / "admin.token").read_text().strip() == admin
        assert (data_dir / "keyring.json").read_bytes() == keyring_before
        listing = httpx.get(
            f"http://127.0.0.1:{internal}/v1/tokens", headers={"Authorization": f"Bearer {admin}"}
        )
        assert listing.status_code == 200
        with sqlite3.connect(data_dir / "vault.db") as conn:
            users = {row[0] for row in conn.execute("SELECT user_id FROM sessions")}
        assert body["userId"] in users and len(users) == 2


def test_serve_refuses_missing_or_weak_secrets(tmp_path: Path) -> None:
    keyring = tmp_path / "keyring.json"
    create_keyring_file(keyring)
    audit_keys = tmp_path / "audit-keys.json"
    create_audit_keys_file(audit_keys)
    good_db = "postgresql+asyncpg://vault:Xq9-long-enough-password@127.0.0.1:5432/vault"
    loose = tmp_path / "loose.json"
    loose.write_bytes(keyring.read_bytes())
    loose.chmod(0o644)
    loose_audit = tmp_path / "loose-audit.json"
    loose_audit.write_bytes(audit_keys.read_bytes())
    loose_audit.chmod(0o640)
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "session-vault-keyring/1", "active": 1, "keys": {"1": "' + "A" * 44 + '"}}')
    bad.chmod(0o600)
    base = {
        "VAULT_DATABASE_URL": good_db,
        "VAULT_KEYRING_FILE": str(keyring),
        "VAULT_AUDIT_KEYS_FILE": str(audit_keys),
    }
    unset = ""
    changes: dict[str, dict[str, str]] = {
        "no database url": {"VAULT_DATABASE_URL": unset},
        "no keyring": {"VAULT_KEYRING_FILE": unset},
        "no audit keys": {"VAULT_AUDIT_KEYS_FILE": unset},
        "weak db password": {"VAULT_DATABASE_URL": "postgresql+asyncpg://postgres:postgres@127.0.0.1/vault"},
        "short db password": {"VAULT_DATABASE_URL": "postgresql+asyncpg://vault:Zk3@127.0.0.1/vault"},
        "keyring readable by others": {"VAULT_KEYRING_FILE": str(loose)},
        "audit keys readable by group": {"VAULT_AUDIT_KEYS_FILE": str(loose_audit)},
        "keyring missing": {"VAULT_KEYRING_FILE": str(tmp_path / "nope")},
        "all-zero key": {"VAULT_KEYRING_FILE": str(bad)},
        "audit keys are a keyring": {"VAULT_AUDIT_KEYS_FILE": str(keyring)},
        "dev mode": {"VAULT_DEV_MODE": "1"},
        "sealing off": {"VAULT_AUDIT_SEAL_INTERVAL_SECONDS": "0"},
        "unknown driver": {"VAULT_DATABASE_URL": "mysql://x:y@h/d"},
        "bad port": {"VAULT_PUBLIC_PORT": "x"},
    }
    cases = {name: {k: v for k, v in {**base, **change}.items() if v} for name, change in changes.items()}
    for name, env in cases.items():
        result = _run("serve", env=env)
        assert result.returncode == 1, (name, result.stderr)
        assert result.stderr.startswith("error: config_error: "), (name, result.stderr)
        assert "Xq9-long" not in result.stderr and "A" * 20 not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, (name, result.stderr)


@pytest.fixture
def pg_database() -> Iterator[str]:
    name = f"sv_cli_{os.getpid()}"
    pg_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    pg_execute(f'CREATE DATABASE "{name}"')
    yield pg_vault_url(name)
    drop_pg_database(name)


def test_db_upgrade_and_tokens_from_environment_on_postgresql(pg_database: str, tmp_path: Path) -> None:
    keyring = tmp_path / "keyring.json"
    create_keyring_file(keyring)
    audit_keys = tmp_path / "audit-keys.json"
    create_audit_keys_file(audit_keys)
    env = {
        "VAULT_DATABASE_URL": pg_database,
        "VAULT_KEYRING_FILE": str(keyring),
        "VAULT_AUDIT_KEYS_FILE": str(audit_keys),
    }
    assert _run("db", "upgrade", env=env).returncode == 0
    assert _run("db", "upgrade", env=env).returncode == 0  # idempotent
    created = _run("token", "create", "--role", "signer", "--name", "signer-1", "--purpose", "sign",
                   "--purpose", "refresh", "--max-ttl", "120", "--expires-in", "3600", env=env)  # fmt: skip
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("svt_") and created.stdout.count("\n") == 1
    listed = _run("token", "list", env=env)
    assert '"purposes": ["sign", "refresh"]' in listed.stdout and token[21:] not in listed.stdout


def test_cli_bad_input_gets_one_clear_line(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path / "dv")]
    (tmp_path / "dv").mkdir()
    assert _run("db", "upgrade", *data).returncode == 0
    usage = _run("token", "create", *data, "--role", "root", "--name", "x")
    assert usage.returncode == 2 and "invalid choice" in usage.stderr
    for args, code in [
        (["token", "create", *data, "--role", "ingest", "--name", ""], "invalid_request"),
        (
            ["token", "create", *data, "--role", "ingest", "--name", "x", "--expires-in", "-5"],
            "invalid_request",
        ),
        (
            ["token", "create", *data, "--role", "admin", "--name", "x", "--purpose", "sign"],
            "invalid_request",
        ),
        (["token", "revoke", *data, "0123456789abcdef"], "not_found"),
        (["token", "list"], "config_error"),
    ]:
        result = _run(*args)
        assert result.returncode == 1, (args, result.stderr)
        assert result.stderr.startswith(f"error: {code}: "), (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
    keyring = tmp_path / "k.json"
    assert _run("keyring", "init", "--file", str(keyring)).returncode == 0
    assert stat.S_IMODE(keyring.stat().st_mode) == 0o600
    before = keyring.read_bytes()
    again = _run("keyring", "init", "--file", str(keyring))
    assert again.returncode == 1 and keyring.read_bytes() == before
