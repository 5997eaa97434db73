"""The guard of tests/unit (its conftest.py) fails collection on a test that needs a database or a server,
naming it, and lets everything else through; and no module here imports the database or server helpers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.unit.conftest import SERVICE_FIXTURES, UNIT

pytest_plugins = ["pytester"]

# Stand-ins for tests/conftest.py: a database fixture, and one that reaches it (the closure counts).
ROOT_CONFTEST = """
import pytest

@pytest.fixture
def db_url():
    return "sqlite://"

@pytest.fixture
def raw(db_url):
    return db_url

@pytest.fixture
def rows(raw):
    return []

@pytest.fixture
def keyring_file(tmp_path):
    return tmp_path / "keyring.json"
"""
PURE = """
def test_pure():
    pass

def test_with_a_file(keyring_file):
    pass
"""


def _layout(pytester: pytest.Pytester, unit_tests: str) -> None:
    pytester.makeconftest(ROOT_CONFTEST)
    unit = pytester.mkpydir("unit")
    (unit / "conftest.py").write_text((UNIT / "conftest.py").read_text())
    (unit / "test_here.py").write_text(unit_tests)
    (pytester.path / "test_elsewhere.py").write_text("def test_with_a_database(raw):\n    pass\n")


def test_a_unit_test_that_needs_a_database_fails_collection_by_name(pytester: pytest.Pytester) -> None:
    _layout(pytester, PURE + "\ndef test_direct(db_url):\n    pass\n\ndef test_indirect(rows):\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*tests/unit must need no database or server*",
            "*unit/test_here.py::test_direct needs db_url",
            "*unit/test_here.py::test_indirect needs db_url, raw",
        ]
    )
    named = result.stderr.str()
    assert "test_pure" not in named and "test_with_a_file" not in named  # DB-free unit tests are not named
    assert "test_with_a_database" not in named  # outside tests/unit, a database is fine
    result.stdout.no_fnmatch_line("*passed*")  # nothing ran


def test_database_free_unit_tests_and_database_tests_elsewhere_pass(pytester: pytest.Pytester) -> None:
    _layout(pytester, PURE)
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=3)


def test_the_guard_knows_the_database_and_server_fixtures() -> None:
    conftest = Path(__file__).resolve().parents[1] / "conftest.py"
    defined = {
        node.name
        for node in ast.walk(ast.parse(conftest.read_text()))
        if isinstance(node, ast.FunctionDef)
        and any("fixture" in ast.unparse(decorator) for decorator in node.decorator_list)
    }
    # Every fixture of tests/conftest.py is guarded, but the two that only write key files to tmp_path.
    assert defined - {"keyring_file", "audit_keys_file"} <= SERVICE_FIXTURES


FORBIDDEN = ("tests._db", "tests._live", "tests._openbao", "tests.system", "tests.integration")


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return found


def test_no_unit_module_imports_the_database_or_server_helpers() -> None:
    bad = {
        f"{path.name} imports {name}"
        for path in sorted(UNIT.glob("*.py"))
        for name in _imports(path)
        if name.startswith(FORBIDDEN)
    }
    assert not bad, sorted(bad)
