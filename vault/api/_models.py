"""Request and response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from vault.service import IngestResult, TokenInfo

__all__ = [
    "ImportSession",
    "ImportedSession",
    "LeaseGranted",
    "LeaseRequest",
    "NewToken",
    "ReleaseRequest",
    "Released",
    "RenewRequest",
    "Renewed",
    "TokenCreated",
    "TokenView",
]


class ImportSession(BaseModel):
    """Exactly what Para's client snippet posts: ``{"session": await para.exportSession()}``."""

    session: str = Field(description="The serialized (base64 JSON) session, as exported by the Para SDK.")


class ImportedSession(BaseModel):
    session_id: str
    user_id: str
    format: Literal["para", "capsule"]
    has_signers: bool
    expires_at: datetime | None = Field(description="The cookie's Expires, ISO 8601 UTC; null if none.")

    @classmethod
    def of(cls, result: IngestResult) -> ImportedSession:
        return cls.model_validate(
            {
                "session_id": result.session_id,
                "user_id": result.user_id,
                "format": result.format,
                "has_signers": result.has_signers,
                "expires_at": result.expires_at,
            }
        )


class NewToken(BaseModel):
    role: Literal["ingest", "signer", "auditor", "admin"]
    name: str
    expires_in: int | None = Field(default=None, description="Seconds until the token expires.")
    purposes: list[str] | None = Field(default=None, description="Signer tokens: purposes it may name.")
    max_ttl_seconds: int | None = Field(default=None, description="Signer tokens: longest lease it may take.")


class TokenView(BaseModel):
    id: str
    name: str
    role: str
    purposes: list[str] | None
    max_ttl_seconds: int | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, info: TokenInfo) -> TokenView:
        return cls.model_validate(
            {
                "id": info.id,
                "name": info.name,
                "role": info.role.value,
                "purposes": None if info.purposes is None else list(info.purposes),
                "max_ttl_seconds": info.max_ttl_seconds,
                "created_at": info.created_at,
                "expires_at": info.expires_at,
                "revoked_at": info.revoked_at,
            }
        )


class TokenCreated(TokenView):
    token: str = Field(description="The bearer token. Shown once; the vault keeps only its hash.")


class LeaseRequest(BaseModel):
    purpose: str = Field(description="Why the session is needed (1-64 of A-Z a-z 0-9 . _ : -); audited.")
    ttl_seconds: int | None = Field(
        default=None,
        description="Lease length in seconds, 1 to the vault's and the token's maximum; "
        "default 30, or that maximum if lower.",
    )


class LeaseGranted(BaseModel):
    lease_id: str
    session_id: str
    user_id: str
    fencing_token: int = Field(description="Strictly increasing per session; required to renew or release.")
    expires_at: datetime
    session: str = Field(description="The decrypted serialized session. Returned once, only here.")


class RenewRequest(BaseModel):
    fencing_token: int


class Renewed(BaseModel):
    lease_id: str
    expires_at: datetime


class ReleaseRequest(BaseModel):
    fencing_token: int
    session: str | None = Field(
        default=None, description="The refreshed session, stored as the session's next version."
    )


class Released(BaseModel):
    lease_id: str
    released: bool = True
    written_back: bool
