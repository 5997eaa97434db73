"""The public surface of every vault package and module, derived, not copied.

A package's ``__all__`` must be exactly the public names bound in it that belong to the vault (defined in
it, re-exported from another vault package, or a constant), no more (a name listed but missing) and no
less (a helper bound under a public name but not meant to be exported must be made private). Names
imported from the standard library or third parties (``ClassVar``, ``Field``) are not part of it.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

import vault


def _public_modules() -> list[str]:
    names = ["vault"]
    for info in pkgutil.walk_packages(vault.__path__, "vault."):
        if not any(part.startswith("_") for part in info.name.split(".")[1:]):
            names.append(info.name)
    return sorted(names)


def _bound_names(source: str, *, reexports: bool = True) -> set[str]:
    """Public names a module's own top level binds: its defs, classes and assignments, and (for a package,
    whose ``__init__`` re-exports) what it imports from the vault itself; never what it imports from
    elsewhere. A plain module's imports are for its own use."""
    names: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif reexports and isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "vault":
            names.update(alias.asname or alias.name for alias in node.names)
    return {n for n in names if not n.startswith("_")}


def derived(module: ModuleType) -> set[str]:
    return _bound_names(inspect.getsource(module), reexports=hasattr(module, "__path__"))


@pytest.mark.parametrize("name", _public_modules())
def test_all_is_exactly_what_the_module_binds(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    if name == "vault":  # the top package exports only its version
        assert exported == ["__version__"]
        return
    assert exported is not None, f"{name} has no __all__"
    assert len(exported) == len(set(exported)), "duplicates in __all__"
    assert set(exported) == derived(module)


def test_the_derivation_is_not_vacuous() -> None:
    source = (
        "from typing import ClassVar\nfrom vault.errors import VaultError\nfrom vault.x._y import Z as W\n"
        "LIMIT = 3\nlimit: int = 4\nclass Thing: pass\ndef _helper(): pass\nasync def run(): pass\n"
    )
    assert _bound_names(source) == {"VaultError", "W", "LIMIT", "limit", "Thing", "run"}
