"""SQLAlchemy models. The schema is owned by the Alembic migrations; a test checks the two agree.

Timestamps are stored as UTC and always read back as aware UTC datetimes, on PostgreSQL and SQLite alike.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "AUDIT_TEXT_LIMITS",
    "AuditChain",
    "AuditCheckpoint",
    "AuditEvent",
    "Base",
    "Lease",
    "ServiceToken",
    "SessionRecord",
    "User",
    "UserKey",
    "UtcDateTime",
]

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite keeps no zone, so we normalise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    shredded_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class UserKey(Base):
    """A user's data key (DEK), wrapped by a key-encryption key. One ``active`` row per user."""

    __tablename__ = "user_keys"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)
    dek_version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    wrapped_dek: Mapped[bytes] = mapped_column(LargeBinary)
    kek_id: Mapped[str] = mapped_column(String(128))
    kek_version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))  # active | retired
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class SessionRecord(Base):
    """One imported session: ciphertext plus the non-secret metadata needed to query it."""

    __tablename__ = "sessions"
    __table_args__ = (
        Index(None, "user_id", "created_at"),
        # At most one active session per user, enforced by the database.
        Index(
            "ux_sessions_one_active_per_user",
            "user_id",
            unique=True,
            postgresql_where=text("status = 'active'"),
            sqlite_where=text("status = 'active'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    version: Mapped[int] = mapped_column(Integer)
    dek_version: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(16))  # para | capsule
    has_signers: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[str] = mapped_column(String(16))  # active | superseded | revoked
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)


class ServiceToken(Base):
    """A service credential. Only a SHA-256 hash of the secret part is stored."""

    __tablename__ = "service_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))  # ingest | signer | auditor | admin
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary)
    purposes: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON list; None = any
    max_ttl_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    mac: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # the vault's MAC over the row


class Lease(Base):
    """Every grant of a session, ever. Times are microseconds since the epoch on the database's clock.

    ``(session_id, fencing_token)`` is unique and tokens are assigned as max + 1 under the session's row
    lock, so they strictly increase per session. The partial unique index allows one open lease
    (``ended_us IS NULL``) per session; an open lease whose ``expires_us`` has passed is taken over (ended)
    by the next grant.
    """

    __tablename__ = "leases"
    __table_args__ = (
        UniqueConstraint("session_id", "fencing_token"),
        Index(
            "ux_leases_one_open_per_session",
            "session_id",
            unique=True,
            postgresql_where=text("ended_us IS NULL"),
            sqlite_where=text("ended_us IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"))
    user_id: Mapped[str] = mapped_column(String(128))
    session_version: Mapped[int] = mapped_column(Integer)
    fencing_token: Mapped[int] = mapped_column(BigInteger)
    holder_token_id: Mapped[str] = mapped_column(String(32))
    purpose: Mapped[str] = mapped_column(String(64))
    ttl_seconds: Mapped[int] = mapped_column(Integer)
    granted_us: Mapped[int] = mapped_column(BigInteger)
    expires_us: Mapped[int] = mapped_column(BigInteger)
    ended_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    end_reason: Mapped[str | None] = mapped_column(String(16), nullable=True)  # released | expired
    # The grant allowed a write-back that changes the wallet ids or drops a signer.
    allow_wallet_changes: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))


class AuditEvent(Base):
    """One security-relevant event. Never holds session content, keys or tokens (token ids only)."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index(None, "user_id", "id"),
        Index(None, "action", "id"),
        Index("ux_audit_events_seq", "seq", unique=True),
        Index("ux_audit_events_uid", "uid", unique=True),
        Index(
            "ix_audit_events_unsealed",
            "id",
            postgresql_where=text("seq IS NULL"),
            sqlite_where=text("seq IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    # 128 random bits, inside the MAC'd content: a copied row is a duplicate the index refuses.
    uid: Mapped[str | None] = mapped_column(String(32), nullable=True)
    at_us: Mapped[int] = mapped_column(BigInteger)
    action: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(16))  # ok | denied | error
    actor_token_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    actor_name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    user_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    session_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    lease_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    fencing_token: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    purpose: Mapped[str | None] = mapped_column(String(64), nullable=True)
    detail: Mapped[str | None] = mapped_column(String(200), nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    source: Mapped[str | None] = mapped_column(String(64), nullable=True)
    subjects: Mapped[str | None] = mapped_column(Text, nullable=True)  # keyed hashes, space-separated
    mac: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # written with the event
    seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # set once, by the sealer
    hash: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # set once, by the sealer


class AuditChain(Base):
    """The single row holding the chain's head and the newest checkpoint; its lock serialises sealers."""

    __tablename__ = "audit_chain"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    head: Mapped[bytes] = mapped_column(LargeBinary)
    checkpoint_id: Mapped[int] = mapped_column(Integer)
    checkpoint_hash: Mapped[bytes] = mapped_column(LargeBinary)
    checkpoint_at_us: Mapped[int] = mapped_column(BigInteger)
    max_id: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))  # highest id sealed or refused
    mac: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # None only at genesis


class AuditCheckpoint(Base):
    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at_us: Mapped[int] = mapped_column(BigInteger)
    seq: Mapped[int] = mapped_column(BigInteger)
    head: Mapped[bytes] = mapped_column(LargeBinary)
    prev: Mapped[bytes] = mapped_column(LargeBinary)
    key_id: Mapped[str] = mapped_column(String(32))
    signature: Mapped[bytes] = mapped_column(LargeBinary)
    max_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # None in format-1 checkpoints


# The longest value each bounded text column of an audit event holds: the auditor cuts to these before it
# MACs (a database that trims or refuses an over-long value must never see one).
AUDIT_TEXT_LIMITS: dict[str, int] = {
    column.name: int(column.type.length)
    for column in AuditEvent.__table__.columns
    if isinstance(column.type, String) and column.type.length is not None
}
