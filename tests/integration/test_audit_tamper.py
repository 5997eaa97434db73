"""Tamper with the audit log directly in the database, every way; `session-vault audit verify` names it.

The log is built through the real service layer (ingest, grants, releases, token changes), sealed and
checkpointed by the real sealer; verification runs as a user would run it: the CLI, against the live
database and against an export file.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests._db import RawDb, tamper
from tests.sessiongen import make_session
from vault.keys import DekCache, LocalKeyringProvider, load_audit_keys_file
from vault.service import Auditor, Context, LeaseService, Principal, Role, create_token, ingest, seal, utcnow
from vault.settings import Settings
from vault.store import Store

SIGNER = Principal(token_id="5" * 16, name="signer", role=Role.SIGNER, purposes=None, max_ttl_seconds=None)


def _build_log(settings: Settings, rounds: int = 2) -> None:
    """Write events, sealing and checkpointing after each round: ~8 events per round."""

    async def run() -> None:
        store = Store.connect(settings.require_database_url(), pool_size=2)
        keys = load_audit_keys_file(settings.require_audit_keys_file())
        auditor = Auditor(keys)
        kek = LocalKeyringProvider.from_file(settings.require_keyring_file())
        cache = DekCache(ttl=60, max_entries=10)
        leases = LeaseService(store=store, kek=kek, cache=cache, auditor=auditor, max_ttl=300)
        ctx = Context(principal=SIGNER, request_id="t", source="127.0.0.1")
        try:
            for r in range(rounds):
                session, body = make_session(900 + r)
                await ingest(store, kek, cache, auditor, Context(source="127.0.0.1"), session, now=utcnow())
                for _ in range(2):
                    grant = await leases.grant(ctx, purpose="sign", user_id=body["userId"])
                    await leases.release(ctx, grant.lease_id, fencing_token=grant.fencing_token)
                await create_token(
                    store, auditor, Context(source="cli"), role=Role.INGEST, name=f"t{r}", now=utcnow()
                )
                await seal(store, keys, checkpoint_every_us=0)
        finally:
            await store.close()

    asyncio.run(run())


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    env.update(
        VAULT_DATABASE_URL=settings.require_database_url(),
        VAULT_KEYRING_FILE=str(settings.require_keyring_file()),
        VAULT_AUDIT_KEYS_FILE=str(settings.require_audit_keys_file()),
    )
    return subprocess.run(
        [sys.executable, "-m", "vault.cli", "audit", *args], capture_output=True, text=True, env=env, timeout=60,
        check=False,
    )  # fmt: skip


def _verify_fails(settings: Settings, tmp_path: Path, kind: str, where: str) -> None:
    """Both the live check and an export's check fail, naming ``kind`` at ``where``."""
    export = tmp_path / "export.jsonl"
    made = _cli(settings, "export", "--out", str(export))
    assert made.returncode == 0, made.stderr
    pem = tmp_path / "audit.pem"
    pem.write_text(load_audit_keys_file(settings.require_audit_keys_file()).public_key.pem())
    for args in (("verify",), ("verify", "--file", str(export), "--public-key", str(pem))):
        result = _cli(settings, *args)
        assert result.returncode == 3, (args, result.stdout, result.stderr)
        first = result.stderr.splitlines()[0]
        assert first.startswith(f"FAIL: {kind} at {where}"), (args, first)


def _seq_of(raw: RawDb, seq: int, column: str = "id") -> Any:
    return raw.query(f"SELECT {column} FROM audit_events WHERE seq = %s", [seq])[0][0]


def test_an_untouched_log_verifies(settings: Settings, raw: RawDb, tmp_path: Path) -> None:
    _build_log(settings)
    sealed = raw.query("SELECT count(*) FROM audit_events WHERE seq IS NOT NULL")[0][0]
    assert sealed == raw.query("SELECT count(*) FROM audit_events")[0][0] > 10
    assert raw.query("SELECT count(*) FROM audit_checkpoints")[0][0] == 2
    result = _cli(settings, "verify")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"ok: {sealed + 1} events")  # + the verify's own audit.verify event
    export = tmp_path / "e.jsonl"
    assert _cli(settings, "export", "--out", str(export)).returncode == 0
    from_file = _cli(settings, "verify", "--file", str(export))
    assert from_file.returncode == 0 and "pass --public-key to pin it" in from_file.stderr


def test_a_modified_event_is_named(settings: Settings, raw: RawDb, tmp_path: Path) -> None:
    _build_log(settings)
    tamper(raw, [("UPDATE audit_events SET detail = 'nothing to see' WHERE seq = 5", [])])
    _verify_fails(settings, tmp_path, "modified", f"seq 5, event id {_seq_of(raw, 5)}")


def test_a_modified_last_event_is_named(settings: Settings, raw: RawDb, tmp_path: Path) -> None:
    _build_log(settings)
    last = raw.query("SELECT max(seq) FROM audit_events")[0][0]
    tamper(raw, [("UPDATE audit_events SET actor_name = 'someone else' WHERE seq = %s", [last])])
    _verify_fails(settings, tmp_path, "modified", f"seq {last}")


def test_a_deleted_event_is_named(settings: Settings, raw: RawDb, tmp_path: Path) -> None:
    _build_log(settings)
    tamper(raw, [("DELETE FROM audit_events WHERE seq = 4", [])])
    _verify_fails(settings, tmp_path, "deleted", "seq 4")


