"""Secret files: written once with mode 0600, read only if nobody else can read them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from vault.errors import ConfigError

__all__ = ["read_private", "write_private"]


def write_private(path: Path, data: bytes, *, replace: bool = False) -> None:
    """Create ``path`` with mode 0600 and ``data``. Refuses to overwrite an existing file unless
    ``replace``, which writes a new file beside it and renames it over (never a moment half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    target = path.with_name(path.name + ".tmp") if replace else path
    if replace:
        target.unlink(missing_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    if replace:
        os.replace(target, path)


def read_private(path: Path, what: str) -> bytes:
    """Read a secret file; :class:`ConfigError` if missing, unreadable, or readable by group or others."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"the {what} file does not exist") from None
    except OSError:
        raise ConfigError(f"the {what} file cannot be read") from None
    if mode & 0o077:
        raise ConfigError(f"the {what} file must not be readable by group or others (chmod 600)")
    return data
