"""What the sync and async clients share: the Lease object, request paths, answer parsing, backoff."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from vault.client._errors import ClientError, VaultUnreachable
from vault.errors import AuditUnavailable, KeyUnavailable, StoreUnavailable, VaultError

__all__ = [
    "Backoff",
    "Lease",
    "grant_path",
    "is_transient",
    "parse_grant",
    "parse_released",
    "parse_renewed",
    "release_path",
    "renew_path",
    "renewal_interval",
    "transport_error",
]

FIRST_DELAY = 0.05
MAX_DELAY = 2.0


@dataclass(eq=False)
class Lease:
    """A granted lease. ``session`` is the decrypted session: it is in no repr.

    Set ``refreshed`` (or call :meth:`set_refreshed`) to the re-exported session before leaving a
    ``lease(...)`` block: it is written back as the session's next version on release. ``lost`` becomes
    true when background renewal learns that the lease is no longer held.
    """

    lease_id: str
    session_id: str
    user_id: str
    fencing_token: int
    expires_at: datetime
    ttl_seconds: int
    session: str = field(repr=False)
    refreshed: str | None = field(default=None, repr=False)
    lost: bool = False

    def set_refreshed(self, session: str) -> None:
        self.refreshed = session


def grant_path(user_id: str | None, session_id: str | None) -> str:
    if (user_id is None) == (session_id is None):
        raise ValueError("give exactly one of user_id and session_id")
    if user_id is not None:
        return f"/v1/users/{_segment(user_id)}/lease"
    assert session_id is not None
    return f"/v1/sessions/{_segment(session_id)}/lease"


def renew_path(lease: Lease) -> str:
    return f"/v1/leases/{_segment(lease.lease_id)}/renew"


def release_path(lease: Lease) -> str:
    return f"/v1/leases/{_segment(lease.lease_id)}/release"


def _segment(value: str) -> str:
    if not value:
        raise ValueError("an id must not be empty")
    return quote(value, safe="")


def _field(body: dict[str, Any], key: str, kind: type[Any]) -> Any:
    value = body.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ClientError(None, "invalid_response", f"the answer's {key!r} is missing or mistyped")
    return value


def _moment(body: dict[str, Any], key: str) -> datetime:
    try:
        moment = datetime.fromisoformat(_field(body, key, str))
    except ValueError as exc:
        raise ClientError(None, "invalid_response", f"the answer's {key!r} is not a timestamp") from exc
    if moment.tzinfo is None:
        raise ClientError(None, "invalid_response", f"the answer's {key!r} has no time zone")
    return moment


def parse_grant(body: dict[str, Any], ttl_seconds: int) -> Lease:
    return Lease(
        lease_id=_field(body, "lease_id", str),
        session_id=_field(body, "session_id", str),
        user_id=_field(body, "user_id", str),
        fencing_token=_field(body, "fencing_token", int),
        expires_at=_moment(body, "expires_at"),
        ttl_seconds=ttl_seconds,
        session=_field(body, "session", str),
    )


def parse_renewed(body: dict[str, Any]) -> datetime:
    return _moment(body, "expires_at")


def parse_released(body: dict[str, Any]) -> bool:
    written_back: bool = _field(body, "written_back", bool)
    return written_back


def transport_error(exc: httpx.TransportError) -> VaultUnreachable:
    return VaultUnreachable(f"the vault could not be reached ({type(exc).__name__})")


def is_transient(exc: VaultError) -> bool:
    """Worth trying again later: no answer, or the vault's store, audit log or key provider is down."""
    if isinstance(exc, VaultUnreachable | StoreUnavailable | AuditUnavailable | KeyUnavailable):
        return True
    return isinstance(exc, ClientError) and exc.status is not None and exc.status >= 500


def renewal_interval(ttl_seconds: int) -> float:
    """Renew every third of the TTL: two renewals can fail before the lease runs out."""
    return ttl_seconds / 3


class Backoff:
    """Exponential backoff with full jitter for waiting on a held lease, bounded by a deadline.

    The n-th delay is uniform in ``[0, min(0.05 * 2**n, retry_after, 2)]`` and never past the deadline.
    """

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self._ceiling = FIRST_DELAY

    def delay(self, retry_after: int, now: float) -> float | None:
        """Seconds to sleep before the next attempt, or ``None`` when the deadline has passed."""
        remaining = self.deadline - now
        if remaining <= 0:
            return None
        ceiling = min(self._ceiling, float(retry_after), MAX_DELAY)
        self._ceiling *= 2
        return min(random.uniform(0, ceiling), remaining)  # noqa: S311 - jitter, not a secret
