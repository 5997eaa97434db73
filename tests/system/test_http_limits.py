"""Slow clients, huge headers and too many connections, against a real vault over raw sockets.

The vault runs with 1 s header and body deadlines. Bounds on when a connection is closed are functional
("within the deadline plus generous slack"), never performance thresholds.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests._live import LiveVault, live_vault
from vault.settings import Settings

DEADLINE = 1.0  # both deadlines, in the vault under test
SLACK = 3.0  # how much later than its deadline a connection may be closed (a busy machine is late)


@pytest.fixture
def backend() -> str:
    """The database does not matter here: SQLite only."""
    return "sqlite"


@pytest.fixture
def limited(settings: Settings) -> Iterator[LiveVault]:
    update = {"http_header_timeout_seconds": DEADLINE, "http_body_timeout_seconds": DEADLINE}
    with live_vault(settings.model_copy(update=update)) as vault:
        yield vault


def _url(vault: LiveVault, listener: str) -> str:
    url: str = getattr(vault, listener)
    return url


def _connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return socket.create_connection((parts.hostname, parts.port), timeout=10)


@dataclass
class Outcome:
    data: bytes  # everything the server sent
    closed: bool  # the server closed (or reset) the connection before the wait ended
    at: float  # time.monotonic() when it closed, or when the wait ended

    @property
    def status(self) -> int | None:
        if not self.data.startswith(b"HTTP/1.1 "):
            return None
        return int(self.data.split(b" ", 2)[1])

    def json(self) -> Any:
        return json.loads(self.data.partition(b"\r\n\r\n")[2])


def _wait_closed(sock: socket.socket, until: float, drip: bytes = b"", every: float = 0.3) -> Outcome:
    """Read until the server closes the connection or ``until`` passes; send ``drip`` one byte at a time,
    one every ``every`` seconds, meanwhile."""
    data = b""
    next_drip = time.monotonic()
    position = 0
    while True:
        now = time.monotonic()
        if now >= until:
            return Outcome(data, False, now)
        if position < len(drip) and now >= next_drip:
            try:
                sock.sendall(drip[position : position + 1])
            except OSError:
                pass  # closed: the read below says so
            position += 1
            next_drip = now + every
        wait = min(until, next_drip) - now if position < len(drip) else until - now
        readable, _, _ = select.select([sock], [], [], max(wait, 0.0))
        if not readable:
            continue
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return Outcome(data, True, time.monotonic())
        if not chunk:
            return Outcome(data, True, time.monotonic())
        data += chunk


def _response(sock: socket.socket, until: float) -> Outcome:
    """Read one whole response (it must have a Content-Length); ``closed`` if the server also closed."""
    data = b""
    while time.monotonic() < until:
        head, found, body = data.partition(b"\r\n\r\n")
        if found:
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.lower().split(b"\r\n")
                if line.startswith(b"content-length:")
            )
            if len(body) >= length:
                return Outcome(data, False, time.monotonic())
        readable, _, _ = select.select([sock], [], [], max(until - time.monotonic(), 0.0))
        if readable:
            chunk = sock.recv(65536)
            if not chunk:
                return Outcome(data, True, time.monotonic())
            data += chunk
    raise AssertionError(f"no whole response in time: {data[:300]!r}")


def _send_and_read(sock: socket.socket, payload: bytes, until: float) -> Outcome:
    """Send ``payload`` from a thread (the server may answer before reading all of it) and read meanwhile."""

    def send() -> None:
        try:
            sock.sendall(payload)
        except OSError:
            pass

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    outcome = _wait_closed(sock, until)
    sender.join(10)
    return outcome


def _get(path: str, *headers: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: vault", *headers, "", ""]
    return "\r\n".join(lines).encode()


def _assert_timed_out(outcome: Outcome) -> None:
    assert outcome.status == 408, outcome.data[:300]
    assert outcome.json()["error"] == "request_timeout"
    assert b"connection: close" in outcome.data.lower()


PARTIAL = [
    b"",  # connected, nothing sent
    b"G",
    b"GET /healthz HTT",
    b"GET /healthz HTTP/1.1\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: vault\r\nX-Long: " + b"a" * 1000,
    b"POST /api/import-session HTTP/1.1\r\nHost: vault\r\nContent-Length: 10\r\n",
    b"\r\n\r\n\r\n",  # blank lines before a request line are allowed: they must not hold a connection
]


@pytest.mark.slow
def test_unfinished_headers_are_closed_at_the_deadline(limited: LiveVault) -> None:
    sockets: list[tuple[socket.socket, float]] = []
    try:
        for i in range(50):
            for listener in ("public", "internal"):
                sock = _connect(_url(limited, listener))
                sock.sendall(PARTIAL[i % len(PARTIAL)])
                sockets.append((sock, time.monotonic()))
        for sock, opened in sockets:
            outcome = _wait_closed(sock, opened + DEADLINE + SLACK)
            assert outcome.closed, "a connection with unfinished headers was still open after the deadline"
            _assert_timed_out(outcome)
    finally:
        for sock, _ in sockets:
            sock.close()
    assert httpx.get(f"{limited.internal}/healthz").status_code == 200


@pytest.mark.slow
@pytest.mark.parametrize("listener", ["public", "internal"])
def test_dripping_headers_do_not_extend_the_deadline(limited: LiveVault, listener: str) -> None:
    with _connect(_url(limited, listener)) as sock:
        opened = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: vault\r\nX-Drip: ")
        # One byte every 0.3 s for up to 6 s: an idle timer would never fire.
        outcome = _wait_closed(sock, opened + 6, drip=b"a" * 20, every=0.3)
        assert outcome.closed, "a dripping connection was kept open by its bytes"
        assert outcome.at - opened < DEADLINE + SLACK
        _assert_timed_out(outcome)


@pytest.mark.slow
def test_the_header_deadline_of_a_keep_alive_request_starts_at_its_first_byte(limited: LiveVault) -> None:
    with _connect(limited.internal) as sock:
        sock.sendall(_get("/healthz"))
        first = _response(sock, time.monotonic() + 5)
        assert not first.closed and first.status == 200
        time.sleep(DEADLINE * 1.5)  # idle, within uvicorn's keep-alive (5 s): longer than the deadline
        sock.sendall(_get("/healthz"))
        second = _response(sock, time.monotonic() + 5)
        assert not second.closed and second.status == 200, second.data[:300]
        # Then a request that never finishes its headers is closed, 408, at its own deadline.
        begun = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: v")
        third = _wait_closed(sock, begun + DEADLINE + SLACK)
        assert third.closed
        _assert_timed_out(third)
    # Blank lines dripped between requests do not hold a keep-alive connection either.
    with _connect(limited.internal) as sock:
        sock.sendall(_get("/healthz"))
        assert _response(sock, time.monotonic() + 5).status == 200
        begun = time.monotonic()
        outcome = _wait_closed(sock, begun + 8, drip=b"\r\n" * 20, every=0.3)
        assert outcome.closed and outcome.at - begun < DEADLINE + SLACK
        _assert_timed_out(outcome)


BODY_HEAD = (
    "POST {path} HTTP/1.1\r\nHost: vault\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
)
BODY_PATH = {"public": "/api/import-session", "internal": "/v1/sessions"}


@pytest.mark.slow
@pytest.mark.parametrize("listener", ["public", "internal"])
@pytest.mark.parametrize("style", ["stalled", "dripping"])
def test_unfinished_bodies_are_closed_at_the_deadline(limited: LiveVault, listener: str, style: str) -> None:
    with _connect(_url(limited, listener)) as sock:
        sock.sendall(BODY_HEAD.format(path=BODY_PATH[listener]).encode() + b'{"session"')
        sent = time.monotonic()
        drip = b"x" * 30 if style == "dripping" else b""
        outcome = _wait_closed(sock, sent + 6, drip=drip, every=0.3)
        assert outcome.closed, "a connection with an unfinished body was still open"
        assert outcome.at - sent < DEADLINE + SLACK
        _assert_timed_out(outcome)


@pytest.mark.slow
def test_a_body_finished_in_time_is_answered(settings: Settings) -> None:
    body = json.dumps({"session": "not a session"}).encode()
    head = BODY_HEAD.format(path="/api/import-session").replace(
        "Content-Length: 100", f"Content-Length: {len(body)}"
    )
    # A pause well within the deadline: 10 s here, so a busy machine cannot turn "in time" into late.
    update = {"http_header_timeout_seconds": 10.0, "http_body_timeout_seconds": 10.0}
    with live_vault(settings.model_copy(update=update)) as vault, _connect(vault.public) as sock:
        sock.sendall(head.encode() + body[:5])
        time.sleep(DEADLINE)
        sock.sendall(body[5:])
        outcome = _response(sock, time.monotonic() + 10 + SLACK)
        assert outcome.status == 422, outcome.data[:300]
        assert outcome.json()["error"] != "request_timeout"


@pytest.mark.parametrize("listener", ["public", "internal"])
@pytest.mark.parametrize("size", [20_000, 1024 * 1024])
def test_oversized_headers_are_refused(limited: LiveVault, listener: str, size: int) -> None:
    with _connect(_url(limited, listener)) as sock:
        outcome = _send_and_read(sock, _get("/healthz", "X-Big: " + "a" * size), time.monotonic() + 10)
    assert outcome.status == 431, outcome.data[:300]
    assert outcome.json() == {
        "error": "headers_too_large",
        "detail": "the request line and headers exceed 16384 bytes",
    }
    assert outcome.closed and b"connection: close" in outcome.data.lower()
    # Many headers, each small, count together.
    with _connect(_url(limited, listener)) as sock:
        many = [f"X-H{i}: {'b' * 100}" for i in range(200)]
        outcome = _send_and_read(sock, _get("/healthz", *many), time.monotonic() + 10)
    assert outcome.status == 431


def test_headers_under_the_limit_are_served(limited: LiveVault) -> None:
    with _connect(limited.internal) as sock:
        # About 12 KB of headers, sent in one piece and then in small ones, on one connection.
        request = _get("/healthz", "X-Big: " + "a" * 12_000, "X-Other: " + "b" * 100)
        sock.sendall(request)
        first = _response(sock, time.monotonic() + 5)
        assert first.status == 200 and first.json() == {"status": "ok"}
        for i in range(0, len(request), 1000):
            sock.sendall(request[i : i + 1000])
        second = _response(sock, time.monotonic() + 5)
        assert second.status == 200 and not second.closed
    assert httpx.get(f"{limited.internal}/healthz", headers={"X-Normal": "yes"}).status_code == 200


@pytest.fixture
def five(settings: Settings) -> Iterator[LiveVault]:
    update = {"http_max_connections": 5, "http_header_timeout_seconds": 30.0}
    with live_vault(settings.model_copy(update=update)) as vault:
        yield vault


def _hold(url: str, count: int) -> list[socket.socket]:
    held = []
    for _ in range(count):
        sock = _connect(url)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: vault\r\n")  # mid-request: headers unfinished
        held.append(sock)
    time.sleep(0.2)  # usually enough for the server to accept them all; what needs it polls (below)
    return held


def _one_request(url: str) -> Outcome:
    with _connect(url) as sock:
        sock.sendall(_get("/healthz", "Connection: close"))
        return _wait_closed(sock, time.monotonic() + 5)


def _first_answered(url: str, status: int, within: float = 10.0) -> Outcome:
    """One request after another until one is answered ``status``: the server accepts, and notices closed,
    connections in its own time (a busy machine's), so the count it limits on may lag behind ours."""
    deadline = time.monotonic() + within
    while (outcome := _one_request(url)).status != status and time.monotonic() < deadline:
        time.sleep(0.05)
    return outcome


def test_past_the_connection_limit_requests_are_answered_503(five: LiveVault) -> None:
    held = _hold(five.internal, 5)
    try:
        outcome = _first_answered(five.internal, 503)
        # uvicorn's limit_concurrency: a plain-text 503, then the connection is closed.
        assert outcome.status == 503, outcome.data[:300]
        assert outcome.data.endswith(b"\r\n\r\nService Unavailable") and outcome.closed
        # The limit is per listener: the public one still answers (404: it has no /healthz).
        assert _one_request(five.public).status == 404
    finally:
        for sock in held:
            sock.close()
    assert _first_answered(five.internal, 200).status == 200  # once the server has seen them close


@pytest.mark.parametrize(("others", "status"), [(3, 200), (4, 503)])
def test_the_connection_limit_counts_the_requests_own_connection(
    five: LiveVault, others: int, status: int
) -> None:
    # uvicorn refuses a request when the listener has limit_concurrency connections open, its own
    # included: with a limit of 5, a request is served beside at most 3 other open connections.
    held = _hold(five.internal, others)
    try:
        assert _first_answered(five.internal, status).status == status
    finally:
        for sock in held:
            sock.close()
