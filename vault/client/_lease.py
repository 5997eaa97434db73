"""What the sync and async clients share: the Lease object, request building, answer parsing, the
renewal policy and the backoff schedule. The two clients add only the I/O (blocking or awaited)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from vault.client._errors import ClientError, VaultUnreachable
from vault.errors import (
    AuditUnavailable,
    KeyUnavailable,
    LeaseLost,
    NoLease,
    StoreUnavailable,
    VaultError,
)

__all__ = [
    "Backoff",
    "GrantRequest",
    "Lease",
    "check_wait",
    "is_transient",
    "parse_released",
    "parse_renewed",
    "release_request",
    "renew_request",
    "renewal_interval",
    "renewal_stops",
    "transport_error",
]

FIRST_DELAY = 0.05
MAX_DELAY = 2.0
# The vault's TTL when a grant names none (its API: "default 30, or that maximum if lower"). Bounds the TTL
# the client infers from a default grant, so a client clock behind the vault's cannot stretch it.
SERVER_DEFAULT_TTL = 30


@dataclass(eq=False)
class Lease:
    """A granted lease. ``session`` is the decrypted session: it is in no repr.

    ``ttl_seconds`` is the lease's length: the one asked for, or, when the vault chose it, the grant's
    ``expires_at`` less the moment the request was sent (whole seconds, at least 1). Background renewal
    runs every third of it.

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


# --- requests ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GrantRequest:
    """One grant call, validated up front: where it goes, what it sends, how its answer becomes a Lease."""

    path: str
    payload: dict[str, Any]
    ttl_seconds: int | None

    @classmethod
    def of(
        cls, user_id: str | None, session_id: str | None, purpose: str, ttl_seconds: int | None
    ) -> GrantRequest:
        if (user_id is None) == (session_id is None):
            raise ValueError("give exactly one of user_id and session_id")
        if user_id is not None:
            path = f"/v1/users/{_segment(user_id)}/lease"
        else:
            assert session_id is not None
            path = f"/v1/sessions/{_segment(session_id)}/lease"
        payload: dict[str, Any] = {"purpose": purpose}
        if ttl_seconds is not None:  # omitted: the vault's default applies
            payload["ttl_seconds"] = ttl_seconds
        return cls(path, payload, ttl_seconds)

    def lease(self, body: dict[str, Any], sent_at: float, received_at: float) -> Lease:
        """The Lease of a grant answer; ``sent_at`` and ``received_at`` are when the request was sent and
        its answer arrived (``time.time()``). A grant whose expiry is not after ``received_at`` is refused
        with :class:`LeaseLost`: whoever uses it would sign beside the session's next holder."""
        expires_at = _still_valid(_moment(body, "expires_at"), received_at)
        return Lease(
            lease_id=_field(body, "lease_id", str),
            session_id=_field(body, "session_id", str),
            user_id=_field(body, "user_id", str),
            fencing_token=_field(body, "fencing_token", int),
            expires_at=expires_at,
            ttl_seconds=_inferred_ttl(expires_at, sent_at) if self.ttl_seconds is None else self.ttl_seconds,
            session=_field(body, "session", str),
        )


def _inferred_ttl(expires_at: datetime, sent_at: float) -> int:
    return min(max(1, round(expires_at.timestamp() - sent_at)), SERVER_DEFAULT_TTL)


def renew_request(lease: Lease) -> tuple[str, dict[str, Any]]:
    return f"/v1/leases/{_segment(lease.lease_id)}/renew", {"fencing_token": lease.fencing_token}


def release_request(lease: Lease, session: str | None) -> tuple[str, dict[str, Any]]:
    payload: dict[str, Any] = {"fencing_token": lease.fencing_token}
    if session is not None:
        payload["session"] = session
    return f"/v1/leases/{_segment(lease.lease_id)}/release", payload


def check_wait(wait: float) -> None:
    if wait < 0:
        raise ValueError("wait must not be negative")


def _segment(value: str) -> str:
    if not value:
        raise ValueError("an id must not be empty")
    return quote(value, safe="")


# --- answers -----------------------------------------------------------------------------------------


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


def parse_renewed(body: dict[str, Any], received_at: float) -> datetime:
    """The renewed expiry; :class:`LeaseLost` if it is not after ``received_at`` (``time.time()``)."""
    return _still_valid(_moment(body, "expires_at"), received_at)


def _still_valid(expires_at: datetime, now: float) -> datetime:
    if expires_at.timestamp() <= now:
        raise LeaseLost("the lease's expiry had passed when the answer arrived (a slow answer or clock skew)")
    return expires_at


def parse_released(body: dict[str, Any]) -> bool:
    written_back: bool = _field(body, "written_back", bool)
    return written_back


# --- errors, renewal, waiting ------------------------------------------------------------------------


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


def renewal_stops(lease: Lease, exc: Exception) -> bool:
    """Whether background renewal gives up after a failed renewal; a lease found gone is marked lost.

    Transient failures are retried at the next interval. Anything else stops renewal: the lease is no
    longer held (LeaseLost, NoLease), renewal was refused, the client was closed under the lease, or a bug.
    """
    if isinstance(exc, LeaseLost | NoLease):
        lease.lost = True
        return True
    return not (isinstance(exc, VaultError) and is_transient(exc))


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
