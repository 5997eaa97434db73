"""The vault's one error tree.

Every error the vault raises on purpose derives from :class:`VaultError`. Each class carries a stable
machine-readable ``code`` (the ``"error"`` field of an HTTP error body) and a default ``detail``.
Library errors (``InvalidTag``, SQLAlchemy, httpx) are translated once, at the layer that calls the
library, with ``raise ... from exc``. Only ``vault.api`` maps these classes to HTTP status codes.

No error message may contain secret material: sessions, key shares, keys or tokens. Details are
written by the vault, never copied from input.

    VaultError                      internal
    ├── InvalidRequest              invalid_request
    ├── TooLarge                    too_large
    ├── UnsupportedMediaType        unsupported_media_type
    ├── NotFound                    not_found
    │   ├── NoSession               no_session
    │   └── NoLease                 no_lease
    ├── SessionGone
    │   ├── SessionRevoked          session_revoked
    │   ├── SessionSuperseded       session_superseded
    │   ├── StoredSessionExpired    session_expired
    │   └── UserShredded            user_shredded
    ├── LeaseHeld                   lease_held       (carries retry_after)
    ├── LeaseLost                   lease_lost
    ├── InvalidSession              invalid_session
    │   └── SessionExpired          session_expired
    ├── AuthError
    │   ├── Unauthorized            unauthorized
    │   │   └── TokenForged         unauthorized     (a token row without the vault's MAC; audited as such)
    │   └── Forbidden               forbidden
    │       └── PurposeNotAllowed   purpose_not_allowed
    ├── DecryptionError             decryption_failed
    ├── KeyUnavailable              key_unavailable
    ├── StoreUnavailable            store_unavailable
    ├── AuditUnavailable            audit_unavailable
    ├── AuditChainBroken            audit_chain_broken (the sealer refuses to extend a tampered chain)
    ├── RateLimited                 rate_limited     (carries retry_after)
    └── ConfigError                 config_error
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AuditChainBroken",
    "AuditUnavailable",
    "AuthError",
    "ConfigError",
    "DecryptionError",
    "Forbidden",
    "InvalidRequest",
    "InvalidSession",
    "KeyUnavailable",
    "LeaseHeld",
    "LeaseLost",
    "NoLease",
    "NoSession",
    "NotFound",
    "PurposeNotAllowed",
    "RateLimited",
    "SessionExpired",
    "SessionGone",
    "SessionRevoked",
    "SessionSuperseded",
    "StoreUnavailable",
    "StoredSessionExpired",
    "TokenForged",
    "TooLarge",
    "Unauthorized",
    "UnsupportedMediaType",
    "UserShredded",
    "VaultError",
]


class VaultError(Exception):
    """Root of every error the vault raises on purpose."""

    code: ClassVar[str] = "internal"
    default_detail: ClassVar[str] = "internal error"

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail if detail is not None else self.default_detail
        super().__init__(self.detail)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.detail!r})"


class InvalidRequest(VaultError):
    """The request is malformed: not JSON, a missing or mistyped field, a value out of bounds."""

    code = "invalid_request"
    default_detail = "the request is malformed"


class TooLarge(VaultError):
    code = "too_large"
    default_detail = "the request body is too large"


class UnsupportedMediaType(VaultError):
    code = "unsupported_media_type"
    default_detail = "the request body must be application/json"


class NotFound(VaultError):
    code = "not_found"
    default_detail = "not found"


class NoSession(NotFound):
    """No session matches: the user has none, or the session id is unknown."""

    code = "no_session"
    default_detail = "no such session"


class NoLease(NotFound):
    code = "no_lease"
    default_detail = "no such lease"


class SessionGone(VaultError):
    """The session exists but can no longer be leased."""

    code = "session_gone"
    default_detail = "the session can no longer be used"


class SessionRevoked(SessionGone):
    code = "session_revoked"
    default_detail = "the session was revoked"


class SessionSuperseded(SessionGone):
    code = "session_superseded"
    default_detail = "a newer session of this user replaced this one"


class StoredSessionExpired(SessionGone):
    """A stored session whose cookie expiry has passed (at ingest the same code is a 422)."""

    code = "session_expired"
    default_detail = "the session has expired"


class UserShredded(SessionGone):
    """The user was crypto-shredded: every data key and stored session of theirs is destroyed."""

    code = "user_shredded"
    default_detail = "the user's data was destroyed (crypto-shredded); the user must log in again"


class LeaseHeld(VaultError):
    """Another unexpired lease holds the session. ``retry_after`` is whole seconds until it expires."""

    code = "lease_held"
    default_detail = "the session is leased by another holder"

    def __init__(self, retry_after: int, detail: str | None = None) -> None:
        super().__init__(detail)
        self.retry_after = max(1, int(retry_after))


class LeaseLost(VaultError):
    """The lease expired, was released, or a newer fencing token exists. Nothing was changed."""

    code = "lease_lost"
    default_detail = "the lease is no longer held (expired, released, or fenced off)"


class InvalidSession(VaultError):
    """A serialized session that is not base64, not JSON, of no known format, or incomplete."""

    code = "invalid_session"
    default_detail = "the session is not valid"


class SessionExpired(InvalidSession):
    """The session's cookie names an expiry in the past."""

    code = "session_expired"
    default_detail = "the session has expired"


class AuthError(VaultError):
    """Authentication or authorization failed."""


class Unauthorized(AuthError):
    """No credential, an unknown one, or an expired or revoked one. Deliberately says which of these not."""

    code = "unauthorized"
    default_detail = "a valid bearer token is required"


class TokenForged(Unauthorized):
    """The token's row fails the vault's MAC: it was written behind the vault's back. The caller sees a
    plain 401 (same code and detail); the audit log says why."""


class Forbidden(AuthError):
    """A valid credential whose role does not allow the call."""

    code = "forbidden"
    default_detail = "this credential's role may not do this"


class PurposeNotAllowed(Forbidden):
    code = "purpose_not_allowed"
    default_detail = "this credential may not name that purpose"


class DecryptionError(VaultError):
    """Any failed decryption: wrong key, wrong associated data, bad tag, bad header. Deliberately opaque."""

    code = "decryption_failed"
    default_detail = "decryption failed"


class KeyUnavailable(VaultError):
    """The key-encryption key provider cannot be reached or has no such key."""

    code = "key_unavailable"
    default_detail = "the key provider is unavailable"


class StoreUnavailable(VaultError):
    """The database cannot be reached or refused the operation."""

    code = "store_unavailable"
    default_detail = "the store is unavailable"


class AuditUnavailable(VaultError):
    """The audit record could not be written, so the operation was not done (fail-closed)."""

    code = "audit_unavailable"
    default_detail = "the audit log is unavailable; nothing was released"


class AuditChainBroken(VaultError):
    """The chain's state (the ``audit_chain`` row, or the event at its head) fails its MAC or its hash, or
    something was sealed past the head: written behind the vault's back. The sealer stops extending the
    chain (no event is sealed and no checkpoint signed over it) until an operator has looked."""

    code = "audit_chain_broken"
    default_detail = "the audit chain's state was changed behind the vault's back"


class RateLimited(VaultError):
    """Too many requests of this kind from this caller. ``retry_after`` is whole seconds to wait."""

    code = "rate_limited"
    default_detail = "too many requests; retry later"

    def __init__(self, retry_after: int, detail: str | None = None) -> None:
        super().__init__(detail)
        self.retry_after = max(1, int(retry_after))


class ConfigError(VaultError):
    """The configuration is missing, malformed or weak."""

    code = "config_error"
    default_detail = "the configuration is invalid"
