"""Request and response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from vault.service import (
    INT64_MAX,
    MAX_EXPIRES_IN,
    MAX_SESSION_CHARS,
    NAME_PATTERN,
    PURPOSE_PATTERN,
    IngestResult,
    TokenInfo,
)
from vault.settings import MAX_LEASE_TTL


class _Request(BaseModel):
    """A request body: unknown fields are refused (422), never silently ignored."""

    model_config = ConfigDict(extra="forbid")


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
    """What Para's client snippet posts: ``{"session": await para.exportSession()}``. Other fields (an app
    may add its own) are ignored, unlike every other body: this one is the SDK's contract, not ours."""

    session: str = Field(
        max_length=MAX_SESSION_CHARS,
        description="The serialized (base64 JSON) session, as exported by the Para SDK.",
    )


class ImportedSession(BaseModel):
    session_id: str
    user_id: str
    format: Literal["para", "capsule"]
    has_signers: bool
    expires_at: datetime | None = Field(
        description="When the stored session expires, ISO 8601 UTC: the cookie's Max-Age or Expires, and "
        "never later than the vault's maximum lifetime (VAULT_SESSION_MAX_LIFETIME_SECONDS) after ingest."
    )

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


class NewToken(_Request):
    role: Literal["ingest", "signer", "auditor", "admin"] = Field(
        description="Over the API only `ingest` and `auditor`: `signer` and `admin` tokens are created with "
        "the CLI (`session-vault token create`); asking for one here is 403 `forbidden`, audited."
    )
    name: str = Field(pattern=NAME_PATTERN, description="1-128 letters, digits, spaces or `._:@/-`.")
    expires_in: int | None = Field(
        default=None, ge=1, le=MAX_EXPIRES_IN, description="Seconds until the token expires."
    )


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


class LeaseRequest(_Request):
    purpose: str = Field(
        pattern=PURPOSE_PATTERN, description="Why the session is needed (1-64 of A-Z a-z 0-9 ._:-); audited."
    )
    ttl_seconds: int | None = Field(
        default=None,
        ge=1,
        le=MAX_LEASE_TTL,
        description="Lease length in seconds, 1 to the vault's and the token's maximum; "
        "default 30, or that maximum if lower.",
    )
    allow_wallet_changes: bool = Field(
        default=False,
        description="Allow this lease's write-back to change the session's wallet ids or drop a signer "
        "(refused otherwise); audited.",
    )


class LeaseGranted(BaseModel):
    lease_id: str
    session_id: str
    user_id: str
    fencing_token: int = Field(description="Strictly increasing per session; required to renew or release.")
    expires_at: datetime
    session: str = Field(description="The decrypted serialized session. Returned once, only here.")


FencingToken = Field(ge=1, le=INT64_MAX, description="The lease's fencing token, as granted.")


class RenewRequest(_Request):
    fencing_token: int = FencingToken


class Renewed(BaseModel):
    lease_id: str
    expires_at: datetime


class ReleaseRequest(_Request):
    fencing_token: int = FencingToken
    session: str | None = Field(
        default=None,
        max_length=MAX_SESSION_CHARS,
        description="The refreshed session, stored as the session's next version.",
    )


class Released(BaseModel):
    lease_id: str
    released: bool = True
    written_back: bool