def test_an_inserted_unsealed_event_is_named(settings: Settings, raw: RawDb, tmp_path: Path) -> None:
    """A row added behind the vault's back carries no valid MAC: the sealer leaves it, verify names it."""
    _build_log(settings, rounds=1)
    first_at = raw.query("SELECT min(at_us) FROM audit_events")[0][0]
    tamper(raw, [(
        "INSERT INTO audit_events (at_us, action, outcome, actor_name, user_id, mac) VALUES (%s, %s, %s, %s, %s, %s)",
        [first_at - 120_000_000, "lease.grant", "ok", "framed", "victim", b"\x00" * 32],
    )])  # fmt: skip
    forged = raw.query("SELECT id FROM audit_events WHERE actor_name = 'framed'")[0][0]
    _build_log(settings, rounds=1)  # the sealer runs again and must not seal it
    assert raw.query("SELECT seq FROM audit_events WHERE id = %s", [forged])[0][0] is None
    _verify_fails(settings, tmp_path, "inserted", f"event id {forged}")


def test_an_inserted_sealed_looking_event_is_named(settings: Settings, raw: RawDb, tmp_path: Path) -> None:
    _build_log(settings)
    last = raw.query("SELECT max(seq) FROM audit_events")[0][0]
    tamper(raw, [(
        "INSERT INTO audit_events (at_us, action, outcome, seq, hash) VALUES (%s, %s, %s, %s, %s)",
        [1, "token.create", "ok", last + 1, os.urandom(32)],
    )])  # fmt: skip
    _verify_fails(settings, tmp_path, "inserted", f"seq {last + 1}")


def test_two_swapped_events_are_named(settings: Settings, raw: RawDb, tmp_path: Path) -> None:
    _build_log(settings)
    a, b = _seq_of(raw, 6), _seq_of(raw, 7)
    tamper(raw, [
        ("UPDATE audit_events SET seq = -1 WHERE id = %s", [a]),
        ("UPDATE audit_events SET seq = 6 WHERE id = %s", [b]),
        ("UPDATE audit_events SET seq = 7 WHERE id = %s", [a]),
    ])  # fmt: skip
    _verify_fails(settings, tmp_path, "reordered", f"seq 6, event id {b}")


def test_a_cut_tail_is_named(settings: Settings, raw: RawDb, tmp_path: Path) -> None:
    _build_log(settings)
    covered = raw.query("SELECT max(seq) FROM audit_checkpoints")[0][0]
    tamper(raw, [("DELETE FROM audit_events WHERE seq > %s", [covered - 3])])
    _verify_fails(settings, tmp_path, "tail_cut", f"seq {covered - 2}")


def test_a_forged_checkpoint_is_named(settings: Settings, raw: RawDb, tmp_path: Path) -> None:
    _build_log(settings)
    tamper(raw, [("UPDATE audit_checkpoints SET head = %s WHERE id = 2", [os.urandom(32)])])
    _verify_fails(settings, tmp_path, "checkpoint_forged", "seq")


def test_a_deleted_checkpoint_is_named(settings: Settings, raw: RawDb, tmp_path: Path) -> None:
    _build_log(settings, rounds=3)
    tamper(raw, [("DELETE FROM audit_checkpoints WHERE id = 2", [])])
    _verify_fails(settings, tmp_path, "checkpoint_deleted", "checkpoints")


def test_a_rewritten_chain_is_caught_by_the_checkpoint(
    settings: Settings, raw: RawDb, tmp_path: Path
) -> None:
    """An attacker who edits an event and recomputes every later hash still cannot re-sign the checkpoint."""
    from vault.audit import GENESIS, content_hash, link

    _build_log(settings)
    tamper(raw, [("UPDATE audit_events SET detail = 'rewritten' WHERE seq = 3", [])])
    rows = raw.query("SELECT id, seq FROM audit_events WHERE seq IS NOT NULL ORDER BY seq")
    events = _events(raw)
    prev, updates = GENESIS, []
    for event_id, seq in rows:
        prev = link(prev, seq, event_id, content_hash(events[event_id]))
        updates.append(("UPDATE audit_events SET hash = %s WHERE id = %s", [prev, event_id]))
    tamper(raw, updates)
    _verify_fails(settings, tmp_path, "rewritten", "seq")


def _events(raw: RawDb) -> dict[int, Any]:
    from vault.audit import CONTENT_FIELDS

    columns = ", ".join(("id", *CONTENT_FIELDS))
    return {
        row[0]: dict(zip(CONTENT_FIELDS, row[1:], strict=True))
        for row in raw.query(f"SELECT {columns} FROM audit_events")
    }


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_events SET detail = 'x' WHERE seq = 1",
        "UPDATE audit_events SET seq = 99999 WHERE seq = 1",
        "DELETE FROM audit_events WHERE seq = 1",
        "UPDATE audit_checkpoints SET seq = 0 WHERE id = 1",
        "DELETE FROM audit_checkpoints WHERE id = 1",
    ],
)
def test_the_database_refuses_to_change_the_log(settings: Settings, raw: RawDb, statement: str) -> None:
    _build_log(settings, rounds=1)
    before = raw.query("SELECT count(*), sum(seq) FROM audit_events")
    with pytest.raises((psycopg.Error, __import__("sqlite3").Error), match="append-only"):
        raw.execute(statement)
    assert raw.query("SELECT count(*), sum(seq) FROM audit_events") == before


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)  # SQLite has no TRUNCATE
def test_truncate_is_refused_on_postgresql(settings: Settings, raw: RawDb) -> None:
    _build_log(settings, rounds=1)
    for table in ("audit_events", "audit_checkpoints"):
        with pytest.raises(psycopg.Error, match="append-only"):
            raw.execute(f"TRUNCATE {table} CASCADE")
