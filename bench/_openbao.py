"""OpenBao for bench/vs_openbao.py: a durable server to compare with, and the client both sides share.

* :class:`BenchBao`: tests/_openbao.py's ``DurableBao`` (``bao server -config``, raft storage in a temp
  directory, a tcp listener on a free loopback port with ``tls_disable``, ``disable_mlock``; initialized
  with 1 key share, threshold 1, and unsealed through the HTTP API) plus a **file audit device** (to a
  file in the same directory) and **kv-v2** at ``secret/``. OpenBao 2.x refuses to enable an audit
  device through the API (``cannot enable audit device via API; use declarative, config-based audit
  device management``), so the device is declared in the server's config file (an ``audit`` stanza) and
  the root token checks that it is enabled (``GET sys/audit``). The load uses a token of a policy that
  may create, read and update ``secret/data/*`` (as a signer's token may only lease), not the root token.
* :class:`Conn`: bench/_http1.py's ``Http1`` (one keep-alive connection, the vault's bearer token) that
  also records every request's round trip in a shared list, and for OpenBao sends ``X-Vault-Token`` and
  can ``GET``. OpenBao answers a KV read of a 7.7 KB secret with ``transfer-encoding: chunked`` (Go
  chunks bodies over 2 KB that carry no length), which ``Http1`` refuses; :meth:`Conn.get` reads both.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench._http1 import Http1
from tests._openbao import DurableBao, bao_binary

__all__ = ["KV_POLICY", "BenchBao", "Conn", "bao_version", "kv_body", "write_secrets"]

KV_POLICY = 'path "secret/data/*" {\n  capabilities = ["create", "read", "update"]\n}\n'
_KV_READY_SECONDS = 30.0


def bao_version() -> str:
    """``OpenBao vX.Y.Z`` of the binary the tests use."""
    done = subprocess.run([bao_binary(), "version"], capture_output=True, text=True, check=False)
    return " ".join(done.stdout.split()[:2]) or "OpenBao (version unknown)"


def kv_body(session: str) -> bytes:
    """A KV v2 write of ``{"session": session}``: the same JSON as a vault ingest's body."""
    return json.dumps({"data": {"session": session}}).encode()


class BenchBao(DurableBao):
    """A durable OpenBao with a file audit device and kv-v2 at ``secret/``; ``token`` is the load's."""

    def __init__(self, *, home: Path) -> None:
        super().__init__(home=home)
        self.audit_log = home / "audit.log"
        self.config.write_text(
            self.config.read_text()
            + f'audit "file" "file" {{\n  options {{\n    file_path = "{self.audit_log}"\n  }}\n}}\n'
        )
        self.token = ""

    @property
    def pid(self) -> int:
        assert self._process is not None, "not running"
        return self._process.pid

    def setup(self) -> None:
        """Start, init (1 share), unseal (tests/_openbao.py; it also mounts Transit, unused here); then
        check the audit device, mount kv-v2 at ``secret/`` and make the load's token."""
        super().setup()
        devices = self.ok("GET", "sys/audit")
        if devices.get("file/", {}).get("type") != "file":
            raise RuntimeError(f"the declared file audit device is not enabled: {sorted(devices)}")
        self.ok("POST", "sys/mounts/secret", {"type": "kv", "options": {"version": "2"}})
        self.token = self.token_with_policy(KV_POLICY)
        # A new kv-v2 mount answers 400 ("upgrading ...") for a moment before it takes writes.
        deadline = time.monotonic() + _KV_READY_SECONDS
        while True:
            reply = self.api("POST", "secret/data/ready", {"data": {"ready": True}}, token=self.token)
            if reply.status_code == 200:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"kv-v2 did not take a write: {reply.status_code} {reply.text}")
            time.sleep(0.1)

    def audit_lines(self) -> int:
        """Entries in the audit log (one JSON line per request and per response)."""
        with self.audit_log.open("rb") as fh:
            return sum(1 for _ in fh)

    def peak_rss_kb(self) -> int | None:
        return peak_rss_kb(self.pid)


def peak_rss_kb(pid: int) -> int | None:
    """``VmHWM`` of process ``pid`` in kB, or None if it has ended."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


class Conn(Http1):
    """``Http1`` that appends each request's round trip (seconds) to ``sink``; with ``bao_token`` it
    authenticates to OpenBao (``X-Vault-Token``) instead of the vault (``authorization: Bearer``)."""

    def __init__(
        self, host: str, port: int, sink: list[float], token: str | None = None, *, bao_token: str = ""
    ) -> None:
        super().__init__(host, port, token)
        self.sink = sink
        if bao_token:
            auth = f"host: {host}:{port}\r\nx-vault-token: {bao_token}\r\ncontent-type: application/json\r\n"
            self._head = auth.encode()

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        started = time.perf_counter()
        answer = await super().post(path, body)
        self.sink.append(time.perf_counter() - started)
        return answer

    async def get(self, path: str) -> tuple[int, bytes]:
        started = time.perf_counter()
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._reader, self._writer
        writer.write(b"GET %s HTTP/1.1\r\n%s\r\n" % (path.encode(), self._head))
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length, chunked, close = 0, False, False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name, value = name.strip().lower(), value.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"transfer-encoding":
                    if value != b"chunked":
                        raise RuntimeError(f"unexpected transfer-encoding {value!r}")
                    chunked = True
                elif name == b"connection" and value == b"close":
                    close = True
            data = await _read_chunked(reader) if chunked else await reader.readexactly(length)
        except BaseException:
            await self.close()
            raise
        if close:
            await self.close()
        self.sink.append(time.perf_counter() - started)
        return status, data


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, then the empty line
                pass
            return b"".join(parts)
        parts.append((await reader.readexactly(size + 2))[:-2])


async def write_secrets(bao: BenchBao, names: Sequence[str], sessions: Sequence[str]) -> None:
    """``secret/data/<name>`` = ``{"session": ...}`` for each name, 8 writers; then read one back."""
    pending = iter(zip(names, sessions, strict=True))
    sink: list[float] = []

    async def writer() -> None:
        conn = Conn("127.0.0.1", bao.port, sink, bao_token=bao.token)
        try:
            for name, session in pending:
                status, answer = await conn.post(f"/v1/secret/data/{name}", kv_body(session))
                if status != 200:
                    raise RuntimeError(f"KV write {name}: HTTP {status} {answer[:200]!r}")
        finally:
            await conn.close()

    await asyncio.gather(*(writer() for _ in range(8)))
    conn = Conn("127.0.0.1", bao.port, sink, bao_token=bao.token)
    try:
        status, answer = await conn.get(f"/v1/secret/data/{names[0]}")
    finally:
        await conn.close()
    data: Any = json.loads(answer)["data"]["data"] if status == 200 else None
    if not data or data.get("session") != sessions[0]:
        raise RuntimeError(f"KV read of {names[0]}: HTTP {status}, not the secret written")
