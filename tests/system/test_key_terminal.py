"""On a terminal: `keys rewrap` draws a progress bar with an ETA, and `users shred` asks for the user id.

Both run the real CLI under a pseudo-terminal (the `pty` module), as an operator would see them.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time

import pytest

from tests._db import RawDb
from tests.system._procs import ingest_users, run_cli, vault_env
from vault.settings import Settings

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("backend", ["sqlite"], indirect=True)]


def _on_terminal(env: dict[str, str], *args: str, answer: str | None = None) -> tuple[int, str]:
    """Run ``session-vault ARGS`` with stdin, stdout and stderr on a pseudo-terminal; type ``answer`` at
    the first prompt. Returns the exit code and everything the terminal showed."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal has a size
    process = subprocess.Popen(
        [sys.executable, "-m", "vault.cli", *args], env=env, stdin=terminal, stdout=terminal, stderr=terminal,
        close_fds=True,
    )  # fmt: skip
    os.close(terminal)
    shown = b""
    answered = answer is None
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(controller, 4096)
                except OSError:  # the terminal closed: the process is done
                    break
                if not chunk:
                    break
                shown += chunk
                if not answered and b"to confirm:" in shown:
                    os.write(controller, (answer or "").encode() + b"\n")
                    answered = True
            elif process.poll() is not None:
                break
        code = process.wait(timeout=30)
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
    return code, shown.decode("utf-8", "replace")


def test_rewrap_on_a_terminal_draws_a_progress_bar_with_an_eta(settings: Settings, raw: RawDb) -> None:
    ingest_users(settings, 6, 7700)
    env = vault_env(settings)
    assert run_cli(env, "keys", "rotate-kek").returncode == 0
    code, shown = _on_terminal(env, "keys", "rewrap", "--batch", "2")
    assert code == 0, shown
    assert "rewrap: 100%" in shown and "6/6" in shown, shown  # tqdm's bar: share, count, then rate and ETA
    assert "\r" in shown  # redrawn in place, not a line per batch
    assert "rewrapped 6 data keys in 3 batches; 0 failed" in shown
    assert raw.query("SELECT DISTINCT kek_version FROM user_keys") == [(2,)]


def test_shred_on_a_terminal_asks_for_the_user_id(settings: Settings, raw: RawDb) -> None:
    (user_id, _), (other, _) = ingest_users(settings, 2, 7800)
    env = vault_env(settings)
    code, shown = _on_terminal(env, "users", "shred", user_id, answer="not-the-user")
    assert code == 1 and "not confirmed; nothing was changed" in shown, shown
    assert raw.query("SELECT count(*) FROM sessions WHERE status = 'shredded'") == [(0,)]
    code, shown = _on_terminal(env, "users", "shred", user_id, answer=user_id)
    assert code == 0 and "shredded: 1 sessions" in shown, shown
    statuses = dict(raw.query("SELECT user_id, status FROM sessions"))
    assert statuses == {user_id: "shredded", other: "active"}
