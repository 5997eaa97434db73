"""A real vault on loopback: both apps under uvicorn, in a background thread with its own event loop.

The vault reads its wall clock from ``LiveVault.clock`` (a :class:`~tests._clocks.SettableClock`, real time
until a test freezes or advances it): token and session expiry and audit timestamps follow it. Lease
decisions do not: they read the database's clock.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import uvicorn

from tests._clocks import SettableClock
from vault._server import _Server, server_config
from vault.api import create_internal_app, create_public_app
from vault.keys import load_audit_keys_file
from vault.service import Auditor, Context, Role, Vault, create_token, utcnow
from vault.settings import Settings
from vault.store import Store


@dataclass
class LiveVault:
    public: str
    internal: str
    admin_token: str
    settings: Settings
    clock: SettableClock
    reference: str | None = None  # the internal app without the lean path (FastAPI answers every route)

    def token(self, role: str, **extra: object) -> str:
        """A new token of ``role``: over the API for the roles it mints, else as the CLI does (direct)."""
        if role in ("signer", "admin"):
            return make_token(self.settings, Role(role), name=f"test-{role}", **extra)  # type: ignore[arg-type]
        response = httpx.post(
            f"{self.internal}/v1/tokens",
            json={"role": role, "name": f"test-{role}", **extra},
            headers={"Authorization": f"Bearer {self.admin_token}"},
        )
        assert response.status_code == 201, response.text
        token: str = response.json()["token"]
        return token


def make_token(
    settings: Settings,
    role: Role,
    *,
    name: str,
    purposes: list[str] | None = None,
    max_ttl_seconds: int | None = None,
    expires_in: int | None = None,
) -> str:
    """A token made the way ``session-vault token create`` makes it (no principal: the CLI)."""

    async def run() -> str:
        store = Store.connect(settings.require_database_url(), pool_size=1)
        auditor = Auditor(load_audit_keys_file(settings.require_audit_keys_file()), actor_name="cli:test")
        try:
            token, _ = await create_token(
                store, auditor, Context(source="cli"), role=role, name=name, now=utcnow(),
                purposes=None if purposes is None else tuple(purposes), max_ttl_seconds=max_ttl_seconds,
                expires_in=expires_in,
            )  # fmt: skip
            return token
        finally:
            await store.close()

    return asyncio.run(run())


def make_admin_token(settings: Settings) -> str:
    return make_token(settings, Role.ADMIN, name="test-admin")


@contextmanager
def live_vault(settings: Settings, *, reference: bool = False) -> Iterator[LiveVault]:
    admin = make_admin_token(settings)
    clock = SettableClock()
    started = threading.Event()
    servers: list[uvicorn.Server] = []
    failure: list[BaseException] = []

    async def main() -> None:
        vault = Vault.from_settings(settings, clock=clock)
        vault.start()
        try:
            apps = [create_public_app(settings, vault=vault), create_internal_app(settings, vault=vault)]
            if reference:
                apps.append(create_internal_app(settings, vault=vault, lane=False))
            for app in apps:
                config = server_config(app, settings, host="127.0.0.1", port=0, log_level="warning")
                servers.append(_Server(config))
            tasks = [asyncio.create_task(s.serve()) for s in servers]
            while not all(s.started for s in servers):
                if any(t.done() for t in tasks):
                    break
                await asyncio.sleep(0.01)
            started.set()
            await asyncio.gather(*tasks)
        finally:
            await vault.close()

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:
            failure.append(exc)
            started.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(30), "the vault did not start"
    if failure or not all(s.started for s in servers):
        raise RuntimeError("the vault failed to start") from (failure[0] if failure else None)
    ports = [s.servers[0].sockets[0].getsockname()[1] for s in servers]
    try:
        yield LiveVault(
            public=f"http://127.0.0.1:{ports[0]}",
            internal=f"http://127.0.0.1:{ports[1]}",
            admin_token=admin,
            settings=settings,
            clock=clock,
            reference=f"http://127.0.0.1:{ports[2]}" if reference else None,
        )
    finally:
        for server in servers:
            server.should_exit = True
        thread.join(30)
