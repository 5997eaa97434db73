"""Run the public and internal apps on their own ports in one process, with one shared runtime."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Generator

import uvicorn
from fastapi import FastAPI

from vault.api import create_internal_app, create_public_app
from vault.service import Vault
from vault.settings import Settings

__all__ = ["run", "serve_both"]


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to :func:`serve_both` (two servers share one loop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _config(app: FastAPI, host: str, port: int, access_log: bool) -> uvicorn.Config:
    return uvicorn.Config(
        app, host=host, port=port, lifespan="on", server_header=False, log_level="info", access_log=access_log
    )


def run(settings: Settings, *, on_started: Callable[[], None] | None = None) -> None:
    """Serve until SIGINT or SIGTERM, on uvloop where it is installed (it is, with uvicorn[standard])."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        asyncio.run(serve_both(settings, on_started=on_started))
        return
    uvloop.run(serve_both(settings, on_started=on_started))


async def serve_both(settings: Settings, *, on_started: Callable[[], None] | None = None) -> None:
    """Serve both listeners until SIGINT or SIGTERM. The runtime is opened before either listens."""
    vault = Vault.from_settings(settings)
    vault.start()
    try:
        public = create_public_app(settings, vault=vault)
        internal = create_internal_app(settings, vault=vault)
        servers = [
            _Server(_config(public, settings.public_host, settings.public_port, settings.access_log)),
            _Server(_config(internal, settings.internal_host, settings.internal_port, settings.access_log)),
        ]

        def stop() -> None:
            for server in servers:
                server.should_exit = True

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop)

        async def announce() -> None:
            while not all(s.started for s in servers):
                if any(s.should_exit for s in servers):
                    return
                await asyncio.sleep(0.05)
            if on_started is not None:
                on_started()

        await asyncio.gather(*(s.serve() for s in servers), announce())
    finally:
        await vault.close()
