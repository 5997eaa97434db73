"""``serve --workers N``: N processes serving both listeners, each with its own runtime and database pool.

The parent checks the KEK provider, binds both listening sockets once, and starts the workers (spawned,
not forked: no state of the parent's is shared), which accept connections on those sockets; the kernel
spreads connections between them. Nothing that correctness depends on lives in a process: leases,
fencing and the audit chain are the database's, so workers need no coordination (each runs a sealer;
the chain row's lock serialises them).

The parent forwards SIGINT and SIGTERM to the workers and waits for them (each finishes its requests
in flight, as uvicorn does on shutdown). A worker that dies unexpectedly (killed, or crashed) is replaced,
at most once a second; one that exits with an error at start-up (it could not open its runtime) stops
the whole server, with that exit code.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from typing import Any

from vault._server import check_kek, run, run_on
from vault.settings import Settings

__all__ = ["default_workers", "run_workers", "serve"]

log = logging.getLogger("vault.server")
_BACKLOG = 2048
_STOP_GRACE_SECONDS = 30.0


def default_workers(settings: Settings) -> int:
    """``VAULT_WORKERS``, or one per core (one on SQLite, which has one writer at a time anyway)."""
    if settings.workers:
        return settings.workers
    url = settings.database_url.get_secret_value() if settings.database_url else ""
    if url.startswith("sqlite"):
        return 1
    return len(os.sched_getaffinity(0)) or 1


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=_BACKLOG)
    sock.set_inheritable(True)
    return sock


def serve(settings: Settings, *, on_started: Callable[[], None] | None = None) -> None:
    """Serve until SIGINT or SIGTERM, in this process or in :func:`default_workers` processes."""
    workers = default_workers(settings)
    if workers > 1:
        run_workers(settings, workers, on_started=on_started)
    else:
        run(settings, on_started=on_started)


def _worker(settings: Settings, sockets: tuple[socket.socket, socket.socket], ready: Any) -> None:
    run_on(settings, sockets, on_started=lambda: ready.put(os.getpid()))


def run_workers(settings: Settings, workers: int, *, on_started: Callable[[], None] | None = None) -> None:
    """Serve with ``workers`` processes until SIGINT or SIGTERM. Exits the process with a worker's
    start-up failure code, if one fails to start."""
    asyncio.run(check_kek(settings))  # before anything listens: the same refusal as one process
    sockets = (_bind(settings.public_host, settings.public_port),
               _bind(settings.internal_host, settings.internal_port))  # fmt: skip
    context = multiprocessing.get_context("spawn")
    ready = context.SimpleQueue()
    stopping = False

    def start() -> BaseProcess:
        process = context.Process(target=_worker, args=(settings, sockets, ready), name="vault-worker")
        process.start()
        return process

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    procs = [start() for _ in range(workers)]
    started: set[int] = set()
    announced = False
    last_restart = 0.0
    code = 0
    try:
        while not stopping:
            while not ready.empty():
                started.add(ready.get())
            if not announced and len(started) >= workers:
                announced = True
                log.info("%d workers serving", workers)
                if on_started is not None:
                    on_started()
            for i, process in enumerate(procs):
                process.join(timeout=0.1 / workers)
                if process.exitcode is None or stopping:
                    continue
                if process.pid not in started:  # failed before it served: a configuration problem
                    code = process.exitcode or 1
                    stopping = True
                    break
                log.error("worker %d exited with code %s; starting another", process.pid, process.exitcode)
                time.sleep(max(0.0, 1.0 - (time.monotonic() - last_restart)))
                last_restart = time.monotonic()
                procs[i] = start()
    finally:
        for process in procs:
            if process.exitcode is None and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + _STOP_GRACE_SECONDS
        for process in procs:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                process.kill()
                process.join()
        for sock in sockets:
            sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code:
        raise SystemExit(code)
