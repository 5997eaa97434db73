"""Backend parity: every ``Tx`` method, with edge values, gives the same result or the same error on
PostgreSQL (asyncpg, the vault's own pool) and SQLite (SQLAlchemy).

Each scenario runs on a fresh database of each backend and records what every call returned, or the type
of what it raised; the two records must be equal. Before the executor applied SQLAlchemy's bind
processing on PostgreSQL, a naive datetime was stored there and refused on SQLite; strings over a
column's length were refused there and stored here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from tests._db import drop_pg_database, new_pg_database, new_sqlite_database, pg_vault_url
from vault.audit import AuditKeys
from vault.errors import AuditUnavailable, StoreUnavailable
from vault.service import Auditor, Context
from vault.store import SessionRow, Store, TokenRow, Tx, UserKeyRow

AWARE = datetime(2026, 12, 1, 12, 0, 0, 123456, tzinfo=UTC)
NAIVE = datetime(2026, 12, 1, 12, 0, 0)
OTHER_ZONE = AWARE.astimezone(timezone(timedelta(hours=5, minutes=30)))
AUDITOR = Auditor(AuditKeys.generate())


def _key(user: str, version: int = 1, created_at: datetime = AWARE) -> UserKeyRow:
    return UserKeyRow(user, version, b"\x00wrapped", "local", 1, "active", created_at)


def _session(sid: str, user: str, **changes: Any) -> SessionRow:
    values: dict[str, Any] = dict(
        id=sid, user_id=user, version=1, dek_version=1, format="para", has_signers=True, status="active",
        created_at=AWARE, updated_at=AWARE, expires_at=None, ciphertext=b"",
    )  # fmt: skip
    values.update(changes)
    return SessionRow(**values)


def _token(tid: str, **changes: Any) -> TokenRow:
    values: dict[str, Any] = dict(
        id=tid, name="", role="signer", secret_hash=b"h", purposes=(), max_ttl_seconds=None, created_at=AWARE,
        expires_at=None, revoked_at=None, mac=None,
    )  # fmt: skip
    values.update(changes)
    return TokenRow(**values)


Step = Callable[[Tx], Awaitable[Any]]
U128, S36 = "u" * 128, "s" * 36

# Each scenario: steps run in one transaction each, in order (a failed step's transaction rolls back).
SCENARIOS: dict[str, list[Step]] = {
    "users and keys": [
        lambda tx: tx.ensure_user_locked(U128, AWARE),
        lambda tx: tx.ensure_user_locked(U128 + "x", AWARE),  # over the column: refused alike
        lambda tx: tx.ensure_user_locked("", AWARE),  # empty strings are values like any other
        lambda tx: tx.ensure_user_locked("naive", NAIVE),
        lambda tx: tx.insert_user_key(_key(U128)),
        lambda tx: tx.insert_user_key(_key(U128, 2, OTHER_ZONE)),  # another zone, read back as UTC
        lambda tx: tx.insert_user_key(_key(U128, 1)),  # duplicate primary key
        lambda tx: tx.active_user_key(U128),
        lambda tx: tx.user_key(U128, 2),
        lambda tx: tx.user_key(U128, 2**31),  # outside the column's range
        lambda tx: tx.user_key("nobody", 1),
    ],
    "sessions": [
        lambda tx: tx.ensure_user_locked("alice", AWARE),
        lambda tx: tx.insert_user_key(_key("alice")),
        lambda tx: tx.insert_session(_session(S36, "alice", expires_at=AWARE + timedelta(days=1))),
        lambda tx: tx.insert_session(_session("t" * 37, "alice", status="revoked")),
        lambda tx: tx.insert_session(_session("n" * 36, "alice", created_at=NAIVE, status="revoked")),
        lambda tx: tx.insert_session(_session("z" * 36, "alice", format="para\x00", status="revoked")),
        lambda tx: tx.insert_session(_session("m" * 36, "nobody")),  # foreign key
        lambda tx: tx.session(S36),
        lambda tx: tx.session("s" * 36 + " "),
        lambda tx: tx.session("\ud800"),
        lambda tx: tx.supersede_active_sessions("alice", AWARE),
        lambda tx: tx.write_back_session(
            session_id=S36,
            expected_version=9,
            dek_version=1,
            ciphertext=b"x",
            session_format="para",
            has_signers=False,
            expires_at=None,
            now=AWARE,
        ),
        lambda tx: tx.write_back_session(
            session_id=S36,
            expected_version=1,
            dek_version=1,
            ciphertext=b"x",
            session_format="para",
            has_signers=False,
            expires_at=NAIVE,
            now=AWARE,
        ),
        lambda tx: tx.session(S36),
        lambda tx: tx.lock_session("no-such-session"),
        lambda tx: tx.lock_lease("no-such-lease"),
        lambda tx: tx.peek_session(user_id="alice"),
    ],
    "tokens": [
        lambda tx: tx.insert_token(_token("a" * 16)),
        lambda tx: tx.insert_token(_token("b" * 16, name="n" * 128, purposes=None, expires_at=AWARE)),
        lambda tx: tx.insert_token(_token("c" * 16, name="n" * 129)),
        lambda tx: tx.insert_token(_token("d" * 16, max_ttl_seconds=2**31)),
        lambda tx: tx.insert_token(_token("e" * 16, revoked_at=NAIVE)),
        lambda tx: tx.token("a" * 16),
        lambda tx: tx.token("b" * 16),
        lambda tx: tx.revoke_token("a" * 16, AWARE, b"mac"),
        lambda tx: tx.revoke_token("a" * 16, AWARE, b"mac"),
        lambda tx: tx.revoke_token("nobody", AWARE, b"mac"),
        lambda tx: tx.tokens(),
    ],
    "audit": [
        lambda tx: tx.insert_audit(AUDITOR.record(Context(), "x.y", "ok", user_id="", detail="d" * 200)),
        lambda tx: tx.insert_audit(AUDITOR.record(Context(), "x.y", "ok", fencing_token=2**63 - 1)),
        lambda tx: tx.insert_audit(_raw_record(detail="d" * 201)),
        lambda tx: tx.insert_audit(_raw_record(fencing_token=2**63)),
        lambda tx: tx.unsealed_events(10),
        lambda tx: tx.sealed_from(1),
        lambda tx: tx.lock_chain(),
    ],
}


def _raw_record(**changes: Any) -> Any:
    """An event that skipped the auditor's bounding (what a bug would pass)."""
    record = AUDITOR.record(Context(), "x.y", "ok")
    return type(record)(**{**asdict(record), **changes})


