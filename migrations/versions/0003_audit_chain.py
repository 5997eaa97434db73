"""Tamper-evident audit: event MACs, sealing columns, chain head, signed checkpoints, append-only triggers.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_UNSEALED = sa.text("seq IS NULL")
# Every column of an audit event except the two the sealer fills once.
_CONTENT = (
    "id", "at_us", "action", "outcome", "actor_token_id", "actor_name", "user_id", "session_id", "lease_id",
    "fencing_token", "purpose", "detail", "request_id", "source", "subjects", "mac",
)  # fmt: skip

_PG = [
    f"""
    CREATE FUNCTION audit_events_guard() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'UPDATE' AND OLD.seq IS NULL AND OLD.hash IS NULL
           AND NEW.seq IS NOT NULL AND NEW.hash IS NOT NULL
           AND ({", ".join("NEW." + c for c in _CONTENT)}) IS NOT DISTINCT FROM ({", ".join("OLD." + c for c in _CONTENT)})
        THEN
            RETURN NEW;
        END IF;
        RAISE EXCEPTION 'the audit log is append-only' USING ERRCODE = 'insufficient_privilege';
    END $$
    """,
    """
    CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'the audit log is append-only' USING ERRCODE = 'insufficient_privilege';
    END $$
    """,
    "CREATE TRIGGER audit_events_guard BEFORE UPDATE OR DELETE ON audit_events"
    " FOR EACH ROW EXECUTE FUNCTION audit_events_guard()",
    "CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events"
    " FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()",
    "CREATE TRIGGER audit_checkpoints_guard BEFORE UPDATE OR DELETE ON audit_checkpoints"
    " FOR EACH ROW EXECUTE FUNCTION audit_append_only()",
    "CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints"
    " FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()",
]

_SQLITE_SAME = " AND ".join(f"NEW.{c} IS OLD.{c}" for c in _CONTENT)
_SQLITE = [
    "CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events"
    " BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
    "CREATE TRIGGER audit_events_seal_once BEFORE UPDATE ON audit_events"
    " WHEN NOT (OLD.seq IS NULL AND OLD.hash IS NULL AND NEW.seq IS NOT NULL AND NEW.hash IS NOT NULL"
    f" AND {_SQLITE_SAME})"
    " BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
    "CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints"
    " BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
    "CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints"
    " BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
]


def upgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("subjects", sa.Text(), nullable=True))
        batch.add_column(sa.Column("mac", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("hash", sa.LargeBinary(), nullable=True))
    op.create_index("ux_audit_events_seq", "audit_events", ["seq"], unique=True)
    op.create_index(
        "ix_audit_events_unsealed", "audit_events", ["id"], postgresql_where=_UNSEALED, sqlite_where=_UNSEALED
    )
    chain = op.create_table(
        "audit_chain",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("head", sa.LargeBinary(), nullable=False),
        sa.Column("checkpoint_id", sa.Integer(), nullable=False),
        sa.Column("checkpoint_hash", sa.LargeBinary(), nullable=False),
        sa.Column("checkpoint_at_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_chain"),
    )
    op.bulk_insert(
        chain, [{"id": 1, "seq": 0, "head": bytes(32), "checkpoint_id": 0, "checkpoint_hash": bytes(32),
                 "checkpoint_at_us": 0}],
    )  # fmt: skip
    op.create_table(
        "audit_checkpoints",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("at_us", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("head", sa.LargeBinary(), nullable=False),
        sa.Column("prev", sa.LargeBinary(), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_checkpoints"),
    )
    for statement in _PG if op.get_bind().dialect.name == "postgresql" else _SQLITE:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for trigger, table in [
            ("audit_events_guard", "audit_events"), ("audit_events_no_truncate", "audit_events"),
            ("audit_checkpoints_guard", "audit_checkpoints"), ("audit_checkpoints_no_truncate", "audit_checkpoints"),
        ]:  # fmt: skip
            op.execute(f"DROP TRIGGER {trigger} ON {table}")
        op.execute("DROP FUNCTION audit_events_guard()")
        op.execute("DROP FUNCTION audit_append_only()")
    else:
        for trigger in ("audit_events_no_delete", "audit_events_seal_once", "audit_checkpoints_no_delete",
                        "audit_checkpoints_no_update"):  # fmt: skip
            op.execute(f"DROP TRIGGER {trigger}")
    op.drop_table("audit_checkpoints")
    op.drop_table("audit_chain")
    op.drop_index("ix_audit_events_unsealed", table_name="audit_events")
    op.drop_index("ux_audit_events_seq", table_name="audit_events")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("hash")
        batch.drop_column("seq")
        batch.drop_column("mac")
        batch.drop_column("subjects")
