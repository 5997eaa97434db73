"""The one place that maps the error tree to HTTP: status codes, the JSON error body, OpenAPI docs.

Every error body is ``{"error": code, "detail": text}`` (a few errors add fields). Details come from
the vault's own messages, never from request input, so no body can echo a session or token.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from vault import errors as e

__all__ = [
    "ErrorBody",
    "document_common_errors",
    "error_response",
    "install_error_handlers",
    "responses_for",
    "status_of",
    "vault_error",
]

log = logging.getLogger("vault.api")

_STATUS: dict[type[e.VaultError], int] = {
    e.InvalidRequest: 422,
    e.TooLarge: 413,
    e.UnsupportedMediaType: 415,
    e.NotFound: 404,
    e.SessionGone: 410,
    e.LeaseHeld: 409,
    e.LeaseLost: 409,
    e.RateLimited: 429,
    e.AuditChainBroken: 503,
    e.AuditUnavailable: 503,
    e.InvalidSession: 422,
    e.Unauthorized: 401,
    e.Forbidden: 403,
    e.DecryptionError: 500,
    e.KeyUnavailable: 503,
    e.StoreUnavailable: 503,
    e.ConfigError: 500,
}


class ErrorBody(BaseModel):
    error: str
    detail: str


def status_of(exc_type: type[e.VaultError]) -> int:
    for klass in exc_type.__mro__:
        if klass in _STATUS:
            return _STATUS[klass]
    return 500


def error_response(
    code: str, detail: str, status: int, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": code, "detail": detail},
        status_code=status,
        headers=None if headers is None else dict(headers),
    )


def responses_for(*exc_types: type[e.VaultError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries documenting the errors a route can answer with."""
    out: dict[int | str, dict[str, Any]] = {}
    for exc_type in exc_types:
        status = status_of(exc_type)
        entry = out.setdefault(status, {"model": ErrorBody, "description": ""})
        codes = [c for c in entry["description"].split(", ") if c]
        if f"`{exc_type.code}`" not in codes:
            codes.append(f"`{exc_type.code}`")
        entry["description"] = ", ".join(codes)
    return out


# Refusals of malformed input happen before any service acts, so no service audits them: the handler
# does, for requests that authenticated (unauthenticated junk is refused without a row per request).
_AUDITED_HERE = (e.InvalidRequest, e.UnsupportedMediaType)


async def _audit_refusal(request: Request, error: e.VaultError) -> JSONResponse | None:
    """Audit ``error`` if the request authenticated; the error's own answer, or the audit failure's."""
    ctx = getattr(request.state, "ctx", None)
    if ctx is None or ctx.principal is None:
        return None
    route = getattr(request.scope.get("route"), "path", "?")
    try:
        await request.app.state.vault.audit_log.refused(ctx, error, f"{request.method} {route}")
    except e.VaultError as failure:  # the refusal could not be recorded: say so (fail-closed)
        return await vault_error(request, failure)
    return None


async def vault_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, e.VaultError)
    if isinstance(exc, _AUDITED_HERE) and (failed := await _audit_refusal(request, exc)) is not None:
        return failed
    status = status_of(type(exc))
    if status >= 500:
        log.warning("request failed: %s", exc.code)
    if isinstance(exc, (e.LeaseHeld, e.RateLimited)):
        return JSONResponse(
            {"error": exc.code, "detail": exc.detail, "retry_after": exc.retry_after},
            status_code=status,
            headers={"Retry-After": str(exc.retry_after)},
        )
    return error_response(exc.code, exc.detail, status)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Name the fields only: pydantic's messages can quote the input.
    fields = sorted({".".join(str(p) for p in err.get("loc", ())) for err in exc.errors()})
    error = e.InvalidRequest("invalid field(s): " + ", ".join(fields))
    return await vault_error(request, error)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    codes = {404: ("not_found", "no such route"), 405: ("method_not_allowed", "method not allowed")}
    code, detail = codes.get(exc.status_code, ("http_error", "the request was refused"))
    return error_response(code, detail, exc.status_code, headers=exc.headers)


def document_common_errors(app: FastAPI) -> None:
    """Add to every operation of ``app``'s schema the errors any route can answer with: 413 and 415 where
    there is a body, 500 everywhere (the body limit and the last-resort guard sit outside the routes)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        error_ref = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
        schema.setdefault("components", {}).setdefault("schemas", {}).setdefault(
            "ErrorBody", ErrorBody.model_json_schema()
        )
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                responses = operation.setdefault("responses", {})
                common = {"500": "`internal`, `decryption_failed`"}
                if "requestBody" in operation:
                    common |= {"413": "`too_large`", "415": "`unsupported_media_type`"}
                for status, description in common.items():
                    responses.setdefault(status, {"description": description, **error_ref})
                if "HTTPValidationError" in str(
                    responses.get("422", "")
                ):  # FastAPI's default: not what we send
                    responses["422"] = {"description": "`invalid_request`", **error_ref}
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(e.VaultError, vault_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
