"""Lease routes (role ``signer``): grant by user or session, renew, release with optional write-back.

The FastAPI routes below declare the contract (OpenAPI, status codes, errors). The same requests are
answered, with the same functions, by :class:`~vault.api._lane.LeaseLane` in front of the router: see
that module for why, and tests/integration/test_lease_lane.py for the test that both answer alike.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel

from vault import errors as e
from vault.api._deps import SignerCtx, VaultDep, json_body_schema, read_json
from vault.api._errors import responses_for
from vault.api._models import LeaseGranted, LeaseRequest, Released, ReleaseRequest, Renewed, RenewRequest
from vault.service import USER_ID_PATTERN, UUID_PATTERN, Context, Vault

__all__ = ["LANE_ROUTES", "LaneRoute", "router"]

router = APIRouter(tags=["leases"])

UserId = Annotated[str, Path(pattern=USER_ID_PATTERN, description="The user id the sessions carry.")]
SessionId = Annotated[str, Path(pattern=UUID_PATTERN, description="A session id (a lowercase UUID).")]
LeaseId = Annotated[str, Path(pattern=UUID_PATTERN, description="A lease id (a lowercase UUID).")]

_AUTH = (e.Unauthorized, e.Forbidden)
_GRANT_ERRORS = responses_for(
    *_AUTH, e.PurposeNotAllowed, e.NoSession, e.SessionRevoked, e.SessionSuperseded, e.StoredSessionExpired,
    e.LeaseHeld, e.InvalidRequest, e.UnsupportedMediaType, e.AuditUnavailable, e.StoreUnavailable,
)  # fmt: skip
_HOLDER_ERRORS = (
    *_AUTH,
    e.NoLease,
    e.LeaseLost,
    e.InvalidRequest,
    e.UnsupportedMediaType,
    e.AuditUnavailable,
)
NO_STORE = {"Cache-Control": "no-store"}  # a grant's answer carries the plaintext session


async def _grant(vault: Vault, ctx: Context, body: LeaseRequest, **target: str) -> LeaseGranted:
    """Grant by ``user_id=`` or ``session_id=``."""
    grant = await vault.leases.grant(
        ctx, purpose=body.purpose, ttl_seconds=body.ttl_seconds,
        allow_wallet_changes=body.allow_wallet_changes, **target,
    )  # fmt: skip
    return LeaseGranted(
        lease_id=grant.lease_id,
        session_id=grant.session_id,
        user_id=grant.user_id,
        fencing_token=grant.fencing_token,
        expires_at=grant.expires_at,
        session=grant.session,
    )


# --- what each route does, once the caller is authenticated and the path id and body are valid --------


async def grant_user(vault: Vault, ctx: Context, user_id: str, body: LeaseRequest) -> LeaseGranted:
    return await _grant(vault, ctx, body, user_id=user_id)


async def grant_session(vault: Vault, ctx: Context, session_id: str, body: LeaseRequest) -> LeaseGranted:
    return await _grant(vault, ctx, body, session_id=session_id)


async def renew_lease(vault: Vault, ctx: Context, lease_id: str, body: RenewRequest) -> Renewed:
    renewal = await vault.leases.renew(ctx, lease_id, fencing_token=body.fencing_token)
    return Renewed(lease_id=renewal.lease_id, expires_at=renewal.expires_at)


async def release_lease(vault: Vault, ctx: Context, lease_id: str, body: ReleaseRequest) -> Released:
    await vault.leases.release(ctx, lease_id, fencing_token=body.fencing_token, session=body.session)
    return Released(lease_id=lease_id, written_back=body.session is not None)


@dataclass(frozen=True, slots=True)
class LaneRoute:
    """One route as the lean path sees it: template, path parameter and its pattern, body, function."""

    template: str
    param: str
    pattern: str
    body: type[BaseModel]
    handler: Callable[[Vault, Context, str, Any], Awaitable[BaseModel]]
    grant: bool = False  # 201, and Cache-Control: no-store (the answer carries the plaintext session)


LANE_ROUTES = (
    LaneRoute("/v1/users/{user_id}/lease", "user_id", USER_ID_PATTERN, LeaseRequest, grant_user, grant=True),
    LaneRoute(
        "/v1/sessions/{session_id}/lease", "session_id", UUID_PATTERN, LeaseRequest, grant_session, grant=True
    ),
    LaneRoute("/v1/leases/{lease_id}/renew", "lease_id", UUID_PATTERN, RenewRequest, renew_lease),
    LaneRoute("/v1/leases/{lease_id}/release", "lease_id", UUID_PATTERN, ReleaseRequest, release_lease),
)


# --- the FastAPI routes: the contract, and the answer wherever the lane is not in front ----------------


@router.post(
    "/v1/users/{user_id}/lease",
    status_code=201,
    response_model=LeaseGranted,
    openapi_extra=json_body_schema(LeaseRequest),
    responses=_GRANT_ERRORS,
)
async def lease_user(
    user_id: UserId, request: Request, response: Response, vault: VaultDep, ctx: SignerCtx
) -> LeaseGranted:
    """Lease the user's newest usable session. 409 ``lease_held`` carries ``retry_after`` (seconds)."""
    response.headers.update(NO_STORE)
    return await grant_user(vault, ctx, user_id, await read_json(request, LeaseRequest))


@router.post(
    "/v1/sessions/{session_id}/lease",
    status_code=201,
    response_model=LeaseGranted,
    openapi_extra=json_body_schema(LeaseRequest),
    responses=_GRANT_ERRORS,
)
async def lease_session(
    session_id: SessionId, request: Request, response: Response, vault: VaultDep, ctx: SignerCtx
) -> LeaseGranted:
    """Lease one session by id."""
    response.headers.update(NO_STORE)
    return await grant_session(vault, ctx, session_id, await read_json(request, LeaseRequest))


@router.post(
    "/v1/leases/{lease_id}/renew",
    response_model=Renewed,
    openapi_extra=json_body_schema(RenewRequest),
    responses=responses_for(*_HOLDER_ERRORS),
)
async def renew(lease_id: LeaseId, request: Request, vault: VaultDep, ctx: SignerCtx) -> Renewed:
    """Extend the lease by its TTL from now. Only its holder, with the newest fencing token."""
    return await renew_lease(vault, ctx, lease_id, await read_json(request, RenewRequest))


@router.post(
    "/v1/leases/{lease_id}/release",
    response_model=Released,
    openapi_extra=json_body_schema(ReleaseRequest),
    responses=responses_for(*_HOLDER_ERRORS, e.InvalidSession, e.SessionExpired, e.TooLarge),
)
async def release(lease_id: LeaseId, request: Request, vault: VaultDep, ctx: SignerCtx) -> Released:
    """End the lease; a ``session`` given here is stored as the session's next version (write-back)."""
    return await release_lease(vault, ctx, lease_id, await read_json(request, ReleaseRequest))
