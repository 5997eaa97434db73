"""Use cases and their transaction boundaries: ingest, credentials (and later lease, rotate, shred)."""

from vault.service._audit import Auditor, Context
from vault.service._audit_log import events_page, export_lines, parse_export, read_everything, verify_live
from vault.service._ingest import IngestResult, ingest, open_session
from vault.service._leases import DEFAULT_TTL, Grant, LeaseService, Renewal
from vault.service._principal import Principal, Role
from vault.service._sealer import SealResult, seal
from vault.service._tokens import (
    TokenInfo,
    authenticate,
    create_token,
    list_tokens,
    revoke_token,
)
from vault.service._vault import Vault, utcnow

__all__ = [
    "DEFAULT_TTL",
    "Auditor",
    "Context",
    "Grant",
    "IngestResult",
    "LeaseService",
    "Principal",
    "Renewal",
    "Role",
    "SealResult",
    "TokenInfo",
    "Vault",
    "authenticate",
    "create_token",
    "events_page",
    "export_lines",
    "ingest",
    "list_tokens",
    "open_session",
    "parse_export",
    "read_everything",
    "revoke_token",
    "seal",
    "utcnow",
    "verify_live",
]
