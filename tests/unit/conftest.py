"""tests/unit needs no database and no server, and collection enforces it.

A test here whose fixture closure reaches a database or server fixture (directly, or through another
fixture) fails the whole collection with a usage error that names it. Such a test belongs in
tests/integration or tests/system. (``test_unit_guard.py`` proves the guard; it also checks that no module
here imports the database or server helpers.)
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent
# The fixtures of tests/conftest.py that make or reach a database, and the server fixtures.
SERVICE_FIXTURES = frozenset(
    {"db_url", "raw", "settings", "vault", "backend", "pg_template", "sqlite_template"}
    | {"openbao", "openbao_tls", "transit_key", "durable_openbao"}  # real OpenBao servers (tests._openbao)
)


def offenders(items: Iterable[pytest.Item], unit: Path = UNIT) -> list[str]:
    """Each test under ``unit`` whose fixture closure has a database or server fixture, with those fixtures."""
    found = []
    for item in items:
        if not Path(item.path).resolve().is_relative_to(unit):
            continue
        needs = sorted(SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())))
        if needs:
            found.append(f"{item.nodeid} needs {', '.join(needs)}")
    return found


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    found = offenders(items)
    if found:
        raise pytest.UsageError(
            "tests/unit must need no database or server; move these to tests/integration or tests/system:\n  "
            + "\n  ".join(found)
        )
