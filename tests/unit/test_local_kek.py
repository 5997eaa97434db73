"""The local keyring provider, file-backed: rotate, retire and status; other instances (threads,
processes) follow the file without a restart; concurrent rotations lose nothing; the file stays 0600."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

import pytest

from vault.crypto import Keyring, dek_aad, generate_key
from vault.errors import ConfigError, DecryptionError, InvalidRequest, KeyUnavailable
from vault.keys import (
    KekStatus,
    LocalKeyringProvider,
    WrappedKey,
    create_keyring_file,
    load_keyring_file,
    write_private,
)
from vault.keys import _local as local_module

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def keyring_path(tmp_path: Path) -> Path:
    path = tmp_path / "keyring.json"
    create_keyring_file(path)
    return path


def test_rotate_retire_and_status(keyring_path: Path) -> None:
    kek = LocalKeyringProvider.from_file(keyring_path)
    assert kek.local is True and kek.kek_id == "local"
    assert run(kek.status()) == KekStatus("local", 1, 1, (1,))
    deks = {1: generate_key()}
    wrapped = {1: run(kek.wrap(deks[1], aad=dek_aad("u", 1)))}
    assert wrapped[1].kek_version == 1
    for version in (2, 3):
        assert run(kek.rotate()) == version
        deks[version] = generate_key()
        wrapped[version] = run(kek.wrap(deks[version], aad=dek_aad("u", version)))
        assert wrapped[version].kek_version == version
        assert mode(keyring_path) == 0o600
    assert run(kek.status()) == KekStatus("local", 3, 1, (1, 2, 3))
    assert all(run(kek.unwrap(wrapped[v], aad=dek_aad("u", v))) == deks[v] for v in (1, 2, 3))

    for bad in (3, 4, 0, -1):
        with pytest.raises(InvalidRequest, match=r"below the active one \(3\)"):
            run(kek.retire(bad))
    run(kek.retire(2))
    assert run(kek.status()) == KekStatus("local", 3, 3, (3,))
    for version in (1, 2):
        with pytest.raises(DecryptionError):
            run(kek.unwrap(wrapped[version], aad=dek_aad("u", version)))
    assert run(kek.unwrap(wrapped[3], aad=dek_aad("u", 3))) == deks[3]
    assert load_keyring_file(keyring_path).versions == (3,)  # gone from the file, not only from memory
    run(kek.retire(1))  # nothing left to retire
    assert mode(keyring_path) == 0o600 and mode(keyring_path.with_name("keyring.json.lock")) == 0o600
    assert sorted(p.name for p in keyring_path.parent.iterdir()) == ["keyring.json", "keyring.json.lock"]
    secret = load_keyring_file(keyring_path).active_key()[1]
    assert secret.hex() not in repr(kek) and "keys" not in repr(kek)
    run(kek.check())


def test_rewrap_moves_to_the_active_version_and_skips_what_does_not_open(keyring_path: Path) -> None:
    kek = LocalKeyringProvider.from_file(keyring_path)
    dek = generate_key()
    old = run(kek.wrap(dek, aad=dek_aad("u", 1)))
    run(kek.rotate())
    items = [
        (old, dek_aad("u", 1)), (old, dek_aad("v", 1)), (WrappedKey("transit:t/k", 1, old.blob), dek_aad("u", 1)),
        (WrappedKey("local", 1, b"short"), dek_aad("u", 1)),
    ]  # fmt: skip
    new, *rest = run(kek.rewrap(items))
    assert rest == [None, None, None]
    assert new is not None and new.kek_version == 2 and new.kek_id == "local"
    assert run(kek.unwrap(new, aad=dek_aad("u", 1))) == dek
    assert run(kek.rewrap([])) == []


def test_another_instance_on_the_same_file_follows_without_a_restart(keyring_path: Path) -> None:
    admin = LocalKeyringProvider.from_file(keyring_path)
    server = LocalKeyringProvider.from_file(keyring_path)
    old_dek = generate_key()
    old = run(server.wrap(old_dek, aad=b"a"))
    assert run(admin.rotate()) == 2
    new = run(server.wrap(generate_key(), aad=b"a"))
    assert new.kek_version == 2  # the server wraps under the rotated version at once
    assert run(server.status()).versions == (1, 2)
    assert run(admin.unwrap(new, aad=b"a")) is not None
    run(admin.retire(1))
    with pytest.raises(DecryptionError):
        run(server.unwrap(old, aad=b"a"))
    assert run(server.status()) == KekStatus("local", 2, 2, (2,))
    assert old_dek  # (the old DEK is unreachable now: that is what retiring means)


def test_an_unknown_version_reloads_once_even_if_the_file_looks_unchanged(
    keyring_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rewrite within the file system's timestamp granularity may look unchanged to the stat check."""
    admin = LocalKeyringProvider.from_file(keyring_path)
    server = LocalKeyringProvider.from_file(keyring_path)
    run(server.status())  # loaded, with the signature of version 1's file
    monkeypatch.setattr(local_module, "_signature", lambda path: (0, 0, 0))
    run(server.status())  # the one reload that adopts the constant signature
    run(admin.rotate())
    dek = generate_key()
    wrapped = run(admin.wrap(dek, aad=b"a"))
    assert run(server.status()).active_version == 1  # the stat check sees no change...
    assert run(server.unwrap(wrapped, aad=b"a")) == dek  # ...but a blob of an unknown version reloads
    assert run(server.status()).active_version == 2


