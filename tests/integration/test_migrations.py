"""The Alembic migrations and the SQLAlchemy models describe the same schema, on both backends."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData
from sqlalchemy.engine import Connection

from tests._db import RawDb
from vault.store import Store, alembic_config, metadata, upgrade


def _diff(url: str, target: MetaData = metadata) -> list[Any]:
    def compare(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, target))

    async def run() -> list[Any]:
        store = Store.connect(url, pool_size=1)
        try:
            async with store.engine.connect() as conn:
                return await conn.run_sync(compare)
        finally:
            await store.close()

    return asyncio.run(run())


def test_models_match_migrations(db_url: str) -> None:
    assert _diff(db_url) == []


def test_downgrade_to_base_and_upgrade_again(db_url: str, raw: RawDb) -> None:
    def downgrade(connection: Connection) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = connection
        command.downgrade(cfg, "base")

    async def run() -> None:
        store = Store.connect(db_url, pool_size=1)
        try:
            async with store.engine.begin() as conn:
                await conn.run_sync(downgrade)
            await upgrade(store.engine)
        finally:
            await store.close()

    asyncio.run(run())
    counts = raw.counts()
    assert counts.pop("audit_chain") == 1  # the chain head row the migration seeds
    assert set(counts.values()) == {0}
    assert _diff(db_url) == []


def test_a_model_change_without_a_migration_is_detected(db_url: str) -> None:
    """The comparison is not vacuous: a column the migrations lack shows up as a difference."""
    changed = MetaData(naming_convention=metadata.naming_convention)
    for table in metadata.sorted_tables:
        table.to_metadata(changed)
    changed.tables["sessions"].append_column(Column("not_migrated", Integer, nullable=True))
    assert any("not_migrated" in repr(d) for d in _diff(db_url, changed))
