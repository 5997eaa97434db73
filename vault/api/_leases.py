"""Lease routes (role ``signer``): grant by user or session, renew, release with optional write-back."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from vault import errors as e
from vault.api._deps import SignerCtx, VaultDep, json_body_schema, read_json
from vault.api._errors import responses_for
from vault.api._models import LeaseGranted, LeaseRequest, Released, ReleaseRequest, Renewed, RenewRequest
from vault.service import USER_ID_PATTERN, UUID_PATTERN, Grant

__all__ = ["router"]

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


def _granted(grant: Grant, response: Response) -> LeaseGranted:
    response.headers["Cache-Control"] = "no-store"
    return LeaseGranted(
        lease_id=grant.lease_id,
        session_id=grant.session_id,
        user_id=grant.user_id,
        fencing_token=grant.fencing_token,
        expires_at=grant.expires_at,
        session=grant.session,
    )


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
    body = await read_json(request, LeaseRequest)
    grant = await vault.leases.grant(
        ctx, purpose=body.purpose, ttl_seconds=body.ttl_seconds, user_id=user_id,
        allow_wallet_changes=body.allow_wallet_changes,
    )  # fmt: skip
    return _granted(grant, response)


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
    body = await read_json(request, LeaseRequest)
    grant = await vault.leases.grant(
        ctx,
        purpose=body.purpose,
        ttl_seconds=body.ttl_seconds,
        session_id=session_id,
        allow_wallet_changes=body.allow_wallet_changes,
    )
    return _granted(grant, response)


@router.post(
    "/v1/leases/{lease_id}/renew",
    response_model=Renewed,
    openapi_extra=json_body_schema(RenewRequest),
    responses=responses_for(*_HOLDER_ERRORS),
)
async def renew(lease_id: LeaseId, request: Request, vault: VaultDep, ctx: SignerCtx) -> Renewed:
    """Extend the lease by its TTL from now. Only its holder, with the newest fencing token."""
    body = await read_json(request, RenewRequest)
    renewal = await vault.leases.renew(ctx, lease_id, fencing_token=body.fencing_token)
    return Renewed(lease_id=renewal.lease_id, expires_at=renewal.expires_at)


@router.post(
    "/v1/leases/{lease_id}/release",
    response_model=Released,
    openapi_extra=json_body_schema(ReleaseRequest),
    responses=responses_for(*_HOLDER_ERRORS, e.InvalidSession, e.SessionExpired, e.TooLarge),
)
async def release(lease_id: LeaseId, request: Request, vault: VaultDep, ctx: SignerCtx) -> Released:
    """End the lease; a ``session`` given here is stored as the session's next version (write-back)."""
    body = await read_json(request, ReleaseRequest)
    await vault.leases.release(ctx, lease_id, fencing_token=body.fencing_token, session=body.session)
    return Released(lease_id=lease_id, written_back=body.session is not None)
