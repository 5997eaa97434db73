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

__all__ = ["serve_both"]


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to :func:`serve_both` (two servers share one loop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _config(app: FastAPI, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app, host=host, port=port, lifespan="on", server_header=False, log_level="info", access_log=True
    )


async def serve_both(settings: Settings, *, on_started: Callable[[], None] | None = None) -> None:
    """Serve both listeners until SIGINT or SIGTERM. The runtime is opened before either listens."""
    vault = Vault.from_settings(settings)
    vault.start()
    try:
        servers = [
            _Server(
                _config(create_public_app(settings, vault=vault), settings.public_host, settings.public_port)
            ),
            _Server(
                _config(
                    create_internal_app(settings, vault=vault), settings.internal_host, settings.internal_port
                )
            ),
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
