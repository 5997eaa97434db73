"""The two ASGI apps. The public app serves ingest only; the internal app serves everything else.

Both share one :class:`~vault.service.Vault` when run in one process (``session-vault dev``); built on
their own (``uvicorn --factory``) each opens the runtime from settings in its lifespan.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, Path, Request, Response
from starlette.types import Receive, Scope, Send

from vault import errors as e
from vault.api._audit import router as audit_router
from vault.api._deps import AdminCtx, IngestCtx, PublicCtx, VaultDep, json_body_schema, read_json
from vault.api._errors import document_common_errors, install_error_handlers, responses_for
from vault.api._keys import router as keys_router
from vault.api._lane import LeaseLane
from vault.api._leases import router as leases_router
from vault.api._middleware import BodyLimit, Guard
from vault.api._models import ImportedSession, ImportSession, NewToken, TokenCreated, TokenView
from vault.service import TOKEN_ID_PATTERN, Role, Vault
from vault.settings import Settings

__all__ = ["InternalApp", "create_internal_app", "create_public_app"]

_INGEST = (
    e.InvalidRequest, e.InvalidSession, e.SessionExpired, e.TooLarge, e.UnsupportedMediaType,
    e.StoreUnavailable, e.KeyUnavailable, e.AuditUnavailable,
)  # fmt: skip
_AUTH = (e.Unauthorized, e.Forbidden, e.AuditUnavailable, e.StoreUnavailable)


def _lifespan(settings: Settings, vault: Vault | None) -> Callable[[FastAPI], Any]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if vault is not None:
            app.state.vault = vault
            yield
            return
        owned = Vault.from_settings(settings)
        app.state.vault = owned
        owned.start()
        try:
            yield
        finally:
            await owned.close()

    return lifespan


class InternalApp(FastAPI):
    """The internal API: FastAPI, with the lease routes answered ahead of it by the lean path
    (:mod:`vault.api._lane`) unless ``lane`` is None."""

    lane: LeaseLane | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.lane is not None and await self.lane.handle(scope, receive, send):
            return
        await super().__call__(scope, receive, send)


def _finish(app: FastAPI, settings: Settings) -> FastAPI:
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(Guard)
    return app


def create_public_app(settings: Settings, *, vault: Vault | None = None) -> FastAPI:
    """Ingest only. No schema or docs are published; every other path is 404."""
    app = FastAPI(
        title="Session Vault (public ingest)",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=_lifespan(settings, vault),
        redirect_slashes=False,  # a redirect would reflect the client's Host header; unknown paths are 404
    )

    @app.post(
        "/api/import-session",
        status_code=201,
        response_model=ImportedSession,
        openapi_extra=json_body_schema(ImportSession),
        responses=responses_for(*_INGEST),
    )
    async def import_session(request: Request, vault: VaultDep, ctx: PublicCtx) -> ImportedSession:
        body = await read_json(request, ImportSession)
        return ImportedSession.of(await vault.sessions.ingest(ctx, body.session))

    return _finish(app, settings)


def create_internal_app(settings: Settings, *, vault: Vault | None = None, lane: bool = True) -> InternalApp:
    """Everything but public ingest: backend ingest, credentials, health, and the OpenAPI schema.

    ``lane=False`` leaves the lease routes to FastAPI (the lean path's parity test compares the two)."""
    app = InternalApp(
        title="Session Vault (internal API)",
        version="0.1.0",
        lifespan=_lifespan(settings, vault),
        redirect_slashes=False,
    )

    app.include_router(leases_router)
    app.include_router(audit_router)
    app.include_router(keys_router)
    document_common_errors(app)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses=responses_for(e.StoreUnavailable, e.KeyUnavailable))
    async def readyz(vault: VaultDep) -> dict[str, str]:
        """Readiness: the database and the KEK provider (the KMS) answer; 503 says which does not."""
        await vault.ready()
        return {"status": "ready"}

    @app.post(
        "/v1/sessions",
        status_code=201,
        response_model=ImportedSession,
        tags=["sessions"],
        openapi_extra=json_body_schema(ImportSession),
        responses=responses_for(*_INGEST, *_AUTH),
    )
    async def ingest_session(request: Request, vault: VaultDep, ctx: IngestCtx) -> ImportedSession:
        """Ingest a session from an app backend (role ``ingest``). Same rules as the public endpoint."""
        body = await read_json(request, ImportSession)
        return ImportedSession.of(await vault.sessions.ingest(ctx, body.session))

    @app.post(
        "/v1/tokens",
        status_code=201,
        response_model=TokenCreated,
        tags=["admin"],
        openapi_extra=json_body_schema(NewToken),
        responses=responses_for(e.InvalidRequest, e.UnsupportedMediaType, *_AUTH),
    )
    async def new_token(request: Request, vault: VaultDep, ctx: AdminCtx) -> TokenCreated:
        """Create an ``ingest`` or ``auditor`` credential (role ``admin``). The token is in this response
        only. ``signer`` and ``admin`` tokens are created with the CLI only (403 ``forbidden``, audited)."""
        body = await read_json(request, NewToken)
        token, info = await vault.tokens.create(
            ctx, role=Role(body.role), name=body.name, expires_in=body.expires_in
        )
        return TokenCreated.model_validate({**TokenView.of(info).model_dump(), "token": token})

    @app.get("/v1/tokens", response_model=list[TokenView], tags=["admin"], responses=responses_for(*_AUTH))
    async def tokens(vault: VaultDep, _ctx: AdminCtx) -> list[TokenView]:
        """List service credentials (role ``admin``). Secrets are never shown: only ids and attributes."""
        return [TokenView.of(info) for info in await vault.tokens.list()]

    @app.delete(
        "/v1/tokens/{token_id}",
        status_code=204,
        tags=["admin"],
        responses=responses_for(e.NotFound, *_AUTH),
    )
    async def delete_token(
        token_id: Annotated[str, Path(pattern=TOKEN_ID_PATTERN)], vault: VaultDep, ctx: AdminCtx
    ) -> Response:
        """Revoke a service credential (role ``admin``); it stops working at once."""
        await vault.tokens.revoke(ctx, token_id)
        return Response(status_code=204)

    _finish(app, settings)
    if lane:
        app.lane = LeaseLane(app, max_body_bytes=settings.max_body_bytes)
    return app
