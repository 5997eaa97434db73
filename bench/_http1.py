"""A lean HTTP/1.1 client for the benchmarks' load (bench/lease.py, bench/profile.py)."""

from __future__ import annotations

import asyncio
import json

__all__ = ["Http1", "error_code"]


def error_code(body: bytes) -> str:
    """The ``error`` of a vault's JSON error answer, or ``?``."""
    try:
        return str(json.loads(body).get("error"))
    except (ValueError, AttributeError):
        return "?"


class Http1:
    """One keep-alive HTTP/1.1 connection that POSTs JSON with a bearer token.

    The client shares the machine's cores with the vault and PostgreSQL, so it must cost little: httpx
    spends ~0.7 ms of CPU per request (bench/ingest.py), this ~0.05 ms. It handles exactly what uvicorn
    answers here: a status line, headers with ``content-length``, a body; it reconnects after
    ``connection: close``.
    """

    def __init__(self, host: str, port: int, token: str | None = None) -> None:
        self.host, self.port = host, port
        auth = "" if token is None else f"authorization: Bearer {token}\r\n"
        self._head = f"host: {host}:{port}\r\n{auth}content-type: application/json\r\n".encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._reader, self._writer
        writer.write(
            b"POST %s HTTP/1.1\r\n%scontent-length: %d\r\n\r\n%s"
            % (path.encode(), self._head, len(body), body)
        )
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length, close = 0, False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
                elif name == b"transfer-encoding":
                    raise RuntimeError("unexpected transfer-encoding in the vault's response")
            data = await reader.readexactly(length)
        except BaseException:
            await self.close()
            raise
        if close:
            await self.close()
        return status, data

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass
