"""Key-management routes (role ``admin``): KEK status, rotation, rewrap, retirement; DEK rotation; shred."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request

from vault import errors as e
from vault.api._deps import AdminCtx, VaultDep, json_body_schema, read_json
from vault.api._errors import responses_for
from vault.api._key_models import DekRotated, KeysView, RewrapRequest, RewrapView, UserShreddedView
from vault.service import USER_ID_PATTERN

__all__ = ["router"]

router = APIRouter(tags=["keys"])

UserId = Annotated[str, Path(pattern=USER_ID_PATTERN, description="The user id the sessions carry.")]
Version = Annotated[int, Path(ge=1, le=2**31 - 1, description="A KEK version.")]
_AUTH = (e.Unauthorized, e.Forbidden, e.AuditUnavailable, e.StoreUnavailable, e.KeyUnavailable)


@router.get("/v1/keys", response_model=KeysView, responses=responses_for(*_AUTH))
async def keys_status(vault: VaultDep, _ctx: AdminCtx) -> KeysView:
    """The active KEK and version, live data keys per KEK id and version, and rewrap progress."""
    admin = vault.key_admin
    return KeysView.of(await admin.status(), admin.rewrapping)


@router.post("/v1/keys/rotate", response_model=KeysView, responses=responses_for(*_AUTH))
async def rotate_kek(vault: VaultDep, ctx: AdminCtx) -> KeysView:
    """Make a new KEK version active (local keyring: a new key; Transit: ``rotate``). New data keys are
    wrapped under it at once, on every replica; existing ones move with ``POST /v1/keys/rewrap``."""
    admin = vault.key_admin
    return KeysView.of(await admin.rotate_kek(ctx), admin.rewrapping)


@router.post(
    "/v1/keys/rewrap",
    status_code=202,
    response_model=RewrapView,
    openapi_extra=json_body_schema(RewrapRequest),
    responses=responses_for(e.InvalidRequest, e.UnsupportedMediaType, *_AUTH),
)
async def start_rewrap(request: Request, vault: VaultDep, ctx: AdminCtx) -> RewrapView:
    """Start rewrapping, in this replica's background, every data key not under the active KEK version
    (``{}`` for the defaults). Idempotent: while one runs here, this answers its progress."""
    body = await read_json(request, RewrapRequest)
    admin = vault.key_admin
    await admin.status()  # 503 key_unavailable before anything starts while the KMS is away
    admin.start_rewrap(ctx, batch=body.batch)
    return RewrapView.of(await admin.stale(), admin)


@router.get("/v1/keys/rewrap", response_model=RewrapView, responses=responses_for(*_AUTH))
async def rewrap_progress(vault: VaultDep, _ctx: AdminCtx) -> RewrapView:
    """Rewrap progress: what is left (from the database: any replica can answer) and this replica's run.
    Answers while the KMS is unreachable too (``stale`` then counts against the last known version)."""
    admin = vault.key_admin
    return RewrapView.of(await admin.stale(), admin)


@router.post(
    "/v1/keys/{version}/retire",
    response_model=KeysView,
    responses=responses_for(e.InvalidRequest, *_AUTH),
)
async def retire_kek(version: Version, vault: VaultDep, ctx: AdminCtx) -> KeysView:
    """Retire KEK ``version`` and every older one: they stop unwrapping. Refused (422) while any data key
    depends on them, or for the active version."""
    admin = vault.key_admin
    return KeysView.of(await admin.retire_kek(ctx, version), admin.rewrapping)


@router.post(
    "/v1/users/{user_id}/rotate-dek",
    response_model=DekRotated,
    responses=responses_for(e.NotFound, e.UserShredded, e.DecryptionError, *_AUTH),
)
async def rotate_dek(user_id: UserId, vault: VaultDep, ctx: AdminCtx) -> DekRotated:
    """Re-encrypt the user's stored sessions under a new data key; older versions are destroyed. A lease
    in progress keeps working, and its write-back lands."""
    done = await vault.key_admin.rotate_dek(ctx, user_id)
    return DekRotated(user_id=done.user_id, dek_version=done.dek_version, sessions=done.sessions)


@router.post(
    "/v1/users/{user_id}/shred",
    response_model=UserShreddedView,
    responses=responses_for(e.NotFound, *_AUTH),
)
async def shred_user(user_id: UserId, vault: VaultDep, ctx: AdminCtx) -> UserShreddedView:
    """Crypto-shred the user: every data key and stored session ciphertext is destroyed and open leases
    end. Leasing their sessions then answers 410 ``user_shredded``. Irreversible."""
    done = await vault.key_admin.shred(ctx, user_id)
    return UserShreddedView(shredded=True, sessions=done.sessions, leases=done.leases)
