"""Turn the vault's HTTP error bodies back into the classes of :mod:`vault.errors`.

An error body is ``{"error": code, "detail": text, ...}``; the code names the class. The table is built by
walking :class:`VaultError`'s subclasses, so a new error class needs no change here. One code has two classes
(``session_expired``: a stored session, 410, or a session given in a request, 422); the status decides.
A code the client does not know becomes :class:`ClientError`, a transport failure :class:`VaultUnreachable`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import httpx

from vault.errors import InvalidSession, LeaseHeld, SessionGone, VaultError

__all__ = ["ClientError", "VaultUnreachable", "error_from_response", "json_body"]


class ClientError(VaultError):
    """An answer the client cannot map to a vault error: an unknown code, or not the vault's JSON at all.

    ``code`` is the answer's ``"error"`` field (or ``http_error`` / ``invalid_response``), ``status`` its
    HTTP status (``None`` when there was no answer).
    """

    code: ClassVar[str] = "client_error"
    default_detail = "the vault's answer could not be understood"

    def __init__(self, status: int | None, code: str, detail: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code  # type: ignore[misc]  # the answer's code, shadowing the class default


class VaultUnreachable(ClientError):
    """The request failed in transport (connect, timeout, protocol): the vault may or may not have acted."""

    default_detail = "the vault could not be reached"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(None, "unreachable", detail)


# When one code names several classes, the class under this base wins for this status.
_TIE_BREAK: dict[int, type[VaultError]] = {410: SessionGone, 422: InvalidSession}


def _classes_by_code() -> dict[str, list[type[VaultError]]]:
    table: dict[str, list[type[VaultError]]] = {}
    pending: list[type[VaultError]] = [VaultError]
    while pending:
        klass = pending.pop()
        if issubclass(klass, ClientError):
            continue
        if "code" in vars(klass):  # only classes that name their own code (AuthError inherits one)
            table.setdefault(klass.code, []).append(klass)
        pending.extend(klass.__subclasses__())
    return table


def _lookup(code: str, status: int) -> type[VaultError] | None:
    classes = _classes_by_code().get(code)
    if not classes:
        return None
    if len(classes) > 1 and status in _TIE_BREAK:
        for klass in classes:
            if issubclass(klass, _TIE_BREAK[status]):
                return klass
    return classes[0]


def _retry_after(response: httpx.Response, body: dict[str, Any]) -> int:
    value = body.get("retry_after")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    header = response.headers.get("Retry-After", "")
    return int(header) if header.isdigit() else 1


def error_from_response(response: httpx.Response) -> VaultError:
    """The exception an error answer stands for (the caller raises it)."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        return ClientError(status, "http_error", f"HTTP {status} without a JSON error body")
    if not isinstance(body, dict) or not isinstance(body.get("error"), str):
        return ClientError(status, "http_error", f"HTTP {status} without a vault error body")
    code: str = body["error"]
    detail = body.get("detail") if isinstance(body.get("detail"), str) else None
    klass = _lookup(code, status)
    if klass is None:
        return ClientError(status, code, detail)
    if issubclass(klass, LeaseHeld):
        return klass(_retry_after(response, body), detail)
    return klass(detail)


def json_body(response: httpx.Response, expected: int) -> dict[str, Any]:
    """The JSON object of a successful answer; raise the mapped error for anything else."""
    if response.status_code != expected:
        raise error_from_response(response)
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ClientError(response.status_code, "invalid_response", "the answer is not a JSON object")
    return body
