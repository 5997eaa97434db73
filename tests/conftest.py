"""Shared fixtures: every integration test runs on real PostgreSQL and on real SQLite.

Migrations run once per test session per backend (into a template); each test gets a fresh copy of
the migrated database, so tests neither share state nor clean up rows.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from tests._db import (
    RawDb,
    drop_pg_database,
    migrate,
    new_pg_database,
    new_sqlite_database,
    pg_execute,
    pg_vault_url,
)
from tests._live import LiveVault, live_vault
from vault.keys import create_audit_keys_file, create_keyring_file
from vault.settings import Settings

BACKENDS = ["postgresql", "sqlite"]
pytest_plugins = ["tests._openbao"]


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    name = f"sv_tpl_{os.getpid()}"
    pg_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    pg_execute(f'CREATE DATABASE "{name}"')
    migrate(pg_vault_url(name))
    yield name
    drop_pg_database(name)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    migrate(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture
def db_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database of the test's backend."""
    if backend == "postgresql":
        template: str = request.getfixturevalue("pg_template")
        name = new_pg_database(template)
        yield pg_vault_url(name)
        drop_pg_database(name)
    else:
        sqlite_template: Path = request.getfixturevalue("sqlite_template")
        yield new_sqlite_database(sqlite_template, tmp_path)


@pytest.fixture
def raw(db_url: str) -> RawDb:
    return RawDb(db_url)


@pytest.fixture
def keyring_file(tmp_path: Path) -> Path:
    path = tmp_path / "keyring.json"
    create_keyring_file(path)
    return path


@pytest.fixture
def audit_keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "audit-keys.json"
    create_audit_keys_file(path)
    return path


@pytest.fixture
def settings(db_url: str, keyring_file: Path, audit_keys_file: Path) -> Settings:
    return Settings.model_validate(
        {"database_url": SecretStr(db_url), "keyring_file": keyring_file, "audit_keys_file": audit_keys_file}
    )


@pytest.fixture
def vault(settings: Settings) -> Iterator[LiveVault]:
    with live_vault(settings) as live:
        yield live
