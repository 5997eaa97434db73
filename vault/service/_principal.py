"""Who a request acts as: a service credential's role and public attributes."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Principal", "Role"]


class Role(StrEnum):
    INGEST = "ingest"
    SIGNER = "signer"
    AUDITOR = "auditor"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a token's public attributes. Never holds the secret."""

    token_id: str
    name: str
    role: Role
    purposes: tuple[str, ...] | None
    max_ttl_seconds: int | None