def test_concurrent_rotations_from_threads_lose_nothing(keyring_path: Path) -> None:
    threads, rotations = 6, 5
    seen: list[int] = []
    barrier = threading.Barrier(threads)

    def rotate_many() -> None:
        kek = LocalKeyringProvider.from_file(keyring_path)  # its own instance, as another process would
        barrier.wait()
        for _ in range(rotations):
            seen.append(run(kek.rotate()))

    workers = [threading.Thread(target=rotate_many) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    total = 1 + threads * rotations
    assert sorted(seen) == list(range(2, total + 1))  # every rotation got its own version
    keyring = load_keyring_file(keyring_path)
    assert keyring.versions == tuple(range(1, total + 1)) and keyring.active_version == total
    assert mode(keyring_path) == 0o600


_ROTATE_IN_A_PROCESS = """
import asyncio, sys
from pathlib import Path
from vault.keys import LocalKeyringProvider
kek = LocalKeyringProvider.from_file(Path(sys.argv[1]))
async def main():
    for _ in range(int(sys.argv[2])):
        print(await kek.rotate())
asyncio.run(main())
"""


def test_concurrent_rotations_from_processes_lose_nothing(keyring_path: Path) -> None:
    processes, rotations = 3, 8
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-c", _ROTATE_IN_A_PROCESS, str(keyring_path), str(rotations)]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env) for _ in range(processes)]
    seen: list[int] = []
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        seen += [int(line) for line in out.split()]
    total = 1 + processes * rotations
    assert sorted(seen) == list(range(2, total + 1))
    assert load_keyring_file(keyring_path).versions == tuple(range(1, total + 1))
    assert mode(keyring_path) == 0o600


def test_a_keyring_file_that_becomes_unusable_stops_the_provider(keyring_path: Path) -> None:
    """Serving on with the keys in memory could unwrap with a version the file has since retired."""
    kek = LocalKeyringProvider.from_file(keyring_path)
    wrapped = run(kek.wrap(b"d" * 32, aad=b"a"))
    good = keyring_path.read_bytes()
    write_private(keyring_path, b'{"format": "something else"}', replace=True)
    with pytest.raises(KeyUnavailable, match="changed and cannot be used: keyring: "):
        run(kek.unwrap(wrapped, aad=b"a"))
    with pytest.raises(ConfigError, match="keyring: "):
        run(kek.check())
    write_private(keyring_path, good, replace=True)
    assert run(kek.unwrap(wrapped, aad=b"a")) == b"d" * 32
    keyring_path.chmod(0o644)  # a chmod is no change of keys; check() (readiness) reads the file anew
    with pytest.raises(ConfigError, match="group or others"):
        run(kek.check())
    keyring_path.unlink()
    with pytest.raises(KeyUnavailable, match="changed and cannot be used: the keyring file does not exist"):
        run(kek.wrap(b"d" * 32, aad=b"a"))
    with pytest.raises(ConfigError, match="does not exist"):
        run(kek.check())


def test_an_in_memory_keyring_rotates_and_retires_in_memory() -> None:
    kek = LocalKeyringProvider(Keyring.generate())
    old = run(kek.wrap(b"d" * 32, aad=b"a"))
    assert run(kek.rotate()) == 2
    assert run(kek.wrap(b"d" * 32, aad=b"a")).kek_version == 2
    with pytest.raises(InvalidRequest):
        run(kek.retire(2))
    run(kek.retire(1))
    with pytest.raises(DecryptionError):
        run(kek.unwrap(old, aad=b"a"))
    assert run(kek.status()) == KekStatus("local", 2, 2, (2,))
    run(kek.check())
