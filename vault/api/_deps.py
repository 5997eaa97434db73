"""Request dependencies: the runtime, bearer-token roles, and strict JSON bodies."""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel, ValidationError

from vault.errors import InvalidRequest, UnsupportedMediaType
from vault.service import Context, Role, Vault, source_address

__all__ = [
    "AdminCtx",
    "AuditorCtx",
    "IngestCtx",
    "PublicCtx",
    "SignerCtx",
    "VaultDep",
    "json_body_schema",
    "read_json",
    "request_context",
    "require_role",
]

M = TypeVar("M", bound=BaseModel)


async def get_vault(request: Request) -> Vault:
    vault: Vault = request.app.state.vault
    return vault


VaultDep = Annotated[Vault, Depends(get_vault)]


async def request_context(request: Request) -> Context:
    """The audit context of a request before authentication: request id (``X-Request-Id`` if sane, else
    a new one) and source address."""
    given = request.headers.get("x-request-id", "")
    request_id = given if _REQUEST_ID.fullmatch(given) else str(uuid.uuid4())
    source = source_address(request.client.host) if request.client is not None else None
    return Context(request_id=request_id, source=source)


def require_role(role: Role) -> Callable[[Request, Vault], Awaitable[Context]]:
    """A dependency giving the caller's audit context, authenticated as ``role`` (failures audited)."""

    async def dependency(request: Request, vault: VaultDep) -> Context:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        ctx = await request_context(request)
        bearer = token.strip() if scheme.lower() == "bearer" else None
        principal = await vault.tokens.authenticate(bearer, role, ctx)
        authenticated = dataclasses.replace(ctx, principal=principal)
        request.state.ctx = authenticated  # the error handlers audit refusals of authenticated requests
        return authenticated

    return dependency


_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
PublicCtx = Annotated[Context, Depends(request_context)]
IngestCtx = Annotated[Context, Depends(require_role(Role.INGEST))]
SignerCtx = Annotated[Context, Depends(require_role(Role.SIGNER))]
AuditorCtx = Annotated[Context, Depends(require_role(Role.AUDITOR))]
AdminCtx = Annotated[Context, Depends(require_role(Role.ADMIN))]


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise InvalidRequest("the body has duplicate keys")
        if not (_encodable(key) and _encodable(value)):
            raise InvalidRequest("the body holds a string that is not valid Unicode (a lone surrogate)")
        out[key] = value
    return out


def _encodable(value: object) -> bool:
    """JSON's \\uD800 escapes decode to lone surrogates, which no database or UTF-8 encoder takes.
    (Objects nested in ``value`` were checked when they were decoded: this hook runs for each.)"""
    if isinstance(value, list):
        return all(_encodable(item) for item in value)
    if not isinstance(value, str):
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


async def read_json(request: Request, model: type[M]) -> M:
    """Parse the request body as ``model``: 415 unless JSON, 422 ``invalid_request`` if malformed.

    Error details name fields and never quote values (a value may be a session).
    """
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaType()
    body = await request.body()
    try:
        data = json.loads(body, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError):
        raise InvalidRequest("the body is not JSON") from None
    if not isinstance(data, dict):
        raise InvalidRequest("the body must be a JSON object")
    try:
        return model.model_validate(data, strict=True)
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in err["loc"]) or "body" for err in exc.errors()})
        raise InvalidRequest("missing or invalid field(s): " + ", ".join(fields)) from None


def json_body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting a body that the route reads with :func:`read_json`."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }
