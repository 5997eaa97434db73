"""Reading the audit log: filtered pages for the API, full exports, and verification of the live log."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

from limits import parse as parse_rate
from limits import storage, strategies

from vault.audit import DEFAULT_SKEW_US, Checkpoint, Event, Problem, PublicKey, Report, verify
from vault.errors import AuditChainBroken, InvalidRequest, RateLimited, VaultError
from vault.service._audit import Auditor, Context
from vault.service._sealer import chain_mac, check_chain
from vault.sessions import normalize_subject
from vault.store import FIRST_ID, AuditFilter, Store

__all__ = [
    "AuditLog",
    "adopt_chain",
    "events_page",
    "export_lines",
    "parse_export",
    "read_everything",
    "verify_live",
]

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
            AuditFilter(), after_id=events[-1].id if events else FIRST_ID, limit=_PAGE
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


async def verify_live(
    store: Store, auditor: Auditor, ctx: Context, key: PublicKey, *, max_skew_us: int = DEFAULT_SKEW_US
) -> Report:
    """Verify the live log: chain and checkpoints against ``key``, every event's MAC with the audit keys,
    event dates against this process's clock, and the ``audit_chain`` row (its MAC and its head)."""
    async with store.transaction() as tx:
        await tx.insert_audit(auditor.record(ctx, "audit.verify", "ok"))
    events, checkpoints = await read_everything(store)
    report = verify(
        events, checkpoints, key, macs=auditor.keys, now_us=time.time_ns() // 1000, max_skew_us=max_skew_us
    )
    if report.problem is None:
        try:
            async with store.transaction() as tx:
                await check_chain(tx, auditor.keys, await tx.lock_chain())
        except AuditChainBroken as exc:
            return dataclasses.replace(report, problem=Problem("chain_broken", None, None, exc.detail))
    return report


async def adopt_chain(store: Store, auditor: Auditor, ctx: Context, key: PublicKey) -> Report:
    """MAC the ``audit_chain`` row of a log written before the row was authenticated (schema 0004),
    once the whole live log verifies (every event's MAC included). Refuses a row that has a MAC already."""
    async with store.transaction() as tx:
        if (await tx.lock_chain()).mac is not None:
            raise InvalidRequest("the audit_chain row is authenticated already")
    events, checkpoints = await read_everything(store)
    report = verify(events, checkpoints, key, macs=auditor.keys, now_us=time.time_ns() // 1000)
    if report.problem is not None:
        return report
    async with store.transaction() as tx:
        state = await tx.lock_chain()
        if state.mac is not None:
            raise InvalidRequest("the audit_chain row is authenticated already")
        adopted = dataclasses.replace(state, mac=chain_mac(auditor.keys, state))
        try:  # the head, the newest checkpoint and the high-water mark must agree with the log too
            await check_chain(tx, auditor.keys, adopted)
        except AuditChainBroken as exc:
            return dataclasses.replace(report, problem=Problem("chain_broken", None, None, exc.detail))
        await tx.save_chain(adopted)
        await tx.insert_audit(auditor.record(ctx, "audit.adopt_chain", "ok", detail=f"seq {state.seq}"))
    return report


class AuditLog:
    """The audit log for the API: filtered pages, checkpoints, the public key, keyed hashes (rate-limited
    per token and process) and the record of requests refused at the boundary."""

    def __init__(self, *, store: Store, auditor: Auditor, hash_rate_limit: str) -> None:
        self.store = store
        self.auditor = auditor
        self._hash_rate = parse_rate(hash_rate_limit)
        self._limiter = strategies.MovingWindowRateLimiter(storage.MemoryStorage())

    @property
    def public_key(self) -> PublicKey:
        return self.auditor.keys.public_key

    async def events(self, ctx: Context, where: AuditFilter, *, after_id: int, limit: int) -> list[Event]:
        return await events_page(self.store, self.auditor, ctx, where, after_id=after_id, limit=limit)

    async def checkpoints(self, ctx: Context, *, after_id: int, limit: int) -> list[Checkpoint]:
        """One page of checkpoints, oldest first; the read is audited in the same transaction."""
        async with self.store.transaction() as tx:
            found = await tx.audit_checkpoints(after_id=after_id, limit=limit)
            await tx.insert_audit(self.auditor.record(ctx, "audit.read", "ok", detail="checkpoints"))
        return found

    async def keyed_hash(self, ctx: Context, value: str) -> str:
        """The keyed hash under which the log stores ``value``, at most ``VAULT_AUDIT_HASH_RATE_LIMIT``
        per token and process (each lookup is a guess at a phone or email: unlimited, they enumerate).
        Raises :class:`InvalidRequest` (audited by the API, like every malformed request) or
        :class:`RateLimited` (audited here); a hash given is audited too, never the value."""
        assert ctx.principal is not None
        if not value.strip() or len(value) > 512:
            raise InvalidRequest("value must be 1-512 characters")
        token_id = ctx.principal.token_id
        if not self._limiter.hit(self._hash_rate, "audit-hash", token_id):
            reset = self._limiter.get_window_stats(self._hash_rate, "audit-hash", token_id).reset_time
            error = RateLimited(retry_after=math.ceil(reset - time.time()))
            async with self.store.transaction() as tx:
                await tx.insert_audit(self.auditor.record(ctx, "audit.hash", "denied", detail=error.code))
            raise error
        async with self.store.transaction() as tx:
            await tx.insert_audit(self.auditor.record(ctx, "audit.hash", "ok"))
        return self.auditor.keys.subject(normalize_subject(value))

    async def refused(self, ctx: Context, error: VaultError, route: str) -> None:
        """Audit a request refused at the boundary (malformed input) after it authenticated. ``route`` is
        the route's template (``POST /v1/leases/{lease_id}/renew``), never the raw path or a value."""
        async with self.store.transaction() as tx:
            await tx.insert_audit(
                self.auditor.record(ctx, "request.refused", "denied", detail=f"{error.code} {route}")
            )
