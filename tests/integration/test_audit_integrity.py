"""Integrity of the audit log against its own database role (and a superuser): forged sealed events, copies,
future-dated and high-water insertions, MAC'd live verification, the authenticated chain row, adopt-chain.

On PostgreSQL "the vault's role" is a login role with SELECT/INSERT/UPDATE/DELETE and no ownership; on
SQLite (no roles) it is a plain sqlite3 connection, which the triggers guard. The superuser is tamper().
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from tests._db import RawDb, pg_execute, tamper
from tests.integration.test_audit_tamper import _build_log, _cli, _events, _verify_fails
from vault.audit import CONTENT_FIELDS, AuditKeys, content_hash, link
from vault.errors import AuditChainBroken
from vault.keys import load_audit_keys_file
from vault.service import Auditor, Context, SealResult, Vault, seal
from vault.settings import Settings
from vault.store import Store

T = TypeVar("T")
Write = Callable[[str, Sequence[Any]], None]
DAY_US = 86_400_000_000
DB_ERRORS = (psycopg.Error, sqlite3.Error)


def _now_us() -> int:
    return time.time_ns() // 1000


def _with_store(settings: Settings, fn: Callable[[Store, AuditKeys], Awaitable[T]]) -> T:
    async def run() -> T:
        store = Store.connect(settings.require_database_url(), pool_size=1)
        try:
            return await fn(store, load_audit_keys_file(settings.require_audit_keys_file()))
        finally:
            await store.close()

    return asyncio.run(run())


def _seal(settings: Settings, *, every_us: int = 0, now_us: int | None = None) -> SealResult:
    return _with_store(settings, lambda s, k: seal(s, k, checkpoint_every_us=every_us, now_us=now_us))


def _write_events(settings: Settings, n: int) -> None:
    """``n`` genuine events, written (unsealed) as the vault writes them."""

    async def run(store: Store, keys: AuditKeys) -> None:
        for i in range(n):
            async with store.transaction() as tx:
                await tx.insert_audit(
                    Auditor(keys).record(Context(source="t"), "audit.read", "ok", detail=f"{i}")
                )

    _with_store(settings, run)


def _superuser(raw: RawDb) -> Write:
    return lambda sql, params: tamper(raw, [(sql, params)])


@pytest.fixture
def as_vault(backend: str, raw: RawDb) -> Iterator[Write]:
    """Writes as the vault's own database role (PostgreSQL: a non-owner role; SQLite: plain sqlite3)."""
    if backend == "sqlite":
        yield raw.execute
        return
    role = f"sv_vault_{os.getpid()}"
    pg_execute(f'DROP ROLE IF EXISTS "{role}"')
    pg_execute(f'CREATE ROLE "{role}" LOGIN')
    raw.execute(f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{role}"')
    raw.execute(f'GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO "{role}"')
    parts = urlsplit(raw.url.replace("postgresql+asyncpg://", "postgresql://"))
    dsn = urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port}"))

    def write(sql: str, params: Sequence[Any]) -> None:
        with psycopg.connect(dsn) as conn:
            conn.execute(sql, tuple(params))

    yield write
    raw.execute(f'DROP OWNED BY "{role}"')
    pg_execute(f'DROP ROLE IF EXISTS "{role}"')


def _insert_forged(write: Write, raw: RawDb, *, at_us: int | None = None, mac: bytes | None = None) -> int:
    """An unsealed lease.grant the vault never wrote (a fresh uid, a MAC that is not the vault's)."""
    uid = secrets.token_hex(16)
    write(
        "INSERT INTO audit_events (uid, at_us, action, outcome, actor_name, user_id, mac)"
        " VALUES (%s, %s, 'lease.grant', 'ok', 'framed', 'victim', %s)",
        [uid, _now_us() if at_us is None else at_us, mac or bytes(32)],
    )
    return int(raw.query("SELECT id FROM audit_events WHERE uid = %s", [uid])[0][0])


