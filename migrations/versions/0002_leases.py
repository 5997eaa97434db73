"""Leases with fencing tokens, a minimal audit table, one active session per user.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_ACTIVE = sa.text("status = 'active'")
_OPEN = sa.text("ended_us IS NULL")


def upgrade() -> None:
    op.create_index(
        "ux_sessions_one_active_per_user", "sessions", ["user_id"], unique=True,
        postgresql_where=_ACTIVE, sqlite_where=_ACTIVE,
    )  # fmt: skip
    op.create_table(
        "leases",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("session_id", sa.String(36), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("session_version", sa.Integer(), nullable=False),
        sa.Column("fencing_token", sa.BigInteger(), nullable=False),
        sa.Column("holder_token_id", sa.String(32), nullable=False),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("ttl_seconds", sa.Integer(), nullable=False),
        sa.Column("granted_us", sa.BigInteger(), nullable=False),
        sa.Column("expires_us", sa.BigInteger(), nullable=False),
        sa.Column("ended_us", sa.BigInteger(), nullable=True),
        sa.Column("end_reason", sa.String(16), nullable=True),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"], name="fk_leases_session_id_sessions"),
        sa.PrimaryKeyConstraint("id", name="pk_leases"),
        sa.UniqueConstraint("session_id", "fencing_token", name="uq_leases_session_id_fencing_token"),
    )
    op.create_index(
        "ux_leases_one_open_per_session", "leases", ["session_id"], unique=True,
        postgresql_where=_OPEN, sqlite_where=_OPEN,
    )  # fmt: skip
    op.create_table(
        "audit_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at_us", sa.BigInteger(), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("actor_token_id", sa.String(32), nullable=True),
        sa.Column("actor_name", sa.String(128), nullable=True),
        sa.Column("user_id", sa.String(128), nullable=True),
        sa.Column("session_id", sa.String(36), nullable=True),
        sa.Column("lease_id", sa.String(36), nullable=True),
        sa.Column("fencing_token", sa.BigInteger(), nullable=True),
        sa.Column("purpose", sa.String(64), nullable=True),
        sa.Column("detail", sa.String(200), nullable=True),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("source", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit_events"),
    )
    op.create_index("ix_audit_events_user_id_id", "audit_events", ["user_id", "id"])
    op.create_index("ix_audit_events_action_id", "audit_events", ["action", "id"])


def downgrade() -> None:
    op.drop_index("ix_audit_events_action_id", table_name="audit_events")
    op.drop_index("ix_audit_events_user_id_id", table_name="audit_events")
    op.drop_table("audit_events")
    op.drop_index("ux_leases_one_open_per_session", table_name="leases")
    op.drop_table("leases")
    op.drop_index("ux_sessions_one_active_per_user", table_name="sessions")
