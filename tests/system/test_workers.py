"""`session-vault serve` with several worker processes: one per core by default on PostgreSQL, one on SQLite;
a worker killed with SIGKILL is replaced while the others keep serving; SIGTERM stops them all."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.system._procs import new_token, serve
from vault.settings import Settings


def _children(pid: int) -> set[int]:
    """The worker processes of a ``serve`` (not multiprocessing's resource tracker)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                    found.add(int(child))
            except FileNotFoundError:  # gone meanwhile
                continue
    return found


def _wait_for(predicate: object, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_workers_share_the_listeners_and_a_killed_one_is_replaced(settings: Settings, tmp_path: Path) -> None:
    cores = len(os.sched_getaffinity(0))
    with serve(settings, 1, tmp_path) as [server]:
        parent = server.process.pid
        workers = _children(parent)
        assert len(workers) == max(cores, 1), (tmp_path / "serve-0.log").read_text()
        token = new_token(settings, server, "auditor")
        headers = {"Authorization": f"Bearer {token}"}
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        _wait_for(lambda: _dead(victim), "the killed worker is still running")  # then it accepts nothing more
        # the survivors answer at once, each request on a new connection (the kernel may give it to any)
        for _ in range(10):
            assert (
                httpx.get(f"{server.internal}/v1/audit/events", headers=headers, timeout=10).status_code
                == 200
            )
        _wait_for(lambda: len(_children(parent) - {victim}) == len(workers), "no replacement worker started")
        replacement = (_children(parent) - workers).pop()
        _wait_for(lambda: httpx.get(f"{server.internal}/readyz", timeout=5).status_code == 200, "not ready")
        assert replacement not in workers
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) == 0
        for pid in _children_gone(workers | {replacement}):
            pytest.fail(f"worker {pid} outlived the server")
    log = (tmp_path / "serve-0.log").read_text()
    assert f"worker {victim} exited with code -9; starting another" in log


def _dead(pid: int) -> bool:
    """Gone, or a zombie waiting for its parent to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def _children_gone(pids: set[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        alive.append(pid)
    return alive


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_serve_on_sqlite_runs_one_process_by_default(settings: Settings, tmp_path: Path) -> None:
    with serve(settings, 1, tmp_path) as [server]:
        assert _children(server.process.pid) == set()
        assert httpx.get(f"{server.internal}/readyz", timeout=5).status_code == 200