def _head(raw: RawDb) -> tuple[int, bytes]:
    seq, digest = raw.query(
        "SELECT seq, hash FROM audit_events WHERE seq IS NOT NULL ORDER BY seq DESC LIMIT 1"
    )[0]
    return int(seq), bytes(digest)


def _seal_forged(write: Write, raw: RawDb, event_id: int) -> tuple[int, bytes]:
    """Give the row seq = head + 1 and the hash the public formula gives; return (seq, hash)."""
    seq, prev = _head(raw)
    digest = link(prev, seq + 1, event_id, content_hash(_events(raw)[event_id]))
    write("UPDATE audit_events SET seq = %s, hash = %s WHERE id = %s", [seq + 1, digest, event_id])
    return seq + 1, digest


def _state(raw: RawDb) -> list[tuple[Any, ...]]:
    return raw.query("SELECT * FROM audit_chain") + raw.query("SELECT count(*) FROM audit_checkpoints")


def _sealer_refuses(settings: Settings, raw: RawDb, match: str | None) -> None:
    """The sealer raises AuditChainBroken and seals nothing, signs nothing, moves nothing."""
    _write_events(settings, 1)  # something the sealer would otherwise seal
    before = (_state(raw), raw.query("SELECT id, seq FROM audit_events ORDER BY id"))
    with pytest.raises(AuditChainBroken, match=match):
        _seal(settings)
    assert (_state(raw), raw.query("SELECT id, seq FROM audit_events ORDER BY id")) == before


def _live_fails(settings: Settings, first_line: str) -> None:
    result = _cli(settings, "verify")
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert result.stderr.splitlines()[0].startswith(f"FAIL: {first_line}"), result.stderr


# --- forged sealed events, a moved chain row, an edited head ------------------------------------------------


@pytest.mark.parametrize(
    ("uid", "mac", "sealed"),
    [("ab" * 16, bytes(32), True), (None, bytes(32), False), ("ab" * 16, None, False)],
    ids=["sealed", "no_uid", "no_mac"],
)
def test_the_vaults_role_cannot_insert_a_sealed_or_unauthenticated_row(
    settings: Settings, raw: RawDb, as_vault: Write, uid: str | None, mac: bytes | None, sealed: bool
) -> None:
    _build_log(settings, rounds=1)
    seq, digest = (_head(raw)[0] + 1, os.urandom(32)) if sealed else (None, None)
    before = raw.counts()["audit_events"]
    with pytest.raises(DB_ERRORS, match="arrive unsealed, with a uid"):
        as_vault(
            "INSERT INTO audit_events (at_us, action, outcome, uid, mac, seq, hash)"
            " VALUES (%s, 'lease.grant', 'ok', %s, %s, %s, %s)",
            [_now_us(), uid, mac, seq, digest],
        )
    assert raw.counts()["audit_events"] == before


def test_a_forged_event_the_chain_row_was_moved_to_stops_the_sealer(settings: Settings, raw: RawDb) -> None:
    """Public-formula hash at head + 1 and audit_chain.seq/head moved to it: the row's MAC gives it away."""
    _build_log(settings, rounds=1)
    su = _superuser(raw)
    seq, digest = _seal_forged(su, raw, _insert_forged(su, raw))
    su("UPDATE audit_chain SET seq = %s, head = %s", [seq, digest])
    _sealer_refuses(settings, raw, "the audit_chain row fails its MAC")
    _live_fails(settings, f"forged at seq {seq}")


