"""`session-vault serve` with the Transit KEK provider checks its key before it listens: a missing key,
one that is not derived or cannot wrap data keys, plain http to another host, a bad token or token file
each stop it with exit 1 and one line naming the problem, and never the token. Real OpenBao dev server,
real PostgreSQL database."""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests._db import RawDb
from tests._openbao import BaoServer
from tests.sessiongen import make_session
from tests.system._procs import free_port, kek_settings, run_cli, vault_env
from vault.settings import Settings

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("backend", ["postgresql"], indirect=True)]


@pytest.fixture
def env(settings: Settings, openbao: BaoServer, tmp_path: Path) -> dict[str, str]:
    """What an operator sets for `serve` on Transit (no keyring file: the KMS holds the KEK)."""
    env = vault_env(kek_settings(settings, "transit", openbao, tmp_path))
    del env["VAULT_KEYRING_FILE"]
    return env | {"VAULT_PUBLIC_PORT": str(free_port()), "VAULT_INTERNAL_PORT": str(free_port())}


def _token_file(path: Path, token: str, mode: int = 0o600) -> str:
    path.write_text(token + "\n")
    path.chmod(mode)
    return str(path)


def test_serve_refuses_a_transit_key_it_cannot_use(
    env: dict[str, str], openbao: BaoServer, tmp_path: Path
) -> None:
    wrong = "s." + secrets.token_urlsafe(18)
    cases: dict[str, tuple[dict[str, str], str]] = {
        "missing key": ({"VAULT_TRANSIT_KEY": "sv-never-created"}, "config_error: the transit key "
                        "transit/sv-never-created does not exist"),
        "missing mount": ({"VAULT_TRANSIT_MOUNT": "elsewhere"}, "the transit key elsewhere/"),
        "not derived": ({"VAULT_TRANSIT_KEY": openbao.create_key(derived=False)}, "must be created with "
                        "derived=true"),
        "ed25519 key": ({"VAULT_TRANSIT_KEY": openbao.create_key(type="ed25519")}, "cannot wrap data keys: "
                        "its type must be one of aes128-gcm96, aes256-gcm96, chacha20-poly1305"),
        "rsa-2048 key": ({"VAULT_TRANSIT_KEY": openbao.create_key(type="rsa-2048", derived=False)},
                         "cannot wrap data keys"),
        "http to a remote host": ({"VAULT_TRANSIT_ADDR": "http://10.20.30.40:8200"},
                                  "config_error: VAULT_TRANSIT_ADDR: plain http:// is allowed only to a "
                                  "loopback address"),
        "http to a remote name": ({"VAULT_TRANSIT_ADDR": "http://openbao.example.com"},
                                  "VAULT_TRANSIT_ADDR: plain http://"),
        "wrong token": ({"VAULT_TRANSIT_TOKEN_FILE": _token_file(tmp_path / "wrong.token", wrong)},
                        "key_unavailable: the KMS refused the request (permission denied)"),
        "wrong token in the environment": (
            {"VAULT_TRANSIT_TOKEN_FILE": "", "VAULT_TRANSIT_TOKEN": wrong},
            "key_unavailable: the KMS refused the request (permission denied)"),
        "token file readable by others": (
            {"VAULT_TRANSIT_TOKEN_FILE": _token_file(tmp_path / "loose.token", openbao.root_token, 0o644)},
            "config_error: the transit token file must not be readable by group or others"),
        "no token": ({"VAULT_TRANSIT_TOKEN_FILE": ""}, "config_error: exactly one of VAULT_TRANSIT_TOKEN and "
                     "VAULT_TRANSIT_TOKEN_FILE must be set"),
    }  # fmt: skip

    def serve(change: dict[str, str]) -> subprocess.CompletedProcess[str]:
        case_env = {k: v for k, v in (env | change).items() if v}
        return run_cli(case_env, "serve", timeout=90)

    with ThreadPoolExecutor(4) as pool:
        results = dict(zip(cases, pool.map(serve, [change for change, _ in cases.values()]), strict=True))
    for name, (_, expected) in cases.items():
        result = results[name]
        assert result.returncode == 1, (name, result.returncode, result.stderr)
        assert result.stdout == "", (name, result.stdout)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, result.stderr)
        assert expected in lines[0], (name, lines[0])
        for token in (openbao.root_token, wrong):
            assert token not in result.stderr and token[5:] not in result.stderr, name


def test_serve_starts_with_a_usable_transit_key(
    env: dict[str, str], openbao: BaoServer, raw: RawDb, tmp_path: Path
) -> None:
    migrated = run_cli(env, "db", "upgrade")
    assert migrated.returncode == 0, migrated.stderr
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vault.cli", "serve"], env=env, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        internal = f"http://127.0.0.1:{env['VAULT_INTERNAL_PORT']}"
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "serve did not become ready"
            try:
                if httpx.get(f"{internal}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        # A session ingested on the public port gets a data key wrapped by this Transit key.
        session, body = make_session(9500)
        imported = httpx.post(
            f"http://127.0.0.1:{env['VAULT_PUBLIC_PORT']}/api/import-session", json={"session": session},
            timeout=30,
        )  # fmt: skip
        assert imported.status_code == 201, imported.text
        kek_id = f"transit:transit/{env['VAULT_TRANSIT_KEY']}"
        assert raw.query("SELECT user_id, kek_id, kek_version FROM user_keys") == [
            (body["userId"], kek_id, 1)
        ]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(20)
    output = log.read_text()
    assert code == 0, output
    assert openbao.root_token not in output and openbao.root_token[5:] not in output
