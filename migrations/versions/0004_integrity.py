"""Integrity against the vault's own database role: event uids, an authenticated chain row, checkpoint
high-water marks, insert guards on the audit log, MAC'd token rows, wallet-change permission on leases.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Every column of an audit event except the two the sealer fills once (0003's list, plus uid).
_CONTENT = (
    "id", "uid", "at_us", "action", "outcome", "actor_token_id", "actor_name", "user_id", "session_id",
    "lease_id", "fencing_token", "purpose", "detail", "request_id", "source", "subjects", "mac",
)  # fmt: skip
_OLD_CONTENT = tuple(c for c in _CONTENT if c != "uid")

_PG_GUARD = """
    CREATE OR REPLACE FUNCTION audit_events_guard() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'UPDATE' AND OLD.seq IS NULL AND OLD.hash IS NULL
           AND NEW.seq IS NOT NULL AND NEW.hash IS NOT NULL
           AND ({new}) IS NOT DISTINCT FROM ({old})
        THEN
            RETURN NEW;
        END IF;
        RAISE EXCEPTION 'the audit log is append-only' USING ERRCODE = 'insufficient_privilege';
    END $$
"""

_PG = [
    _PG_GUARD.format(new=", ".join("NEW." + c for c in _CONTENT), old=", ".join("OLD." + c for c in _CONTENT)),
    """
    CREATE FUNCTION audit_events_insert_guard() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.seq IS NOT NULL OR NEW.hash IS NOT NULL OR NEW.uid IS NULL OR NEW.mac IS NULL OR NEW.id <= 0 THEN
            RAISE EXCEPTION 'audit events arrive unsealed, with a uid, a MAC and a positive id'
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        RETURN NEW;
    END $$
    """,
    "CREATE TRIGGER audit_events_insert_guard BEFORE INSERT ON audit_events"
    " FOR EACH ROW EXECUTE FUNCTION audit_events_insert_guard()",
]

_SQLITE_SAME = " AND ".join(f"NEW.{c} IS OLD.{c}" for c in _CONTENT)
_SQLITE_OLD_SAME = " AND ".join(f"NEW.{c} IS OLD.{c}" for c in _OLD_CONTENT)
_SEAL_ONCE = (
    "CREATE TRIGGER audit_events_seal_once BEFORE UPDATE ON audit_events"
    " WHEN NOT (OLD.seq IS NULL AND OLD.hash IS NULL AND NEW.seq IS NOT NULL AND NEW.hash IS NOT NULL"
    " AND {same})"
    " BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END"
)
_SQLITE = [
    "DROP TRIGGER audit_events_seal_once",
    _SEAL_ONCE.format(same=_SQLITE_SAME),
    "CREATE TRIGGER audit_events_insert_guard BEFORE INSERT ON audit_events"
    " WHEN NEW.seq IS NOT NULL OR NEW.hash IS NOT NULL OR NEW.uid IS NULL OR NEW.mac IS NULL"
    " BEGIN SELECT RAISE(ABORT, 'audit events arrive unsealed, with a uid, a MAC and a positive id'); END",
    # A BEFORE INSERT trigger cannot see a rowid SQLite has yet to assign: check it after, in the statement.
    "CREATE TRIGGER audit_events_positive_id AFTER INSERT ON audit_events WHEN NEW.id <= 0"
    " BEGIN SELECT RAISE(ABORT, 'audit events arrive unsealed, with a uid, a MAC and a positive id'); END",
]


def upgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("uid", sa.String(32), nullable=True))
    op.create_index("ux_audit_events_uid", "audit_events", ["uid"], unique=True)
    with op.batch_alter_table("audit_chain") as batch:
        batch.add_column(sa.Column("max_id", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("mac", sa.LargeBinary(), nullable=True))
    with op.batch_alter_table("audit_checkpoints") as batch:
        batch.add_column(sa.Column("max_id", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("service_tokens") as batch:
        batch.add_column(sa.Column("mac", sa.LargeBinary(), nullable=True))
    with op.batch_alter_table("leases") as batch:
        batch.add_column(
            sa.Column("allow_wallet_changes", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    for statement in _PG if op.get_bind().dialect.name == "postgresql" else _SQLITE:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER audit_events_insert_guard ON audit_events")
        op.execute("DROP FUNCTION audit_events_insert_guard()")
        op.execute(
            _PG_GUARD.format(
                new=", ".join("NEW." + c for c in _OLD_CONTENT), old=", ".join("OLD." + c for c in _OLD_CONTENT)
            )
        )
    else:  # dropping a column rebuilds the table on SQLite: its triggers go first, 0003's come back after
        op.execute("DROP TRIGGER audit_events_insert_guard")
        op.execute("DROP TRIGGER audit_events_positive_id")
        op.execute("DROP TRIGGER audit_events_seal_once")
        for trigger in ("audit_events_no_delete", "audit_checkpoints_no_delete", "audit_checkpoints_no_update"):
            op.execute(f"DROP TRIGGER {trigger}")
    with op.batch_alter_table("leases") as batch:
        batch.drop_column("allow_wallet_changes")
    with op.batch_alter_table("service_tokens") as batch:
        batch.drop_column("mac")
    with op.batch_alter_table("audit_checkpoints") as batch:
        batch.drop_column("max_id")
    with op.batch_alter_table("audit_chain") as batch:
        batch.drop_column("mac")
        batch.drop_column("max_id")
    op.drop_index("ux_audit_events_uid", table_name="audit_events")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("uid")
    if op.get_bind().dialect.name != "postgresql":
        op.execute(_SEAL_ONCE.format(same=_SQLITE_OLD_SAME))
        for what, table in (
            ("audit_events_no_delete", "DELETE ON audit_events"),
            ("audit_checkpoints_no_delete", "DELETE ON audit_checkpoints"),
            ("audit_checkpoints_no_update", "UPDATE ON audit_checkpoints"),
        ):
            op.execute(
                f"CREATE TRIGGER {what} BEFORE {table} BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END"
            )