@pytest.mark.parametrize("attacker", ["superuser", "vault_role"])
def test_an_event_sealed_past_the_head_stops_the_sealer_and_fails_live_verify(
    settings: Settings, raw: RawDb, tmp_path: Path, attacker: str, request: pytest.FixtureRequest
) -> None:
    """Nothing moves audit_chain. The vault's role gets there too: insert unsealed, then "seal" it with the
    one UPDATE the triggers allow. An export cannot tell (the chain is consistent, the row uncovered); the
    live check can: its MAC. ``forged`` is reported, not ``chain_broken``: verify_live checks the chain row
    only once the events verify, and the forged event is the root cause."""
    _build_log(settings, rounds=1)
    write = _superuser(raw) if attacker == "superuser" else request.getfixturevalue("as_vault")
    forged = _insert_forged(write, raw)
    seq, _ = _seal_forged(write, raw, forged)
    _sealer_refuses(settings, raw, f"sealed past the chain's head \\(seq {seq - 1}\\)")
    export = tmp_path / "export.jsonl"
    assert _cli(settings, "export", "--out", str(export)).returncode == 0
    offline = _cli(settings, "verify", "--file", str(export))
    assert offline.returncode == 0 and " 0 events after" not in offline.stdout, offline.stderr
    _live_fails(settings, f"forged at seq {seq}, event id {forged}: the event's MAC does not verify")


def test_a_checkpoint_time_moved_into_the_future_stops_the_sealer(
    settings: Settings, raw: RawDb, as_vault: Write
) -> None:
    """Before, the sealer trusted checkpoint_at_us and silently never checkpointed again."""
    _build_log(settings, rounds=1)
    as_vault("UPDATE audit_chain SET checkpoint_at_us = %s", [_now_us() + 3650 * DAY_US])
    _sealer_refuses(settings, raw, "the audit_chain row fails its MAC")
    _live_fails(settings, "chain_broken at checkpoints: the audit_chain row fails its MAC")


def test_an_edited_head_event_stops_the_sealer(settings: Settings, raw: RawDb) -> None:
    _build_log(settings, rounds=1)
    seq, _ = _head(raw)
    tamper(raw, [("UPDATE audit_events SET detail = 'nothing to see' WHERE seq = %s", [seq])])
    _sealer_refuses(settings, raw, f"the event at the chain's head \\(seq {seq}\\) fails its MAC or hash")


# --- copies of genuine events -------------------------------------------------------------------------------

_COPY = ", ".join((*CONTENT_FIELDS, "mac"))


def test_a_copy_of_a_genuine_event_is_refused_or_named(
    settings: Settings, raw: RawDb, as_vault: Write, tmp_path: Path
) -> None:
    _build_log(settings, rounds=1)
    original = raw.query("SELECT min(id) FROM audit_events WHERE action = 'lease.grant'")[0][0]
    copy = f"INSERT INTO audit_events ({_COPY}) SELECT {_COPY} FROM audit_events WHERE id = %s"
    with pytest.raises(DB_ERRORS, match=r"ux_audit_events_uid|audit_events\.uid"):
        as_vault(copy, [original])
    raw.execute("DROP INDEX ux_audit_events_uid")
    _superuser(raw)(copy, [original])
    (duplicate,) = raw.query("SELECT max(id) FROM audit_events")[0]
    assert duplicate != original
    _verify_fails(settings, tmp_path, "inserted", f"event id {duplicate}: a copy of event id {original}")
    assert _seal(settings).sealed >= 1  # its MAC is genuine, so the sealer seals it; verify still names it
    seq = raw.query("SELECT seq FROM audit_events WHERE id = %s", [duplicate])[0][0]
    _live_fails(settings, f"inserted at seq {seq}, event id {duplicate}: a copy of event id {original}")


# --- future-dated and high-water insertions -----------------------------------------------------------------


def test_a_future_dated_forged_row_is_named(settings: Settings, raw: RawDb, tmp_path: Path) -> None:
    _build_log(settings, rounds=1)
    forged = _insert_forged(_superuser(raw), raw, at_us=_now_us() + DAY_US, mac=os.urandom(32))
    _verify_fails(settings, tmp_path, "future_dated", f"event id {forged}: dated ")
    # --max-skew is honoured: two days of skew let the date pass; live, the MAC still names it.
    result = _cli(settings, "verify", "--max-skew", str(2 * 86_400))
    assert result.returncode == 3, result.stderr
    assert result.stderr.startswith(f"FAIL: forged at event id {forged}"), result.stderr


