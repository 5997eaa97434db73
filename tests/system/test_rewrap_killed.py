"""`session-vault keys rewrap` SIGKILLed halfway through: what it committed stays, whole; nothing is half
done; running it again finishes the job; and every session still decrypts.

On both backends and both KEK providers. A few hundred users are ingested in-process, the KEK is rotated,
and the rewrap (5 keys a batch) is killed once the database shows some but not all keys moved. If it
finishes before that is seen (a fast machine), the attempt is repeated with more users, never with a
tighter timing assertion.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests._db import RawDb
from tests.system._procs import ingest_users, kek_settings, run_cli, vault_env
from vault.crypto import dek_aad, key_version_of
from vault.keys import KekProvider, LocalKeyringProvider, TransitProvider, WrappedKey
from vault.service import Context, Principal, Role, Vault
from vault.settings import Settings

# Both backends and both KEK providers, in two pairs (each CLI run starts an interpreter: the four pairs
# cost minutes; tests/integration/test_key_admin.py runs the same operations over the API on all four).
PAIRS = [("sqlite", "local"), ("postgresql", "transit")]
pytestmark = [
    pytest.mark.slow,  # kills a process mid-run
    pytest.mark.parametrize(("backend", "provider"), PAIRS, indirect=True),
]

SIZES = (300, 900, 2500)  # users per attempt: more only if the rewrap outran the poll
KEYS = "SELECT user_id, dek_version, kek_id, kek_version, wrapped_dek FROM user_keys ORDER BY 1, 2"
SIGNER = Principal(token_id="8" * 16, name="signer", role=Role.SIGNER, purposes=None, max_ttl_seconds=None)
T = TypeVar("T")


@pytest.fixture
def provider(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture
def settings(settings: Settings, provider: str, request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    bao = request.getfixturevalue("openbao") if provider == "transit" else None
    return kek_settings(settings, provider, bao, tmp_path)


def _kek(settings: Settings) -> KekProvider:
    if settings.kek_provider == "transit":
        return TransitProvider.from_settings(settings)
    return LocalKeyringProvider.from_file(settings.require_keyring_file())


def _blob_version(blob: bytes) -> int:
    """The KEK version the wrapped key itself names (Transit: ``vault:vN:``; local: its header)."""
    if blob.startswith(b"vault:v"):
        match = re.fullmatch(rb"vault:v(\d+):.+", blob)
        assert match is not None
        return int(match.group(1))
    return key_version_of(blob)


async def _concurrently(items: list[T], each: Callable[[T], Awaitable[Any]], width: int = 8) -> list[Any]:
    gate = asyncio.Semaphore(width)

    async def one(item: T) -> Any:
        async with gate:
            return await each(item)

    return await asyncio.gather(*(one(item) for item in items))


def _open_all(settings: Settings, rows: list[tuple[Any, ...]]) -> list[bytes]:
    """Unwrap every row with the provider under the version its row names: each DEK's plaintext."""

    async def run() -> list[bytes]:
        kek = _kek(settings)

        async def unwrap(row: tuple[Any, ...]) -> bytes:
            user_id, dek_version, kek_id, kek_version, blob = row
            assert _blob_version(bytes(blob)) == kek_version, (user_id, kek_version)  # never half changed
            wrapped = WrappedKey(kek_id, kek_version, bytes(blob))
            return await kek.unwrap(wrapped, aad=dek_aad(user_id, dek_version))

        try:
            return await _concurrently(rows, unwrap)
        finally:
            await kek.close()

    return asyncio.run(run())


def _lease_all(settings: Settings, users: list[tuple[str, str]]) -> list[str]:
    """Lease every user's newest session in-process (the grant decrypts it): the sessions released."""

    async def run() -> list[str]:
        vault = Vault.from_settings(settings)
        ctx = Context(principal=SIGNER, source="test")

        async def lease(user: tuple[str, str]) -> str:
            return (await vault.leases.grant(ctx, purpose="sign", user_id=user[0], ttl_seconds=5)).session

        try:
            return await _concurrently(users, lease)
        finally:
            await vault.close()

    return asyncio.run(run())


def _moved(raw: RawDb, version: int) -> int:
    return int(raw.query("SELECT count(*) FROM user_keys WHERE kek_version = %s", [version])[0][0])


