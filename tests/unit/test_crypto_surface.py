"""The public surface of vault.crypto, and the imports its modules may make."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import vault.crypto

PACKAGE = Path(vault.crypto.__file__).resolve().parent
# Standard-library modules that do I/O, logging or read the clock: vault.crypto must stay pure.
IMPURE = {
    "asyncio",
    "datetime",
    "http",
    "io",
    "logging",
    "os.path",
    "pathlib",
    "shutil",
    "socket",
    "sqlite3",
    "subprocess",
    "tempfile",
    "time",
    "urllib",
}


def test_every_name_in_all_exists() -> None:
    for name in vault.crypto.__all__:
        assert getattr(vault.crypto, name) is not None


def test_the_private_seal_is_not_exported() -> None:
    assert "_seal_with_nonce" not in vault.crypto.__all__


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: use absolute imports"
            assert node.module is not None
            names.add(node.module)
    return names


def test_modules_import_only_stdlib_cryptography_and_errors() -> None:
    files = sorted(PACKAGE.glob("*.py"))
    assert {f.name for f in files} == {"__init__.py", "_aead.py", "_keyring.py", "_secret.py"}
    for path in files:
        for name in _imports(path):
            top = name.split(".")[0]
            allowed = (
                name == "__future__"
                or top == "cryptography"
                or name == "vault.errors"
                or name.startswith("vault.crypto.")
                or (top in sys.stdlib_module_names and name not in IMPURE and top not in IMPURE)
            )
            assert allowed, f"{path.name} imports {name}"