def test_an_unsealed_row_a_settled_checkpoint_passed_is_inserted(
    settings: Settings, raw: RawDb, tmp_path: Path
) -> None:
    """Dated after every checkpoint (the time rule cannot reach it), but below a settled high-water mark."""
    _build_log(settings, rounds=1)
    (t,) = raw.query("SELECT max(at_us) FROM audit_checkpoints")[0]
    forged = _insert_forged(_superuser(raw), raw, at_us=t + 90_000_000)
    # Checkpoint 2 sees (and refuses) the row; checkpoint 3, 119 s later, settles checkpoint 2.
    assert all(_seal(settings, now_us=t + dt).checkpoint for dt in (1_000_000, 120_000_000))
    assert raw.query("SELECT max_id FROM audit_checkpoints WHERE id = 2")[0][0] >= forged
    detail = "an event the vault never sealed (below a checkpoint's high-water)"
    _verify_fails(settings, tmp_path, "inserted", f"event id {forged}: {detail}")


# --- a changed, uncovered last event ------------------------------------------------------------------------


def test_a_changed_uncovered_last_event_is_modified(settings: Settings, raw: RawDb, tmp_path: Path) -> None:
    _build_log(settings, rounds=1)
    _write_events(settings, 3)
    result = _seal(settings, every_us=DAY_US)
    assert result.sealed == 3 and result.checkpoint is None
    seq, _ = _head(raw)
    assert seq > raw.query("SELECT max(seq) FROM audit_checkpoints")[0][0]
    tamper(raw, [("UPDATE audit_events SET detail = 'nothing to see' WHERE seq = %s", [seq])])
    event_id = raw.query("SELECT id FROM audit_events WHERE seq = %s", [seq])[0][0]
    _verify_fails(settings, tmp_path, "modified", f"seq {seq}, event id {event_id}: the last event's content")


# --- a refused row is logged once ---------------------------------------------------------------------------


def test_the_sealer_logs_a_refused_row_once(
    settings: Settings, raw: RawDb, caplog: pytest.LogCaptureFixture
) -> None:
    _build_log(settings, rounds=1)
    forged = _insert_forged(_superuser(raw), raw, mac=os.urandom(32))

    async def run() -> list[SealResult]:
        vault = Vault.from_settings(settings)
        try:
            return [await vault.seal() for _ in range(3)]
        finally:
            await vault.close()

    with caplog.at_level(logging.WARNING, logger="vault.audit"):
        results = asyncio.run(run())
    assert [r.rejected for r in results] == [1, 1, 1]
    warnings = [
        m for (name, lvl, m) in caplog.record_tuples if (name, lvl) == ("vault.audit", logging.WARNING)
    ]
    assert warnings == [f"audit: event id {forged} has no valid MAC; it is left unsealed"]


# --- adopt-chain --------------------------------------------------------------------------------------------


def test_adopt_chain_authenticates_a_pre_0004_chain_row(settings: Settings, raw: RawDb) -> None:
    _build_log(settings, rounds=1)
    tamper(raw, [("UPDATE audit_chain SET mac = NULL", [])])
    _sealer_refuses(settings, raw, "no MAC but is not the genesis state")
    adopted = _cli(settings, "adopt-chain")
    assert adopted.returncode == 0, adopted.stderr
    assert adopted.stdout.startswith("ok: the log verifies") and "now authenticated" in adopted.stdout
    assert raw.query("SELECT mac FROM audit_chain")[0][0] is not None
    assert _seal(settings).sealed >= 2  # sealing resumes (the test's event, the adopt_chain event)
    assert raw.query("SELECT count(seq) FROM audit_events WHERE action = 'audit.adopt_chain'") == [(1,)]
    assert _cli(settings, "verify").returncode == 0
    again = _cli(settings, "adopt-chain")
    assert again.returncode == 1 and "authenticated already" in again.stderr


