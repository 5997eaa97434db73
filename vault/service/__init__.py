"""Use cases and their transaction boundaries: ingest, credentials, leases, audit, key management."""

from vault.audit import Checkpoint, Event, PublicKey
from vault.service._audit import Auditor, Context, bounded_text
from vault.service._audit_log import (
    AuditLog,
    adopt_chain,
    events_page,
    export_lines,
    parse_export,
    read_everything,
    verify_live,
)
from vault.service._ids import (
    ACTION_PATTERN,
    INT64_MAX,
    NAME_PATTERN,
    OUTCOME_PATTERN,
    PURPOSE_PATTERN,
    TOKEN_ID_PATTERN,
    USER_ID_PATTERN,
    UUID_PATTERN,
    source_address,
)
from vault.service._ingest import IngestResult, SessionIntake, ingest, open_session
from vault.service._key_admin import DekRotation, KeyAdmin, KeysStatus, RewrapProgress, Shredded
from vault.service._keys import Keys, with_keys
from vault.service._leases import DEFAULT_TTL, Grant, LeaseService, Renewal
from vault.service._principal import Principal, Role
from vault.service._sealer import SealResult, chain_mac, seal
from vault.service._tokens import (
    API_MINTABLE,
    MAX_EXPIRES_IN,
    TokenInfo,
    TokenService,
    authenticate,
    create_token,
    list_tokens,
    revoke_token,
)
from vault.service._vault import Vault, utcnow
from vault.sessions import MAX_SESSION_CHARS
from vault.store import FIRST_ID, AuditFilter

__all__ = [
    "ACTION_PATTERN",
    "API_MINTABLE",
    "DEFAULT_TTL",
    "FIRST_ID",
    "INT64_MAX",
    "MAX_EXPIRES_IN",
    "MAX_SESSION_CHARS",
    "NAME_PATTERN",
    "OUTCOME_PATTERN",
    "PURPOSE_PATTERN",
    "TOKEN_ID_PATTERN",
    "USER_ID_PATTERN",
    "UUID_PATTERN",
    "AuditFilter",
    "AuditLog",
    "Auditor",
    "Checkpoint",
    "Context",
    "DekRotation",
    "Event",
    "Grant",
    "IngestResult",
    "KeyAdmin",
    "Keys",
    "KeysStatus",
    "LeaseService",
    "Principal",
    "PublicKey",
    "Renewal",
    "RewrapProgress",
    "Role",
    "SealResult",
    "SessionIntake",
    "Shredded",
    "TokenInfo",
    "TokenService",
    "Vault",
    "adopt_chain",
    "authenticate",
    "bounded_text",
    "chain_mac",
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
    "source_address",
    "utcnow",
    "verify_live",
    "with_keys",
]
