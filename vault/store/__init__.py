"""Persistence: SQLAlchemy models, migrations runner and queries. The only package that speaks SQL."""

from vault.store._audit import FIRST_ID, AuditFilter
from vault.store._batch import holder_refusal
from vault.store._engine import make_engine
from vault.store._keys import KekCount, RekeySession
from vault.store._migrate import alembic_config, migrations_dir, upgrade
from vault.store._models import (
    AUDIT_TEXT_LIMITS,
    AuditEvent,
    Base,
    Lease,
    ServiceToken,
    SessionRecord,
    User,
    UserKey,
    UtcDateTime,
)
from vault.store._rows import (
    AuditRecord,
    ChainState,
    GrantDecision,
    GrantRequest,
    LeaseRow,
    LockedLease,
    LockedSession,
    ReleaseDecision,
    ReleaseRequest,
    SessionPeek,
    SessionRow,
    TokenRow,
    UserKeyRow,
)
from vault.store._store import Store, Tx

metadata = Base.metadata

__all__ = [
    "AUDIT_TEXT_LIMITS",
    "FIRST_ID",
    "AuditEvent",
    "AuditFilter",
    "AuditRecord",
    "Base",
    "ChainState",
    "GrantDecision",
    "GrantRequest",
    "KekCount",
    "Lease",
    "LeaseRow",
    "LockedLease",
    "LockedSession",
    "RekeySession",
    "ReleaseDecision",
    "ReleaseRequest",
    "ServiceToken",
    "SessionPeek",
    "SessionRecord",
    "SessionRow",
    "Store",
    "TokenRow",
    "Tx",
    "User",
    "UserKey",
    "UserKeyRow",
    "UtcDateTime",
    "alembic_config",
    "holder_refusal",
    "make_engine",
    "metadata",
    "migrations_dir",
    "upgrade",
]
