"""Set-up the benchmarks share (never timed): scratch databases, throwaway keys, vault processes.

Scratch databases are named ``sv_bench_<pid>`` (copies: ``sv_bench_<pid>_<suffix>``) on the server of the
maintenance URL and dropped (forcibly) on the way out. Vault processes are real ``session-vault serve``
processes on free ports (or ``python -m bench.whatif serve``, with experimental changes patched in).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg

from vault.keys import create_keyring_file
from vault.settings import Settings
from vault.store import Store, upgrade

__all__ = [
    "DEFAULT_DATABASE_URL",
    "VaultProcess",
    "admin_execute",
    "database_copy",
    "is_local",
    "log_tail",
    "maintenance_url",
    "migrate",
    "scratch_database",
    "secret_files",
    "server_version",
    "stop",
    "vault_cli",
    "vault_env",
    "vault_process",
    "wait_healthy",
    "with_database",
]

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


# --- databases -----------------------------------------------------------------------------------------


def maintenance_url(database_url: str) -> str:
    """``--database-url`` as a plain ``postgresql://`` URL (psycopg's, asyncpg's)."""
    return database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


def with_database(url: str, name: str, *, driver: str = "postgresql") -> str:
    """``url`` pointing at database ``name``, with the scheme ``driver``."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme=driver, path="/" + name))


def is_local(url: str) -> bool:
    """Whether the server of ``url`` runs on this host (then its backends' CPU can be read)."""
    return urlsplit(url).hostname in {None, "", "127.0.0.1", "localhost", "::1"}


def admin_execute(maintenance: str, sql: str) -> None:
    with psycopg.connect(maintenance, autocommit=True) as conn:
        conn.execute(sql)


@contextmanager
def scratch_database(maintenance: str) -> Iterator[str]:
    """Create ``sv_bench_<pid>``; yield its name; drop it (forcibly) on the way out."""
    name = f"sv_bench_{os.getpid()}"
    admin_execute(maintenance, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin_execute(maintenance, f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        admin_execute(maintenance, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def database_copy(maintenance: str, template: str, name: str) -> Iterator[str]:
    """``CREATE DATABASE name TEMPLATE template``; yield ``name``; drop it (forcibly) on the way out."""
    admin_execute(maintenance, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin_execute(maintenance, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield name
    finally:
        admin_execute(maintenance, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def migrate(vault_url: str) -> None:
    store = Store.connect(vault_url, pool_size=1)
    try:
        await upgrade(store.engine)
    finally:
        await store.close()


def server_version(db_url: str) -> str:
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]).split()[0] if row else "?"


# --- the vault's CLI and environment -------------------------------------------------------------------


def vault_cli(args: Sequence[str], env: dict[str, str]) -> str:
    """Run ``session-vault ARGS`` with ``env``; its stdout. Raises with its stderr if it fails."""
    done = subprocess.run(
        [sys.executable, "-m", "vault.cli", *args], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"session-vault {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def vault_env(
    vault_url: str, secrets: dict[str, str], public_port: int = 0, internal_port: int = 0
) -> dict[str, str]:
    """This process's environment without its VAULT_* variables, plus the vault's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    env.update(secrets)
    if vault_url:
        env["VAULT_DATABASE_URL"] = vault_url
    if public_port:
        env["VAULT_PUBLIC_PORT"] = str(public_port)
    if internal_port:
        env["VAULT_INTERNAL_PORT"] = str(internal_port)
    return env


def secret_files(workdir: Path) -> dict[str, str]:
    """A throwaway keyring, and audit keys once the vault has them, in ``workdir``: their variables."""
    keyring = workdir / "keyring.json"
    create_keyring_file(keyring)
    env = {"VAULT_KEYRING_FILE": str(keyring)}
    if "audit_keys_file" in Settings.model_fields:
        audit_keys = workdir / "audit-keys.json"
        vault_cli(["audit", "keys", "init", "--file", str(audit_keys)], vault_env("", {}))
        env["VAULT_AUDIT_KEYS_FILE"] = str(audit_keys)
    return env


# --- vault processes -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(log: Path, lines: int = 30) -> str:
    """The vault's log without its per-request access lines (there can be thousands), last ``lines``."""
    kept = [line for line in log.read_text(errors="replace").splitlines() if "HTTP/1.1" not in line]
    return "\n".join(kept[-lines:])


def wait_healthy(proc: subprocess.Popen[bytes], url: str, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            status = proc.returncode
            raise RuntimeError(f"the vault exited with {status} before it was healthy:\n{log_tail(log)}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the vault was not healthy within {timeout:.0f}s (log: {log})")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=15)


@dataclass(frozen=True)
class VaultProcess:
    host: str
    public_port: int  # ingest
    port: int  # the internal listener: leases
    pid: int

    @property
    def public_base(self) -> str:
        return f"http://{self.host}:{self.public_port}"


@contextmanager
def vault_process(
    vault_url: str, secrets: dict[str, str], log: Path, extra_env: dict[str, str], whatif: str = ""
) -> Iterator[VaultProcess]:
    """One ``session-vault serve`` on free ports, healthy; stopped on the way out. ``whatif``: run it
    with those experimental changes (bench/whatif.py)."""
    public_port, internal_port = free_port(), free_port()
    env = vault_env(vault_url, secrets, public_port, internal_port) | extra_env
    module = "vault.cli"
    if whatif:
        module, env["SV_WHATIF"] = "bench.whatif", whatif
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, "serve"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_healthy(proc, f"http://127.0.0.1:{internal_port}/healthz", log)
        yield VaultProcess("127.0.0.1", public_port, internal_port, proc.pid)
    except Exception:
        stop(proc)
        print(f"--- last lines of {log} ---\n{log_tail(log)}", file=sys.stderr)
        raise
    finally:
        stop(proc)
