"""Audit queries (mixed into :class:`~vault.store.Tx`): append, seal, checkpoint, read.

Appending never takes a shared lock, so grants do not wait on the chain. The sealer takes the single
``audit_chain`` row lock (``FOR UPDATE`` on PostgreSQL; SQLite's write lock) and gives unsealed events
their sequence numbers and hashes in the order it finds them committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, bindparam, func, insert, select, update
from sqlalchemy.sql import Executable

from vault.audit import Checkpoint, Event
from vault.errors import AuditUnavailable, StoreUnavailable
from vault.store._exec import Executor
from vault.store._models import AuditChain, AuditCheckpoint, AuditEvent
from vault.store._rows import AuditRecord, ChainState

__all__ = ["FIRST_ID", "AuditFilter", "AuditQueries"]

# Below every event id: reads that must see every row start here, not at 0 (the database refuses ids
# <= 0 from the vault's role, but a superuser could write one, and it must not hide from verify).
FIRST_ID = -(2**63)

_E: Table = cast(Table, AuditEvent.__table__)
_C: Table = cast(Table, AuditCheckpoint.__table__)
_CHAIN: Table = cast(Table, AuditChain.__table__)
_EVENT_COLUMNS = [c for c in _E.c]
_RECORD_FIELDS = [f for f in AuditRecord.__dataclass_fields__]
_CHAIN_FIELDS = [f for f in ChainState.__dataclass_fields__]


@dataclass(frozen=True, slots=True)
class AuditFilter:
    user_id: str | None = None
    actor_token_id: str | None = None
    action: str | None = None
    outcome: str | None = None
    since_us: int | None = None
    until_us: int | None = None
    subject: str | None = None


def _insert_event(_now: ColumnElement[Any]) -> Executable:
    # inline(): no RETURNING of the new id, which nobody reads
    return (
        insert(_E).values({name: bindparam(name, type_=_E.c[name].type) for name in _RECORD_FIELDS}).inline()
    )


def _lock_chain(_now: ColumnElement[Any]) -> Executable:
    return select(*(_CHAIN.c[n] for n in _CHAIN_FIELDS)).where(_CHAIN.c.id == 1).with_for_update()


def _unsealed(_now: ColumnElement[Any]) -> Executable:
    return (
        select(*_EVENT_COLUMNS)
        .where(_E.c.seq.is_(None), _E.c.id > bindparam("after_id"))
        .order_by(_E.c.id)
        .limit(bindparam("limit"))
    )


def _max_event_id(_now: ColumnElement[Any]) -> Executable:
    return select(func.max(_E.c.id).label("max_id"))


def _sealed_from(_now: ColumnElement[Any]) -> Executable:
    return select(*_EVENT_COLUMNS).where(_E.c.seq >= bindparam("seq")).order_by(_E.c.seq).limit(3)


def _seal_one(_now: ColumnElement[Any]) -> Executable:
    return (
        update(_E)
        .where(_E.c.id == bindparam("event_id"), _E.c.seq.is_(None))
        .values(seq=bindparam("new_seq"), hash=bindparam("new_hash"))
    )


def _save_chain(_now: ColumnElement[Any]) -> Executable:
    return update(_CHAIN).where(_CHAIN.c.id == 1).values({n: bindparam(n) for n in _CHAIN_FIELDS})


def _insert_checkpoint(_now: ColumnElement[Any]) -> Executable:
    names = ["id", "at_us", "seq", "head", "prev", "key_id", "signature", "max_id"]
    return insert(_C).values({n: bindparam(n, type_=_C.c[n].type) for n in names})


def _checkpoints(_now: ColumnElement[Any]) -> Executable:
    return select(_C).where(_C.c.id > bindparam("after_id")).order_by(_C.c.id).limit(bindparam("limit"))


class AuditQueries(Executor):
    async def insert_audit(self, record: AuditRecord) -> None:
        """Append an event in the caller's transaction. If it cannot be written the whole transaction
        fails with :class:`AuditUnavailable`: whatever the event records does not happen (fail-closed)."""
        try:
            await self.fetch(_insert_event, asdict(record))
        except StoreUnavailable as exc:
            raise AuditUnavailable() from exc

    async def insert_audits(self, records: Sequence[AuditRecord]) -> None:
        """Append several events in the caller's transaction (one round trip on PostgreSQL), fail-closed
        as :meth:`insert_audit`."""
        if not records:
            return
        try:
            await self.execute_many(_insert_event, [asdict(r) for r in records])
        except StoreUnavailable as exc:
            raise AuditUnavailable() from exc

    async def lock_chain(self) -> ChainState:
        row = await self.fetch_one(_lock_chain)
        assert row is not None, "the audit_chain row is missing (migrations not applied?)"
        return ChainState(**row)

    async def unsealed_events(self, limit: int, *, after_id: int = FIRST_ID) -> list[Event]:
        return [Event(**row) for row in await self.fetch(_unsealed, {"after_id": after_id, "limit": limit})]

    async def max_event_id(self) -> int:
        """The highest event id in the table (0 when it is empty)."""
        row = await self.fetch_one(_max_event_id)
        return int(row["max_id"] or 0) if row is not None else 0

    async def sealed_from(self, seq: int) -> list[Event]:
        """The sealed events at ``seq`` and after, in order, at most three (the sealer's check of the
        chain's head: the event before it, the head itself, and whether anything was sealed past it)."""
        return [Event(**row) for row in await self.fetch(_sealed_from, {"seq": seq})]

    async def seal_events(self, sealed: Sequence[tuple[int, int, bytes]]) -> None:
        """Set (seq, hash) on each (id, seq, hash), once: the append-only trigger refuses a second time."""
        if sealed:
            rows = [{"event_id": i, "new_seq": s, "new_hash": h} for i, s, h in sealed]
            await self.execute_many(_seal_one, rows)

    async def save_chain(self, state: ChainState) -> None:
        await self.fetch(_save_chain, asdict(state))

    async def insert_checkpoint(self, checkpoint: Checkpoint) -> None:
        await self.fetch(_insert_checkpoint, asdict(checkpoint))

    async def audit_events(self, where: AuditFilter, *, after_id: int, limit: int) -> list[Event]:
        """Filtered reads are built per call (auditors' queries are not the hot path)."""
        query = select(*_EVENT_COLUMNS).where(_E.c.id > after_id)
        for column, value in (
            (_E.c.user_id, where.user_id),
            (_E.c.actor_token_id, where.actor_token_id),
            (_E.c.action, where.action),
            (_E.c.outcome, where.outcome),
        ):
            if value is not None:
                query = query.where(column == value)
        if where.since_us is not None:
            query = query.where(_E.c.at_us >= where.since_us)
        if where.until_us is not None:
            query = query.where(_E.c.at_us < where.until_us)
        if where.subject is not None:
            query = query.where(_E.c.subjects.contains(where.subject, autoescape=True))
        query = query.order_by(_E.c.id).limit(limit)
        return [Event(**row) for row in await self.fetch_query(query)]

    async def audit_checkpoints(self, *, after_id: int, limit: int) -> list[Checkpoint]:
        return [
            Checkpoint(**row)
            for row in await self.fetch(_checkpoints, {"after_id": after_id, "limit": limit})
        ]
