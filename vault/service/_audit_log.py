"""Reading the audit log: filtered pages for the API, full exports, and verification of the live log."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

from vault.audit import Checkpoint, Event, PublicKey, Report, verify
from vault.errors import InvalidRequest
from vault.service._audit import Auditor, Context
from vault.store import AuditFilter, Store

__all__ = ["events_page", "export_lines", "parse_export", "read_everything", "verify_live"]

_PAGE = 10_000


async def events_page(
    store: Store, auditor: Auditor, ctx: Context, where: AuditFilter, *, after_id: int, limit: int
) -> list[Event]:
    """One page of events, oldest first. The read itself is audited in the same transaction."""
    async with store.transaction() as tx:
        events = await tx.audit_events(where, after_id=after_id, limit=limit)
        detail = ",".join(f"{k}={v}" for k, v in _filter_items(where)) or "all"
        await tx.insert_audit(auditor.record(ctx, "audit.read", "ok", detail=f"events {detail}"[:200]))
    return events


def _filter_items(where: AuditFilter) -> Iterator[tuple[str, Any]]:
    for name in ("user_id", "actor_token_id", "action", "outcome", "since_us", "until_us", "subject"):
        value = getattr(where, name)
        if value is not None:
            yield name, value


async def read_everything(store: Store) -> tuple[list[Event], list[Checkpoint]]:
    events: list[Event] = []
    checkpoints: list[Checkpoint] = []
    async with store.transaction() as tx:
        while page := await tx.audit_events(
            AuditFilter(), after_id=events[-1].id if events else 0, limit=_PAGE
        ):
            events.extend(page)
        while page_cp := await tx.audit_checkpoints(
            after_id=checkpoints[-1].id if checkpoints else 0, limit=_PAGE
        ):
            checkpoints.extend(page_cp)
    return events, checkpoints


async def export_lines(store: Store, auditor: Auditor, ctx: Context) -> AsyncIterator[str]:
    """JSON lines: the public key, every event (oldest first), every checkpoint. Audited as a read."""
    async with store.transaction() as tx:
        await tx.insert_audit(auditor.record(ctx, "audit.export", "ok"))
    events, checkpoints = await read_everything(store)
    key = auditor.keys.public_key
    yield json.dumps({"type": "public_key", "key_id": key.key_id, "pem": key.pem()})
    for event in events:
        yield json.dumps({"type": "event", **event.to_json()}, sort_keys=True)
    for checkpoint in checkpoints:
        yield json.dumps({"type": "checkpoint", **checkpoint.to_json()}, sort_keys=True)


def parse_export(lines: Iterable[str]) -> tuple[list[Event], list[Checkpoint], PublicKey | None]:
    """Read an export; :class:`InvalidRequest` naming the line that is malformed."""
    events: list[Event] = []
    checkpoints: list[Checkpoint] = []
    key: PublicKey | None = None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            kind = item.pop("type")
            if kind == "event":
                events.append(Event.from_json(item))
            elif kind == "checkpoint":
                checkpoints.append(Checkpoint.from_json(item))
            elif kind == "public_key":
                key = PublicKey.from_pem(item["pem"].encode())
            else:
                raise ValueError(kind)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise InvalidRequest(f"line {number} of the export is malformed") from None
    return events, checkpoints, key


async def verify_live(store: Store, auditor: Auditor, ctx: Context, key: PublicKey) -> Report:
    async with store.transaction() as tx:
        await tx.insert_audit(auditor.record(ctx, "audit.verify", "ok"))
    events, checkpoints = await read_everything(store)
    return verify(events, checkpoints, key)
