"""Files the ``session-vault`` command writes are for their owner only, even where loose ones existed."""

from __future__ import annotations

import stat
from pathlib import Path

from tests._db import RawDb
from tests.integration.test_audit_tamper import _cli
from tests.system.test_cli import _dev
from vault.settings import Settings


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_audit_export_is_private_even_over_an_existing_file(
    settings: Settings, raw: RawDb, tmp_path: Path
) -> None:
    out = tmp_path / "export.jsonl"
    out.write_text("stale export\n" * 100)
    out.chmod(0o644)
    made = _cli(settings, "export", "--out", str(out))
    assert made.returncode == 0, made.stderr
    assert _mode(out) == 0o600
    text = out.read_text()
    assert "stale export" not in text and text.endswith("\n")
    assert raw.query("SELECT count(*) FROM audit_events WHERE action = 'audit.export'")[0][0] == 1
    fresh = tmp_path / "fresh.jsonl"
    assert _cli(settings, "export", "--out", str(fresh)).returncode == 0
    assert _mode(fresh) == 0o600


def test_dev_makes_an_existing_open_data_directory_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "dv"
    data_dir.mkdir()
    data_dir.chmod(0o777)
    log = tmp_path / "dev.log"
    with _dev(data_dir, log):
        assert _mode(data_dir) == 0o700
        assert f"{data_dir} was readable by others; it is now mode 0700" in log.read_text()
        for name in ("vault.db", "keyring.json", "audit-keys.json", "admin.token"):
            assert _mode(data_dir / name) & 0o077 == 0, name
    assert _mode(data_dir) == 0o700
