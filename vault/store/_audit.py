"""Audit queries (mixed into :class:`~vault.store.Tx`): append, seal, checkpoint, read.

Appending never takes a shared lock, so grants do not wait on the chain. The sealer takes the single
``audit_chain`` row lock (``FOR UPDATE`` on PostgreSQL; SQLite's write lock) and gives unsealed events
their sequence numbers and hashes in the order it finds them committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from vault.audit import Checkpoint, Event
from vault.errors import AuditUnavailable
from vault.store._models import AuditChain, AuditCheckpoint, AuditEvent
from vault.store._rows import AuditRecord, ChainState

__all__ = ["AuditFilter", "AuditQueries"]

_E = AuditEvent.__table__
_C = AuditCheckpoint.__table__
_EVENT_COLUMNS = [c for c in _E.c]


@dataclass(frozen=True, slots=True)
class AuditFilter:
    user_id: str | None = None
    actor_token_id: str | None = None
    action: str | None = None
    outcome: str | None = None
    since_us: int | None = None
    until_us: int | None = None
    subject: str | None = None


def _event(row: Any) -> Event:
    return Event(**row)


class AuditQueries:
    conn: AsyncConnection
    _dialect: str

    async def insert_audit(self, record: AuditRecord) -> None:
        """Append an event in the caller's transaction. If it cannot be written the whole transaction
        fails with :class:`AuditUnavailable`: whatever the event records does not happen (fail-closed)."""
        try:
            await self.conn.execute(
                insert(AuditEvent).values(
                    at_us=record.at_us,
                    action=record.action,
                    outcome=record.outcome,
                    actor_token_id=record.actor_token_id,
                    actor_name=record.actor_name,
                    user_id=record.user_id,
                    session_id=record.session_id,
                    lease_id=record.lease_id,
                    fencing_token=record.fencing_token,
                    purpose=record.purpose,
                    detail=record.detail,
                    request_id=record.request_id,
                    source=record.source,
                    subjects=record.subjects,
                    mac=record.mac,
                )
            )
        except DBAPIError as exc:
            raise AuditUnavailable() from exc

    async def lock_chain(self) -> ChainState:
        query = select(AuditChain.__table__).where(AuditChain.id == 1)
        if self._dialect == "postgresql":
            query = query.with_for_update()
        row = (await self.conn.execute(query)).mappings().one()
        values = dict(row)
        del values["id"]
        return ChainState(**values)

    async def unsealed_events(self, limit: int, *, after_id: int = 0) -> list[Event]:
        query = (
            select(*_EVENT_COLUMNS)
            .where(_E.c.seq.is_(None), _E.c.id > after_id)
            .order_by(_E.c.id)
            .limit(limit)
        )
        return [_event(row) for row in (await self.conn.execute(query)).mappings()]

    async def seal_events(self, sealed: Sequence[tuple[int, int, bytes]]) -> None:
        """Set (seq, hash) on each (id, seq, hash), once: the append-only trigger refuses a second time."""
        if not sealed:
            return
        statement = (
            update(AuditEvent)
            .where(AuditEvent.id == bindparam("event_id"), AuditEvent.seq.is_(None))
            .values(seq=bindparam("new_seq"), hash=bindparam("new_hash"))
        )
        params = [{"event_id": i, "new_seq": s, "new_hash": h} for i, s, h in sealed]
        await self.conn.execute(statement, params)

    async def save_chain(self, state: ChainState) -> None:
        await self.conn.execute(
            update(AuditChain)
            .where(AuditChain.id == 1)
            .values(
                seq=state.seq,
                head=state.head,
                checkpoint_id=state.checkpoint_id,
                checkpoint_hash=state.checkpoint_hash,
                checkpoint_at_us=state.checkpoint_at_us,
            )
        )

    async def insert_checkpoint(self, checkpoint: Checkpoint) -> None:
        await self.conn.execute(
            insert(AuditCheckpoint).values(
                id=checkpoint.id,
                at_us=checkpoint.at_us,
                seq=checkpoint.seq,
                head=checkpoint.head,
                prev=checkpoint.prev,
                key_id=checkpoint.key_id,
                signature=checkpoint.signature,
            )
        )

    async def audit_events(self, where: AuditFilter, *, after_id: int, limit: int) -> list[Event]:
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
        return [_event(row) for row in (await self.conn.execute(query)).mappings()]

    async def audit_checkpoints(self, *, after_id: int, limit: int) -> list[Checkpoint]:
        query = select(_C).where(_C.c.id > after_id).order_by(_C.c.id).limit(limit)
        rows = (await self.conn.execute(query)).mappings()
        return [Checkpoint(**row) for row in rows]
