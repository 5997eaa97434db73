"""Plain row values returned by the store. Ciphertext and key material are bytes the caller must not log."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

__all__ = ["SessionRow", "TokenRow", "UserKeyRow"]


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
