"""Run the public and internal apps on their own ports, with one shared runtime per process (several
processes with ``VAULT_WORKERS``: :mod:`vault._workers`)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Callable, Coroutine, Generator
from typing import Any

import uvicorn
from fastapi import FastAPI

from vault._http import limited_protocol
from vault.api import create_internal_app, create_public_app
from vault.service import Vault
from vault.settings import Settings

__all__ = ["check_kek", "run", "run_on", "serve_both", "server_config"]


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to :func:`serve_both` (two servers share one loop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def server_config(
    app: FastAPI, settings: Settings, *, host: str, port: int, log_level: str = "info"
) -> uvicorn.Config:
    """The uvicorn configuration of one listener: the one ``serve`` runs and the tests' live vault runs.

    Forwarded headers are believed only from ``VAULT_TRUSTED_PROXIES`` (uvicorn trusts loopback by
    default). Slow or oversized requests meet the ``http_*`` limits (:mod:`vault._http`); past
    ``http_max_connections`` open connections, requests are answered 503. No WebSockets are served.
    """
    proxies = settings.trusted_proxy_list()
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        server_header=False,
        log_level=log_level,
        access_log=settings.access_log,
        http=limited_protocol(settings),
        ws="none",
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies,
        limit_concurrency=settings.http_max_connections,
    )


def _loop_run(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop where it is installed (it is, with uvicorn[standard])."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        asyncio.run(main)
        return
    uvloop.run(main)


def run(settings: Settings, *, on_started: Callable[[], None] | None = None) -> None:
    """Serve in this process until SIGINT or SIGTERM (``vault._workers.serve`` runs several)."""
    _loop_run(serve_both(settings, on_started=on_started))


def run_on(
    settings: Settings, sockets: tuple[socket.socket, socket.socket], *, on_started: Callable[[], None] | None
) -> None:
    """One worker of several: serve on listening sockets the parent bound (public, internal)."""
    _loop_run(serve_both(settings, sockets=sockets, on_started=on_started))


async def check_kek(settings: Settings) -> None:
    """The KEK must be usable before anything listens: a Transit key that is missing, not derived or of
    another type is a ConfigError, an unreachable or sealed KMS a KeyUnavailable (exit 1 either way)."""
    vault = Vault.from_settings(settings)
    try:
        await vault.kek.check()
    finally:
        await vault.close()


async def serve_both(
    settings: Settings,
    *,
    sockets: tuple[socket.socket, socket.socket] | None = None,
    on_started: Callable[[], None] | None = None,
) -> None:
    """Serve both listeners until SIGINT or SIGTERM. The runtime is opened before either listens."""
    vault = Vault.from_settings(settings)
    try:
        # The KEK must be usable before anything listens (see check_kek).
        await vault.kek.check()
    except BaseException:
        await vault.close()
        raise
    vault.start()
    try:
        public = create_public_app(settings, vault=vault)
        internal = create_internal_app(settings, vault=vault)
        servers = [
            _Server(server_config(public, settings, host=settings.public_host, port=settings.public_port)),
            _Server(
                server_config(internal, settings, host=settings.internal_host, port=settings.internal_port)
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

        if sockets is None:
            await asyncio.gather(*(s.serve() for s in servers), announce())
        else:
            await asyncio.gather(*(s.serve(sockets=[sock]) for s, sock in zip(servers, sockets, strict=True)),
                                 announce())  # fmt: skip
    finally:
        await vault.close()