def _rewrap_killed_midway(env: dict[str, str], raw: RawDb, new: int, total: int, log: Path) -> bool:
    """Start a rewrap; SIGKILL it once some but not all keys are under ``new``. False if it finished first."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vault.cli", "keys", "rewrap", "--batch", "5"], env=env,
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if 0 < _moved(raw, new) < total:
                proc.send_signal(signal.SIGKILL)
                assert proc.wait(10) == -signal.SIGKILL
                return True
            time.sleep(0.002)
        assert proc.poll() == 0, log.read_text()
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _rewrapped_per_audit(raw: RawDb, kek_id: str, new: int) -> int:
    details = raw.query("SELECT detail FROM audit_events WHERE action = 'key.rewrap' ORDER BY id")
    pattern = re.compile(rf"{re.escape(kek_id)} to version {new}: (\d+) rewrapped, 0 failed, 0 skipped")
    counts = [m.group(1) for (detail,) in details if (m := pattern.fullmatch(str(detail)))]
    return sum(map(int, counts))


def test_a_killed_rewrap_leaves_whole_keys_and_resumes(
    settings: Settings, raw: RawDb, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    env = vault_env(settings)
    users: list[tuple[str, str]] = []
    for attempt, size in enumerate(SIZES):
        users += ingest_users(settings, size - len(users), 9000 + len(users))
        before = raw.query(KEYS)
        deks = _open_all(settings, before)
        rotated = run_cli(env, "keys", "rotate-kek")
        assert rotated.returncode == 0, rotated.stderr
        old = int(before[0][3])
        assert {int(r[3]) for r in before} == {old}
        new = old + 1
        if _rewrap_killed_midway(env, raw, new, size, tmp_path / f"rewrap-{attempt}.log"):
            break
    else:
        pytest.fail(f"the rewrap of {size} keys always finished before the poll saw it halfway")

    # Partial progress, and exactly what the killed run's audit events say it committed.
    after_kill = raw.query(KEYS)
    moved = sum(1 for r in after_kill if r[3] == new)
    assert 0 < moved < size
    kek_id = str(before[0][2])
    assert _rewrapped_per_audit(raw, kek_id, new) == moved
    # Each key is fully old (the very same bytes, under the old version) or fully new (rewrapped, and
    # its blob names the new version); either way it opens, under the version its row names, to the
    # same DEK as before.
    assert [r[:3] for r in after_kill] == [r[:3] for r in before]
    for was, now in zip(before, after_kill, strict=True):
        assert now[3] in (old, new)
        assert (bytes(now[4]) == bytes(was[4])) == (now[3] == old), now[:4]
    assert _open_all(settings, after_kill) == deks

    # Running it again finishes the job, and only the rest was left to do.
    finished = run_cli(env, "keys", "rewrap", "--batch", "50")
    assert finished.returncode == 0, finished.stderr
    assert finished.stderr.splitlines()[-1].startswith(f"rewrapped {size - moved} data keys in ")
    assert finished.stderr.splitlines()[-1].endswith("; 0 failed")
    done = raw.query(KEYS)
    assert {r[3] for r in done} == {new}
    assert all(bytes(d[4]) == bytes(k[4]) for d, k in zip(done, after_kill, strict=True) if k[3] == new)
    assert _open_all(settings, done) == deks
    assert _rewrapped_per_audit(raw, kek_id, new) == size

    # Every session still decrypts, and the status shows nothing left.
    assert _lease_all(settings, users) == [session for _, session in users]
    status = run_cli(env, "keys", "status", "--json")
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)
    assert (doc["active_version"], doc["stale"], doc["total"]) == (new, 0, size)
    assert doc["deks"] == [{"kek_id": kek_id, "kek_version": new, "deks": size}]
    if settings.kek_provider == "transit":
        token = request.getfixturevalue("openbao").root_token
        logs = [p.read_text() for p in tmp_path.glob("rewrap-*.log")]
        assert not any(token in text for text in [finished.stdout, finished.stderr, status.stderr, *logs])


def test_a_key_that_does_not_unwrap_is_left_alone_counted_and_audited(settings: Settings, raw: RawDb) -> None:
    env = vault_env(settings)
    (alice, _), bob, carol = ingest_users(settings, 3, 9900)
    # Alice's row now holds Bob's wrapped key: bound to Bob (AAD / derivation context), it never opens
    # as hers.
    raw.execute(
        "UPDATE user_keys SET wrapped_dek = (SELECT wrapped_dek FROM user_keys WHERE user_id = %s)"
        " WHERE user_id = %s",
        [bob[0], alice],
    )
    assert run_cli(env, "keys", "rotate-kek").returncode == 0
    swapped = raw.query(KEYS)
    for _ in range(2):  # the failure is not retried within a run, and a second run fails it again
        run = run_cli(env, "keys", "rewrap")
        assert run.returncode == 3, run.stderr
    assert run.stderr.splitlines()[-1] == "rewrapped 0 data keys in 1 batches; 1 failed"
    after = raw.query(KEYS)
    assert [r for r in after if r[0] == alice] == [r for r in swapped if r[0] == alice]  # left as it was
    assert sorted(r[3] for r in after) == [1, 2, 2]
    outcomes = raw.query("SELECT outcome, detail FROM audit_events WHERE action = 'key.rewrap' ORDER BY id")
    assert [(o, str(d).split(": ", 1)[1]) for o, d in outcomes] == [
        ("error", "2 rewrapped, 1 failed, 0 skipped"), ("error", "0 rewrapped, 1 failed, 0 skipped")
    ]  # fmt: skip
    status = run_cli(env, "keys", "status", "--json")
    assert json.loads(status.stdout)["stale"] == 1
    refused = run_cli(env, "keys", "retire-kek", "1")
    assert refused.returncode == 1 and "1 data keys still depend on KEK version 1" in refused.stderr
    assert _lease_all(settings, [bob, carol]) == [bob[1], carol[1]]
