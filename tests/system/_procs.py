"""Vault server processes for system tests: ``session-vault serve`` as an operator would run it."""

from __future__ import annotations

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
from vault.service import Role
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
