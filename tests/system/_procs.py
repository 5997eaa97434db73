"""Vault server processes for system tests: ``session-vault serve`` as an operator would run it."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests._live import make_admin_token, make_token
from tests._openbao import BaoServer
from tests.sessiongen import make_session
from vault.service import Context, Role, Vault
from vault.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Served:
    public: str
    internal: str
    process: subprocess.Popen[bytes]


@contextmanager
def serve(settings: Settings, count: int, log_dir: Path) -> Iterator[list[Served]]:
    """Start ``count`` vault processes on one database and keyring; stop them on exit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    env["VAULT_DATABASE_URL"] = settings.require_database_url()
    env["VAULT_KEYRING_FILE"] = str(settings.require_keyring_file())
    env["VAULT_AUDIT_KEYS_FILE"] = str(settings.require_audit_keys_file())
    servers: list[Served] = []
    try:
        for i in range(count):
            public, internal = free_port(), free_port()
            with (log_dir / f"serve-{i}.log").open("wb") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "vault.cli", "serve"],
                    env={**env, "VAULT_PUBLIC_PORT": str(public), "VAULT_INTERNAL_PORT": str(internal)},
                    stdout=log, stderr=subprocess.STDOUT,
                )  # fmt: skip
            servers.append(Served(f"http://127.0.0.1:{public}", f"http://127.0.0.1:{internal}", proc))
        deadline = time.monotonic() + 30
        for server in servers:
            while True:
                assert server.process.poll() is None, (log_dir / "serve-0.log").read_text()
                assert time.monotonic() < deadline, "vault processes did not start"
                try:
                    if httpx.get(f"{server.internal}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        yield servers
    finally:
        for server in servers:
            server.process.terminate()
        for server in servers:
            server.process.wait(15)


def new_token(settings: Settings, server: Served, role: str, **extra: object) -> str:
    """A token of ``role``: made as the CLI makes it for ``signer`` and ``admin`` (the API mints neither),
    through the admin API with a fresh bootstrap admin token otherwise."""
    if role in ("signer", "admin"):
        return make_token(settings, Role(role), name=f"system-{role}", **extra)  # type: ignore[arg-type]
    admin = make_admin_token(settings)
    response = httpx.post(
        f"{server.internal}/v1/tokens",
        json={"role": role, "name": f"system-{role}", **extra},
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


# --- `session-vault` commands with a KEK provider of either kind (key-management system tests) ---


def kek_settings(base: Settings, provider: str, bao: BaoServer | None, tmp_path: Path) -> Settings:
    """``base`` with the KEK ``provider``: ``local`` (its keyring file), or ``transit`` with a fresh derived
    key on ``bao`` and the root token in a mode-0600 token file (never in the environment)."""
    if provider == "local":
        return base
    assert bao is not None
    token_file = tmp_path / "transit.token"
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(bao.root_token + "\n")
    values = {"kek_provider": "transit", "transit_addr": bao.addr, "transit_key": bao.create_key(),
              "transit_token_file": token_file}  # fmt: skip
    return Settings.model_validate(base.model_dump() | values)


def vault_env(settings: Settings) -> dict[str, str]:
    """The environment a `session-vault` command (CLI or serve) reads ``settings`` from: this process's
    without any ``VAULT_*``, plus the database, the key files and the KEK provider's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    env["VAULT_DATABASE_URL"] = settings.require_database_url()
    env["VAULT_AUDIT_KEYS_FILE"] = str(settings.require_audit_keys_file())
    if settings.keyring_file is not None:
        env["VAULT_KEYRING_FILE"] = str(settings.keyring_file)
    if settings.kek_provider == "transit":
        env["VAULT_KEK_PROVIDER"] = "transit"
        env["VAULT_TRANSIT_ADDR"] = str(settings.transit_addr)
        env["VAULT_TRANSIT_KEY"] = str(settings.transit_key)
        env["VAULT_TRANSIT_TOKEN_FILE"] = str(settings.transit_token_file)
    return env


def run_cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``session-vault ARGS`` to completion, stdin not a terminal (/dev/null), output captured."""
    return subprocess.run(
        [sys.executable, "-m", "vault.cli", *args], env=env, stdin=subprocess.DEVNULL, capture_output=True,
        text=True, timeout=timeout, check=False,
    )  # fmt: skip


def ingest_users(settings: Settings, n: int, seed: int) -> list[tuple[str, str]]:
    """Ingest ``n`` users' sessions in-process through the service (fast); return (user_id, session)."""
    made = [make_session(seed + i) for i in range(n)]

    async def run() -> None:
        vault = Vault.from_settings(settings)
        gate = asyncio.Semaphore(8)

        async def one(session: str) -> None:
            async with gate:
                await vault.sessions.ingest(Context(source="test"), session)

        try:
            await asyncio.gather(*(one(session) for session, _ in made))
        finally:
            await vault.close()

    asyncio.run(run())
    return [(body["userId"], session) for session, body in made]
