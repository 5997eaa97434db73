"""Layers import downward only, read from the source's import graph (every ``import`` and ``from``).

Floors, top first: cli -> the worker processes (_workers) -> the server (_server, then _http), and the
client -> api -> service -> {keys, store} -> {crypto, sessions, audit} -> settings -> errors. A module may import its own package, and any floor
below its own, never one above or beside it. ``api`` may import only ``service``, ``errors`` and
``settings`` of the vault (it reaches everything else through the services on ``Vault``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "vault"
FLOORS: dict[str, int] = {
    "errors": 0,
    "settings": 1,
    "crypto": 2, "sessions": 2, "audit": 2,
    "keys": 3, "store": 3,
    "service": 4,
    "api": 5,
    "_http": 6, "client": 6,  # uvicorn's protocol with limits; the Python client (errors only)
    "_server": 7, "_cli_keys": 7,  # the ASGI server; the key commands of the CLI
    "_workers": 8,  # several server processes
    "cli": 9,
}  # fmt: skip
API_MAY_IMPORT = {"api", "service", "errors", "settings"}


def _package(module_path: Path) -> str:
    rel = module_path.relative_to(ROOT)
    return rel.parts[0].removesuffix(".py")


def _vault_imports(module_path: Path) -> set[str]:
    """The top-level vault packages a module imports (``vault.x...`` -> ``x``)."""
    found: set[str] = set()
    tree = ast.parse(module_path.read_text(), filename=str(module_path))
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "vault" and len(parts) > 1:
                found.add(parts[1])
    return found


def _modules() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if p.name != "__init__.py" or p.parent != ROOT)


def _violations(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for importer, imported in sorted(graph.items()):
        for target in sorted(imported - {importer}):
            if target not in FLOORS:
                out.append(f"{importer} imports vault.{target}, which has no floor")
            elif FLOORS[target] >= FLOORS[importer]:
                out.append(f"{importer} (floor {FLOORS[importer]}) imports {target} (floor {FLOORS[target]})")
            elif importer == "api" and target not in API_MAY_IMPORT:
                out.append(f"api imports vault.{target}; it may use only service, errors and settings")
    return out


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module in _modules():
        package = _package(module)
        graph.setdefault(package, set()).update(_vault_imports(module) - {""})
    # "from vault import errors as e" names the package in the alias list: counted as vault.errors.
    return graph


def test_every_package_has_a_floor() -> None:
    assert set(_graph()) <= set(FLOORS), set(_graph()) - set(FLOORS)


def test_layers_import_downward_only() -> None:
    assert _violations(_graph()) == []


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"store": {"service"}}, "store (floor 3) imports service (floor 4)"),
        ({"keys": {"store"}}, "keys (floor 3) imports store (floor 3)"),
        ({"api": {"store"}}, "api imports vault.store; it may use only service, errors and settings"),
        ({"crypto": {"nowhere"}}, "crypto imports vault.nowhere, which has no floor"),
    ],
)
def test_the_check_is_not_vacuous(graph: dict[str, set[str]], expected: str) -> None:
    assert _violations(graph) == [expected]