def test_adopt_chain_refuses_a_log_with_a_forged_event(settings: Settings, raw: RawDb) -> None:
    _build_log(settings, rounds=1)
    su = _superuser(raw)
    seq, digest = _seal_forged(su, raw, _insert_forged(su, raw))
    su("UPDATE audit_chain SET seq = %s, head = %s, mac = NULL", [seq, digest])  # a pre-0004 attacker
    result = _cli(settings, "adopt-chain")
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert result.stderr.startswith(f"FAIL: forged at seq {seq}") and "left as it was" in result.stderr
    assert raw.query("SELECT mac FROM audit_chain")[0][0] is None
    _sealer_refuses(settings, raw, "no MAC but is not the genesis state")


# --- the chain row against the checkpoints, and rows with ids <= 0 -----------------------------------------

_CHAIN = ("seq", "head", "checkpoint_id", "checkpoint_hash", "checkpoint_at_us", "max_id", "mac")


def test_a_replayed_older_chain_row_stops_the_sealer(settings: Settings, raw: RawDb, as_vault: Write) -> None:
    """A genuine older row (same seq, an older checkpoint) put back by the vault's role. Before, it passed:
    every seal then re-signed checkpoint id 2 and failed with StoreUnavailable, and live verify said ok."""
    _build_log(settings, rounds=1)
    saved = raw.query(f"SELECT {', '.join(_CHAIN)} FROM audit_chain")[0]
    assert _seal(settings, now_us=saved[4] + 1_000_000).checkpoint is not None  # nothing new: same seq
    as_vault(f"UPDATE audit_chain SET {', '.join(f'{c} = %s' for c in _CHAIN)}", list(saved))
    _sealer_refuses(settings, raw, "does not name the newest checkpoint")
    _live_fails(
        settings, "chain_broken at checkpoints: the audit_chain row does not name the newest checkpoint"
    )


@pytest.mark.parametrize(
    ("column", "value"),
    [
        pytest.param("checkpoint_hash", b"\x01" * 32, id="hash"),
        pytest.param("checkpoint_id", 7, id="id"),
        pytest.param("max_id", 2**62, id="max_id"),
    ],
)
def test_adopt_chain_refuses_a_row_that_disagrees_with_the_log(
    settings: Settings, raw: RawDb, column: str, value: object
) -> None:
    """Before, adopt-chain MAC'd whatever the row said, and the vault then signed checkpoints that verify
    reports as checkpoint_forged (a wrong hash) or checkpoint_deleted (a wrong id)."""
    _build_log(settings, rounds=1)
    tamper(raw, [(f"UPDATE audit_chain SET mac = NULL, {column} = %s", [value])])
    result = _cli(settings, "adopt-chain")
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert result.stderr.startswith("FAIL: chain_broken"), result.stderr
    assert raw.query("SELECT mac FROM audit_chain")[0][0] is None


def test_a_row_with_a_non_positive_id_is_refused_or_verified(
    settings: Settings, raw: RawDb, as_vault: Write
) -> None:
    """Before, every read started at id > 0: a row with id <= 0 was never exported, sealed or verified."""
    _build_log(settings, rounds=1)
    insert = (
        "INSERT INTO audit_events (id, uid, at_us, action, outcome, actor_name, user_id, mac)"
        " VALUES (%s, %s, %s, 'lease.grant', 'ok', 'framed', 'victim', %s)"
    )
    with pytest.raises(DB_ERRORS, match="positive id"):
        as_vault(insert, [0, secrets.token_hex(16), _now_us(), bytes(32)])
    _superuser(raw)(insert, [-1, secrets.token_hex(16), _now_us(), bytes(32)])
    _live_fails(settings, "inserted at event id -1")  # below any id the vault assigns
