"""Plain row values returned by the store. Ciphertext and key material are bytes the caller must not log."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

__all__ = [
    "AuditRecord",
    "ChainState",
    "GrantDecision",
    "GrantRequest",
    "LeaseRow",
    "LockedLease",
    "LockedSession",
    "ReleaseDecision",
    "ReleaseRequest",
    "SessionPeek",
    "SessionRow",
    "TokenRow",
    "UserKeyRow",
]


@dataclass(frozen=True, slots=True)
class UserKeyRow:
    user_id: str
    dek_version: int
    wrapped_dek: bytes = field(repr=False)
    kek_id: str
    kek_version: int
    status: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class SessionRow:
    id: str
    user_id: str
    version: int
    dek_version: int
    format: str
    has_signers: bool
    status: str
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None
    ciphertext: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class TokenRow:
    id: str
    name: str
    role: str
    secret_hash: bytes = field(repr=False)
    purposes: tuple[str, ...] | None
    max_ttl_seconds: int | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    mac: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class SessionPeek:
    """A session's lease-relevant state read without a lock (may be stale by the time it is used)."""

    id: str
    user_id: str
    status: str
    expires_at: datetime | None
    lease_expires_us: int | None
    now_us: int


@dataclass(frozen=True, slots=True)
class LockedSession:
    """A session row locked for a lease decision, with the database's clock read after the lock was held."""

    id: str
    user_id: str
    version: int
    dek_version: int
    status: str
    expires_at: datetime | None
    ciphertext: bytes = field(repr=False)
    now_us: int


@dataclass(frozen=True, slots=True)
class LeaseRow:
    id: str
    session_id: str
    user_id: str
    session_version: int
    fencing_token: int
    holder_token_id: str
    purpose: str
    ttl_seconds: int
    granted_us: int
    expires_us: int
    ended_us: int | None
    end_reason: str | None
    allow_wallet_changes: bool = False


@dataclass(frozen=True, slots=True)
class LockedLease:
    """A lease and its session, both row-locked, with the database's clock read after the lock was held."""

    lease: LeaseRow
    session_version: int
    now_us: int


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """The fields of one audit event to append. Identifiers only: never session content, keys or token
    secrets. ``mac`` is the vault's MAC over the content (see :mod:`vault.audit`)."""

    uid: str
    at_us: int
    action: str
    outcome: str
    actor_token_id: str | None = None
    actor_name: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    lease_id: str | None = None
    fencing_token: int | None = None
    purpose: str | None = None
    detail: str | None = None
    request_id: str | None = None
    source: str | None = None
    subjects: str | None = None
    mac: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class ChainState:
    """The chain's head and newest checkpoint; ``mac`` (the vault's, over the rest) is None at genesis."""

    seq: int
    head: bytes
    checkpoint_id: int
    checkpoint_hash: bytes
    checkpoint_at_us: int
    max_id: int
    mac: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class GrantRequest:
    """One grant of a batch: a session by id, or a user's newest usable session."""

    session_id: str | None
    user_id: str | None
    lease_id: str
    holder_token_id: str
    purpose: str
    ttl_seconds: int
    allow_wallet_changes: bool = False


@dataclass(frozen=True, slots=True)
class GrantDecision:
    """What the database decided for one :class:`GrantRequest`.

    ``outcome``: ``granted``; a refusal (``no_session``, ``revoked``, ``superseded``, ``shredded``,
    ``expired``, ``held`` with ``retry_after`` seconds); or ``error`` (``sqlstate``: this request's
    statements failed and were undone, the rest of the batch went on); or ``busy`` (another transaction
    holds the session's row lock and the batch did not wait for it). ``at_us`` is the database's clock
    (read after the row lock, for every decision taken under it); None for ``no_session`` and ``error``.
    A grant carries the session's row (``session_version``, ``dek_version``, ``ciphertext``), its
    fencing token, and the expired lease it ended, if any (a takeover)."""

    outcome: str
    at_us: int | None = None
    session_id: str | None = None
    user_id: str | None = None
    session_version: int | None = None
    dek_version: int | None = None
    ciphertext: bytes | None = field(default=None, repr=False)
    fencing_token: int | None = None
    retry_after: int | None = None
    ended_lease_id: str | None = None
    ended_fence: int | None = None
    sqlstate: str | None = None


@dataclass(frozen=True, slots=True)
class ReleaseRequest:
    lease_id: str
    holder_token_id: str
    fencing_token: int


@dataclass(frozen=True, slots=True)
class ReleaseDecision:
    """``outcome``: ``released``, ``no_lease``, ``not_holder``, ``shredded``, ``lost``, ``error`` or
    ``busy``; the lease's session, user, fencing token and purpose when the lease exists."""

    outcome: str
    at_us: int | None = None
    session_id: str | None = None
    user_id: str | None = None
    fencing_token: int | None = None
    purpose: str | None = None
    sqlstate: str | None = None
