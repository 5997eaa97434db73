"""`session-vault keys ...` and `session-vault users ...` as an operator runs them: real processes on both
backends and both KEK providers (the local keyring file; Transit on a real OpenBao dev server, its token
in a mode-0600 file). Every change is checked in the database directly, and leaves its audit event."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests._db import RawDb
from tests.system._procs import ingest_users, kek_settings, run_cli, vault_env
from vault.errors import UserShredded
from vault.service import Context, Principal, Role, Vault
from vault.settings import Settings

# Both backends and both KEK providers, in two pairs (each CLI run starts an interpreter: the four pairs
# cost minutes; tests/integration/test_key_admin.py runs the same operations over the API on all four).
PAIRS = [("sqlite", "local"), ("postgresql", "transit")]
pytestmark = [
    pytest.mark.slow,  # a dozen CLI processes per test
    pytest.mark.parametrize(("backend", "provider"), PAIRS, indirect=True),
]

SIGNER = Principal(token_id="6" * 16, name="signer", role=Role.SIGNER, purposes=None, max_ttl_seconds=None)
KEYS = "SELECT user_id, dek_version, kek_id, kek_version, status, wrapped_dek FROM user_keys ORDER BY 1, 2"


@pytest.fixture
def provider(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture
def settings(settings: Settings, provider: str, request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    bao = request.getfixturevalue("openbao") if provider == "transit" else None
    return kek_settings(settings, provider, bao, tmp_path)


class Cli:
    """Runs `session-vault` with the test's settings; remembers every output to check for the token."""

    def __init__(self, settings: Settings) -> None:
        self.env = vault_env(settings)
        self.outputs: list[str] = []

    def __call__(self, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        result = run_cli(self.env, *args)
        self.outputs += [result.stdout, result.stderr]
        assert result.returncode == code, (args, result.returncode, result.stdout, result.stderr)
        return result

    def refused(self, *args: str, error: str) -> str:
        """Exit 1 with the one line ``error: ERROR: ...``; the line."""
        result = self(*args, code=1)
        assert result.stdout == "", (args, result.stdout)
        assert result.stderr.startswith(f"error: {error}: "), (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)
        return result.stderr.strip()

    def status(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self("keys", "status", "--json").stdout)
        for count in doc["deks"]:
            assert {type(v) for v in count.values()} == {str, int} and type(count["deks"]) is int, doc
        for name in ("active_version", "min_decryption_version", "total", "stale", "foreign"):
            assert type(doc[name]) is int, (name, doc)
        return doc


def _lease(settings: Settings, users: list[tuple[str, str]]) -> list[str]:
    """Lease each user's newest session in-process (the grant decrypts it); the sessions it released."""

    async def run() -> list[str]:
        vault = Vault.from_settings(settings)
        ctx = Context(principal=SIGNER, source="test")
        try:
            return [(await vault.leases.grant(ctx, purpose="sign", user_id=u)).session for u, _ in users]
        finally:
            await vault.close()

    return asyncio.run(run())


def _together(*steps: Callable[[], Any]) -> list[Any]:
    """Run independent CLI steps at once (a CLI run is mostly interpreter start-up)."""
    with ThreadPoolExecutor(len(steps)) as pool:
        futures = [pool.submit(step) for step in steps]
        return [future.result() for future in futures]


def _events(raw: RawDb, action: str) -> list[tuple[Any, ...]]:
    return raw.query(
        "SELECT outcome, actor_name, user_id, detail FROM audit_events WHERE action = %s ORDER BY id",
        [action],
    )


def _verify_audit(cli: Cli, settings: Settings) -> None:
    """`audit verify` passes the log of everything the test did (sealed first, as `serve` would)."""

    async def seal() -> None:
        vault = Vault.from_settings(settings)
        try:
            await vault.seal()
        finally:
            await vault.close()

    asyncio.run(seal())
    verified = cli("audit", "verify")
    counted = re.match(r"ok: (\d+) events \((\d+) sealed\), [1-9]\d* checkpoints", verified.stdout)
    assert counted is not None, verified.stdout
    assert int(counted[2]) == int(counted[1]) - 1  # all but verify's own event, written as it starts


def _no_secret(cli: Cli, settings: Settings, request: pytest.FixtureRequest) -> None:
    if settings.kek_provider == "transit":
        token = request.getfixturevalue("openbao").root_token
        assert not any(token in out for out in cli.outputs)


def test_kek_status_rotate_rewrap_retire(
    settings: Settings, raw: RawDb, request: pytest.FixtureRequest
) -> None:
    users = ingest_users(settings, 5, 7100)
    cli = Cli(settings)
    kek_id = "local" if settings.kek_provider == "local" else f"transit:transit/{settings.transit_key}"

    text, status, line = _together(
        lambda: cli("keys", "status"), cli.status,
        lambda: cli.refused("keys", "retire-kek", "1", error="invalid_request"),
    )  # fmt: skip
    assert text.stderr == ""
    assert f"KEK {kek_id}: active version 1, can unwrap [1]" in text.stdout
    assert f"  {kek_id} version 1: 5 data keys (active)" in text.stdout
    assert "rewrap: 5 of 5 data keys under the active version (100.0%)" in text.stdout
    assert status == {"kek_id": kek_id, "active_version": 1, "min_decryption_version": 1, "versions": [1],
                      "deks": [{"kek_id": kek_id, "kek_version": 1, "deks": 5}], "total": 5, "stale": 0,
                      "foreign": 0}  # fmt: skip
    assert "below the active one (1)" in line

    rotated = cli("keys", "rotate-kek")
    assert f"KEK {kek_id}: version 2 is active" in rotated.stderr and "5 data keys" in rotated.stderr
    before = raw.query(KEYS)
    # Nothing of these changes anything: status, a refused retirement, a dry run, refused batch sizes.
    status, line, dry, *_ = _together(
        cli.status, lambda: cli.refused("keys", "retire-kek", "1", error="invalid_request"),
        lambda: cli("keys", "rewrap", "--dry-run"),
        lambda: cli.refused("keys", "rewrap", "--batch", "0", error="invalid_request"),
        lambda: cli.refused("keys", "rewrap", "--batch", "10001", error="invalid_request"),
    )  # fmt: skip
    assert (status["active_version"], status["versions"], status["stale"]) == (2, [1, 2], 5)
    assert status["deks"] == [{"kek_id": kek_id, "kek_version": 1, "deks": 5}]
    assert "5 data keys still depend on KEK version 1" in line
    assert "would rewrap 5 data keys in 1 batches; 0 failed" in dry.stderr
    assert raw.query(KEYS) == before
    assert _events(raw, "key.rewrap") == []  # a dry run (and a refused run) records no rewrap

    run = cli("keys", "rewrap", "--batch", "2")
    lines = run.stderr.splitlines()
    assert "\r" not in run.stderr and "\x1b" not in run.stderr  # no terminal, no progress bar
    assert [re.sub(r" \(\d+/s\)$", "", x) for x in lines[:-1]] == [
        "rewrap: 2 of 5", "rewrap: 4 of 5", "rewrap: 5 of 5"
    ], lines  # fmt: skip
    assert lines[-1] == "rewrapped 5 data keys in 3 batches; 0 failed"
    after = raw.query(KEYS)
    assert [r[:5] for r in after] == [(*r[:3], 2, r[4]) for r in before]
    assert all(bytes(a[5]) != bytes(b[5]) for a, b in zip(after, before, strict=True))

    status, again, line = _together(
        cli.status, lambda: cli("keys", "rewrap", "--batch", "2"),
        lambda: cli.refused("keys", "retire-kek", "2", error="invalid_request"),
    )  # fmt: skip
    assert (status["stale"], status["total"]) == (0, 5)
    assert status["deks"] == [{"kek_id": kek_id, "kek_version": 2, "deks": 5}]
    assert again.stderr.splitlines()[-1] == "rewrapped 0 data keys in 0 batches; 0 failed"
    assert "below the active one (2)" in line
    assert raw.query(KEYS) == after

    retired = cli("keys", "retire-kek", "1")
    assert f"KEK {kek_id}: versions up to 1 retired" in retired.stderr
    status = cli.status()
    assert (status["versions"], status["min_decryption_version"], status["stale"]) == ([2], 2, 0)
    assert raw.query(KEYS) == after

    # Every session still opens after the old version is gone (in-process: the grant decrypts it).
    assert _lease(settings, users) == [session for _, session in users]

    rotate_events, rewrap_events = _events(raw, "key.rotate"), _events(raw, "key.rewrap")
    assert [(o, d) for o, _, _, d in rotate_events] == [("ok", f"{kek_id} version 2")]
    assert [d for _, _, _, d in rewrap_events] == [
        f"{kek_id} to version 2: {n} rewrapped, 0 failed, 0 skipped" for n in (2, 2, 1)
    ]
    assert [(o, d) for o, _, _, d in _events(raw, "key.retire")] == [("ok", f"{kek_id} through version 1")]
    cli_events = [*rotate_events, *rewrap_events, *_events(raw, "key.retire")]
    assert all(o == "ok" and str(actor).startswith("cli") for o, actor, _, _ in cli_events)
    _verify_audit(cli, settings)
    _no_secret(cli, settings, request)


def test_users_rotate_dek_and_shred(settings: Settings, raw: RawDb, request: pytest.FixtureRequest) -> None:
    alice, bob, carol = ingest_users(settings, 3, 7200)
    cli = Cli(settings)
    sessions = "SELECT user_id, id, status, dek_version, version, ciphertext FROM sessions ORDER BY 1, 2"
    before_sessions, before_keys = raw.query(sessions), raw.query(KEYS)

    rotated = cli("users", "rotate-dek", alice[0])
    assert "data key version 2: 1 sessions re-encrypted" in rotated.stderr
    alice_keys = raw.query(
        "SELECT dek_version, status, length(wrapped_dek) FROM user_keys WHERE user_id = %s ORDER BY 1",
        [alice[0]],
    )
    assert (
        alice_keys[0] == (1, "destroyed", 0) and alice_keys[1][:2] == (2, "active") and alice_keys[1][2] > 0
    )
    (old,) = [s for s in before_sessions if s[0] == alice[0]]
    (new,) = [s for s in raw.query(sessions) if s[0] == alice[0]]
    assert new[:5] == (alice[0], old[1], "active", 2, old[4]) and bytes(new[5]) != bytes(old[5])
    others = [s for s in before_sessions if s[0] != alice[0]]
    assert [s for s in raw.query(sessions) if s[0] != alice[0]] == others
    assert [k for k in raw.query(KEYS) if k[0] != alice[0]] == [k for k in before_keys if k[0] != alice[0]]
    # Alice's session opens under the new data key; Bob now holds a lease (the shred ends it).
    assert _lease(settings, [alice, bob]) == [alice[1], bob[1]]

    # Without --yes and with no terminal to ask on, a shred is refused and nothing changes.
    snapshot = (raw.query(sessions), raw.query(KEYS), raw.query("SELECT * FROM users ORDER BY id"))
    line, *_, abc, no_user = _together(
        lambda: cli.refused("users", "shred", bob[0], error="invalid_request"),
        lambda: cli.refused("users", "shred", "nobody-at-all", "--yes", error="not_found"),
        lambda: cli.refused("users", "rotate-dek", "nobody-at-all", error="not_found"),
        lambda: cli("keys", "retire-kek", "abc", code=2), lambda: cli("users", "shred", code=2),
    )  # fmt: skip
    assert "--yes" in line
    assert "invalid int value: 'abc'" in abc.stderr and no_user.stderr.startswith("usage: ")
    assert (raw.query(sessions), raw.query(KEYS), raw.query("SELECT * FROM users ORDER BY id")) == snapshot

    (bob_session,) = [bytes(s[5]) for s in before_sessions if s[0] == bob[0]]
    (bob_key,) = [bytes(k[5]) for k in before_keys if k[0] == bob[0]]
    shredded = cli("users", "shred", bob[0], "--yes")
    assert "shredded: 1 sessions, 1 data keys; 1 leases ended" in shredded.stderr
    assert raw.query("SELECT status, length(ciphertext) FROM sessions WHERE user_id = %s", [bob[0]]) == [
        ("shredded", 0)
    ]
    assert raw.query("SELECT status, length(wrapped_dek) FROM user_keys WHERE user_id = %s", [bob[0]]) == [
        ("destroyed", 0)
    ]
    assert raw.query("SELECT end_reason FROM leases WHERE user_id = %s", [bob[0]]) == [("shredded",)]
    dump = raw.everything()
    assert bob_session not in dump and bob_key not in dump
    assert [s for s in raw.query(sessions) if s[0] == carol[0]] == [
        s for s in before_sessions if s[0] == carol[0]
    ]
    with pytest.raises(UserShredded):
        _lease(settings, [bob])
    assert _lease(settings, [carol]) == [carol[1]]
    cli.refused("users", "rotate-dek", bob[0], error="user_shredded")

    assert [(o, u) for o, _, u, _ in _events(raw, "user.rotate_dek")] == [("ok", alice[0])]
    shreds = _events(raw, "user.shred")
    assert [(o, u, d) for o, _, u, d in shreds] == [
        ("ok", bob[0], "1 sessions, 1 keys destroyed; 1 leases ended")
    ]
    assert str(shreds[0][1]).startswith("cli")
    _verify_audit(cli, settings)
    _no_secret(cli, settings, request)
