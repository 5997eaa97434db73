"""Use cases and their transaction boundaries: ingest, credentials (and later lease, rotate, shred)."""

from vault.service._context import Context
from vault.service._ingest import IngestResult, ingest, open_session
from vault.service._leases import DEFAULT_TTL, Grant, LeaseService, Renewal
from vault.service._tokens import (
    Principal,
    Role,
    TokenInfo,
    authenticate,
    create_token,
    list_tokens,
    revoke_token,
)
from vault.service._vault import Vault, utcnow

__all__ = [
    "DEFAULT_TTL",
    "Context",
    "Grant",
    "IngestResult",
    "LeaseService",
    "Principal",
    "Renewal",
    "Role",
    "TokenInfo",
    "Vault",
    "authenticate",
    "create_token",
    "ingest",
    "list_tokens",
    "open_session",
    "revoke_token",
    "utcnow",
]
