"""Auditor routes (role ``auditor``): events, checkpoints, the checkpoint public key, and keyed hashes.

Every read is itself an audit event, written in the same transaction as the read.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from vault import errors as e
from vault.api._deps import AuditorCtx, VaultDep, json_body_schema, read_json
from vault.api._errors import responses_for
from vault.errors import InvalidRequest
from vault.service import (
    ACTION_PATTERN,
    FIRST_ID,
    INT64_MAX,
    OUTCOME_PATTERN,
    TOKEN_ID_PATTERN,
    USER_ID_PATTERN,
    AuditFilter,
    Event,
)

__all__ = ["router"]

router = APIRouter(tags=["audit"])
_ERRORS = responses_for(e.Unauthorized, e.Forbidden, e.InvalidRequest, e.AuditUnavailable, e.StoreUnavailable)


class EventView(BaseModel):
    """One audit event as an auditor reads it: its content, when, and its place in the chain."""

    id: int
    uid: str | None = Field(description="128 random bits (hex) inside the MAC'd content; null before 0004.")
    at: str = Field(description="`at_us` as ISO 8601 UTC.")
    at_us: int = Field(description="Microseconds since the epoch.")
    action: str
    outcome: str
    actor_token_id: str | None
    actor_name: str | None
    user_id: str | None
    session_id: str | None
    lease_id: str | None
    fencing_token: int | None
    purpose: str | None
    detail: str | None
    request_id: str | None
    source: str | None
    subjects: list[str] = Field(
        description="Keyed hashes of emails, phones and addresses (POST /v1/audit/hash)."
    )
    seq: int | None = Field(description="The event's place in the chain; null until sealed.")
    hash: str | None = Field(description="The chain hash at `seq` (hex); null until sealed.")


class CheckpointView(BaseModel):
    id: int
    at_us: int
    seq: int
    head: str
    prev: str
    key_id: str
    signature: str
    max_id: int | None = Field(description="The highest event id the sealer had seen; null in format-1.")


class EventPage(BaseModel):
    events: list[EventView]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null at the end.")


class CheckpointPage(BaseModel):
    checkpoints: list[CheckpointView]
    next_cursor: str | None


class PublicKeyView(BaseModel):
    algorithm: str = "Ed25519"
    key_id: str
    pem: str


class HashRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: str = Field(
        min_length=1, max_length=512, description="An email, phone number or wallet address you already know."
    )


class HashView(BaseModel):
    hmac: str = Field(description="Search `GET /v1/audit/events?subject=` with this value.")


def _us(moment: datetime | None) -> int | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        raise InvalidRequest("since and until need a time zone (e.g. 2026-11-29T12:00:00Z)")
    return int(moment.timestamp() * 1_000_000)


def _cursor(cursor: str | None, start: int = 0) -> int:
    if cursor is None:
        return start
    if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 19 or int(cursor) > INT64_MAX:
        raise InvalidRequest("cursor is not one this API returned")
    return int(cursor)


def _event_view(event: Event) -> EventView:
    view = event.to_json()
    del view["mac"]
    view["subjects"] = [] if event.subjects is None else event.subjects.split()
    view["at"] = datetime.fromtimestamp(event.at_us / 1_000_000, UTC).isoformat()
    return EventView.model_validate(view)


@router.get("/v1/audit/events", response_model=EventPage, responses=_ERRORS)
async def audit_events(
    vault: VaultDep,
    ctx: AuditorCtx,
    user_id: Annotated[str | None, Query(pattern=USER_ID_PATTERN)] = None,
    actor: Annotated[str | None, Query(pattern=TOKEN_ID_PATTERN, description="A token id.")] = None,
    action: Annotated[str | None, Query(pattern=ACTION_PATTERN, description="e.g. `lease.grant`.")] = None,
    outcome: Annotated[str | None, Query(pattern=OUTCOME_PATTERN)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    subject: Annotated[
        str | None, Query(pattern="^[0-9a-f]{32}$", description="From POST /v1/audit/hash.")
    ] = None,
    cursor: Annotated[str | None, Query(pattern="^[0-9]{1,19}$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> EventPage:
    """Events oldest first, filtered; cursor pagination. Sealed events carry `seq` and `hash`."""
    where = AuditFilter(
        user_id=user_id, actor_token_id=actor, action=action, outcome=outcome, since_us=_us(since),
        until_us=_us(until), subject=subject,
    )  # fmt: skip
    events = await vault.audit_log.events(ctx, where, after_id=_cursor(cursor, FIRST_ID), limit=limit)
    next_cursor = str(events[-1].id) if len(events) == limit else None
    return EventPage(events=[_event_view(ev) for ev in events], next_cursor=next_cursor)


@router.get("/v1/audit/checkpoints", response_model=CheckpointPage, responses=_ERRORS)
async def audit_checkpoints(
    vault: VaultDep,
    ctx: AuditorCtx,
    cursor: Annotated[str | None, Query(pattern="^[0-9]{1,19}$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> CheckpointPage:
    """Signed checkpoints, oldest first."""
    checkpoints = await vault.audit_log.checkpoints(ctx, after_id=_cursor(cursor), limit=limit)
    next_cursor = str(checkpoints[-1].id) if len(checkpoints) == limit else None
    return CheckpointPage(
        checkpoints=[CheckpointView.model_validate(cp.to_json()) for cp in checkpoints],
        next_cursor=next_cursor,
    )


@router.get("/v1/audit/public-key", response_model=PublicKeyView, responses=_ERRORS)
async def audit_public_key(vault: VaultDep, _ctx: AuditorCtx) -> PublicKeyView:
    """The Ed25519 key that signs checkpoints (PEM), for `session-vault audit verify --public-key`."""
    key = vault.audit_log.public_key
    return PublicKeyView(key_id=key.key_id, pem=key.pem())


@router.post(
    "/v1/audit/hash",
    response_model=HashView,
    openapi_extra=json_body_schema(HashRequest),
    responses={**_ERRORS, **responses_for(e.UnsupportedMediaType, e.RateLimited)},
)
async def audit_hash(request: Request, vault: VaultDep, ctx: AuditorCtx) -> HashView:
    """The keyed hash under which the log stores a value (like OpenBao's audit-hash). The value is not
    logged. At most ``VAULT_AUDIT_HASH_RATE_LIMIT`` per token (default 30/minute, per vault process):
    past it, 429 ``rate_limited`` with ``Retry-After``."""
    body = await read_json(request, HashRequest)
    return HashView(hmac=await vault.audit_log.keyed_hash(ctx, body.value))
