"""The vault side of bench/vs_openbao.py: ``session-vault dev`` processes, process trees, new sessions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import count
from pathlib import Path

from bench._harness import say
from bench._setup import VaultProcess, free_port, log_tail, stop, vault_env, wait_healthy
from tests.sessiongen import make_session

__all__ = ["Sessions", "command_of", "dev_process", "kill_leftovers", "process_tree"]

GUESSED_INGEST_RATE = 1000.0  # sessions/s, to make enough sessions before the first ingest run


def process_tree(root: int) -> list[int]:
    """``root`` and its living descendants (a vault's worker processes)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue  # it just ended
            children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def command_of(pid: int) -> str:
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    return " ".join(a.decode(errors="replace") for a in args if a)[-90:]


def kill_leftovers(pids: list[int]) -> None:
    """After its parent stopped: SIGKILL any worker of a vault that still runs (started by this bench)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


@contextmanager
def dev_process(data_dir: Path, log: Path, extra_env: dict[str, str]) -> Iterator[VaultProcess]:
    """One ``session-vault dev`` on free ports, healthy; stopped on the way out."""
    public_port, internal_port = free_port(), free_port()
    args = ["dev", "--data-dir", str(data_dir), "--host", "127.0.0.1"]
    args += ["--public-port", str(public_port), "--internal-port", str(internal_port)]
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vault.cli", *args], env=vault_env("", {}) | extra_env,
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_healthy(proc, f"http://127.0.0.1:{internal_port}/healthz", log)
        yield VaultProcess("127.0.0.1", public_port, internal_port, proc.pid)
    except Exception:
        stop(proc)
        say(f"--- last lines of {log} ---\n{log_tail(log)}")
        raise
    finally:
        stop(proc)


class Sessions:
    """New sessions (a new user each) as ingest bodies, made before the runs that take them; each phase
    takes them from the start (its own database has none of them)."""

    def __init__(self, first_seed: int) -> None:
        self.bodies: list[bytes] = []
        self._seeds = count(first_seed)
        self.late = 0  # made during a timed run because too few were made before it
        self.fastest = 0.0  # the highest vault ingest rate seen so far (sessions/s)

    def ensure_for(self, runs: int, seconds: float, connections: int) -> None:
        """Enough for ``runs`` runs of ``seconds`` (warm-up included) at the fastest rate seen."""
        rate = max(self.fastest, GUESSED_INGEST_RATE)
        self.ensure(runs * (int(rate * seconds * 1.3) + connections))

    def ensure(self, n: int) -> None:
        while len(self.bodies) < n:
            self.bodies.append(json.dumps({"session": make_session(next(self._seeds))[0]}).encode())

    def reader(self) -> Callable[[], bytes]:
        position = 0

        def take() -> bytes:
            nonlocal position
            if position >= len(self.bodies):
                self.late += 1
                self.ensure(position + 1)
            position += 1
            return self.bodies[position - 1]

        return take