def _normal(value: Any) -> Any:
    """A comparable form: dataclasses as dicts, without the per-run random parts of audit events."""
    if isinstance(value, list | tuple):
        return [_normal(v) for v in value]
    if is_dataclass(value) and not isinstance(value, type):
        fields = asdict(value)
        for volatile in ("id", "uid", "at_us", "mac", "now_us", "lease_expires_us"):
            if volatile in fields and type(value).__name__ in ("Event", "SessionPeek", "LockedSession"):
                fields.pop(volatile)
        return {k: _normal(v) for k, v in fields.items()}
    return value


async def _observe(url: str, steps: list[Step]) -> list[Any]:
    store = Store.connect(url, pool_size=1)
    seen: list[Any] = []
    try:
        for step in steps:
            try:
                async with store.transaction() as tx:
                    seen.append(("ok", _normal(await step(tx))))
            except (ValueError, StoreUnavailable, AuditUnavailable) as exc:
                seen.append(("raised", type(exc).__name__))
    finally:
        await store.close()
    return seen


@pytest.fixture
def both(pg_template: str, sqlite_template: Path, tmp_path: Path) -> Iterator[tuple[str, str]]:
    name = new_pg_database(pg_template)
    try:
        yield pg_vault_url(name), new_sqlite_database(sqlite_template, tmp_path)
    finally:
        drop_pg_database(name)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_tx_method_agrees_across_backends(scenario: str, both: tuple[str, str]) -> None:
    pg_url, sqlite_url = both
    on_pg = asyncio.run(_observe(pg_url, SCENARIOS[scenario]))
    on_sqlite = asyncio.run(_observe(sqlite_url, SCENARIOS[scenario]))
    for i, (a, b) in enumerate(zip(on_pg, on_sqlite, strict=True)):
        assert a == b, f"step {i}: PostgreSQL {a!r} != SQLite {b!r}"
    assert any(kind == "raised" for kind, _ in on_pg), "the scenario must exercise a refusal"
    assert any(kind == "ok" for kind, _ in on_pg)
