"""HTTP/1.1 limits that uvicorn does not enforce.

:class:`LimitedHttpToolsProtocol` is uvicorn's httptools protocol with three limits added, per connection:

- a **header deadline**: a request's line and headers must be complete within ``header_timeout`` seconds,
  counted from the connection's start (first request) or from the first byte of the request (keep-alive).
  It is a total deadline: further bytes never extend it, so dripping one byte at a time does not help;
- a **body deadline**: the body must be complete within ``body_timeout`` seconds after the headers;
- a **header size limit**: more than ``max_header_bytes`` bytes of request line and headers is answered
  ``431 headers_too_large``, before the rest is read or buffered. (A pipelined request whose start
  arrives in the same read as the end of the previous one is counted from the next read on, so it may
  pass the limit by up to one read.)

A missed deadline is answered ``408 request_timeout`` when nothing has been sent on the connection for
another request, and the connection is closed. Refusals shut the sending side first and read (and drop)
what the client still sends for ``linger_seconds`` before closing, so that the client reads the answer
instead of a reset.

Idle keep-alive connections stay uvicorn's (``timeout_keep_alive``), and so does the concurrency limit
(``limit_concurrency``: a request is answered 503 when the listener has that many connections open).
"""

from __future__ import annotations

import asyncio
import enum
import http
import json
from collections.abc import Callable
from typing import Any, ClassVar

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from vault.settings import Settings

__all__ = ["LimitedHttpToolsProtocol", "limited_protocol"]


class _Phase(enum.Enum):
    HEADERS = "headers"  # a request has begun (or the connection is new); its headers are incomplete
    BODY = "body"  # the headers are complete, the body is not
    IDLE = "idle"  # the last request was read whole; the next has not begun
    CLOSED = "closed"  # refused or lost: everything further is dropped


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header deadline, a body deadline and a header size limit.

    Configure it with :func:`limited_protocol`, which makes a subclass holding the limits; uvicorn builds
    one instance per connection.
    """

    header_timeout: ClassVar[float] = 10.0
    body_timeout: ClassVar[float] = 30.0
    max_header_bytes: ClassVar[int] = 16 * 1024
    linger_seconds: ClassVar[float] = 2.0

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config=config, server_state=server_state, app_state=app_state, _loop=_loop)
        self._limit_phase = _Phase.IDLE
        self._limit_timer: asyncio.TimerHandle | None = None
        self._limit_linger: asyncio.TimerHandle | None = None
        self._limit_header_bytes = 0  # bytes of the current request's line and headers read so far
        self._limit_requests = 0  # requests begun on this connection
        self._limit_body_waits = False  # pipelined: the body clock starts when the request's turn comes

    # --- uvicorn's callbacks ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._begin_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self._limit_phase = _Phase.CLOSED
        self._cancel_timer()
        if self._limit_linger is not None:
            self._limit_linger.cancel()
            self._limit_linger = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._limit_phase is _Phase.CLOSED:
            return
        if self._limit_phase is _Phase.IDLE:
            self._begin_request()  # any byte, even the blank lines allowed before a request line
        if self._limit_phase is not _Phase.HEADERS:
            super().data_received(data)
            return
        room = self.max_header_bytes - self._limit_header_bytes
        if len(data) <= room:
            self._limit_header_bytes += len(data)
            super().data_received(data)
            return
        # Feed no more than the limit; if the same request's headers are still incomplete, refuse them.
        request = self._limit_requests
        if room > 0:
            self._limit_header_bytes += room
            super().data_received(data[:room])
        if self._done():
            return
        if self._reading_headers_of(request):
            detail = f"the request line and headers exceed {self.max_header_bytes} bytes"
            self._refuse(431, "headers_too_large", detail, answer=self._between_responses())
            return
        self.data_received(data[max(room, 0) :])

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._limit_phase is not _Phase.HEADERS:
            self._begin_request()  # a pipelined request, begun inside data already read

    def on_headers_complete(self) -> None:
        self._cancel_timer()
        self._limit_phase = _Phase.BODY
        previous = self.cycle
        super().on_headers_complete()
        if previous is not None and previous is not self.cycle and not previous.response_complete:
            self._limit_body_waits = True  # queued behind a response; uvicorn stops reading meanwhile
        else:
            self._arm(self.body_timeout, self._body_deadline)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._cancel_timer()
        self._limit_body_waits = False
        if self._limit_phase is not _Phase.CLOSED:
            self._limit_phase = _Phase.IDLE

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._limit_body_waits and self._limit_phase is _Phase.BODY and not self.transport.is_closing():
            self._limit_body_waits = False
            self._arm(self.body_timeout, self._body_deadline)

    # --- the limits -------------------------------------------------------------------------------------

    def _done(self) -> bool:
        return self._limit_phase is _Phase.CLOSED or self.transport.is_closing()

    def _reading_headers_of(self, request: int) -> bool:
        return self._limit_phase is _Phase.HEADERS and self._limit_requests == request

    def _begin_request(self) -> None:
        self._cancel_timer()
        self._limit_phase = _Phase.HEADERS
        self._limit_header_bytes = 0
        self._limit_requests += 1
        self._arm(self.header_timeout, self._header_deadline)

    def _arm(self, seconds: float, callback: Callable[[], None]) -> None:
        self._cancel_timer()
        self._limit_timer = self.loop.call_later(seconds, callback)

    def _cancel_timer(self) -> None:
        if self._limit_timer is not None:
            self._limit_timer.cancel()
            self._limit_timer = None

    def _between_responses(self) -> bool:
        """Nothing is being answered: an answer now cannot be read as the previous request's."""
        return self.cycle is None or self.cycle.response_complete

    def _header_deadline(self) -> None:
        self._limit_timer = None
        detail = f"the request headers did not arrive within {self.header_timeout:g} s"
        self._refuse(408, "request_timeout", detail, answer=self._between_responses())

    def _body_deadline(self) -> None:
        self._limit_timer = None
        cycle = self.cycle
        answer = cycle is not None and not cycle.response_started
        if cycle is not None and not cycle.response_complete:
            # What uvicorn does when a connection is lost: the app reads a disconnect, sends nothing more.
            cycle.disconnected = True
            cycle.message_event.set()
        detail = f"the request body did not arrive within {self.body_timeout:g} s"
        self._refuse(408, "request_timeout", detail, answer=answer)

    def _refuse(self, status: int, code: str, detail: str, *, answer: bool) -> None:
        self._cancel_timer()
        self._limit_phase = _Phase.CLOSED
        transport = self.transport
        if transport.is_closing():
            return
        client = self.client[0] if self.client else "-"
        self.logger.warning("refused a request from %s: %d %s", client, status, code)
        if not answer:
            transport.close()
            return
        body = json.dumps({"error": code, "detail": detail}).encode()
        head = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n".encode()]
        for name, value in self.server_state.default_headers:
            head.append(name + b": " + value + b"\r\n")
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body))
        head.append(b"connection: close\r\n\r\n")
        transport.write(b"".join(head) + body)
        if not transport.can_write_eof():
            transport.close()
            return
        # Half-close, then drop what the client still sends for a moment: closing a socket with unread
        # input resets the connection, and the client may lose the answer.
        transport.write_eof()
        self.flow.resume_reading()
        self._limit_linger = self.loop.call_later(self.linger_seconds, transport.close)


def limited_protocol(settings: Settings) -> type[LimitedHttpToolsProtocol]:
    """The protocol class for one listener, with the limits from ``settings`` (``http_*``)."""

    class Limited(LimitedHttpToolsProtocol):
        pass

    Limited.header_timeout = settings.http_header_timeout_seconds
    Limited.body_timeout = settings.http_body_timeout_seconds
    Limited.max_header_bytes = settings.http_max_header_bytes
    Limited.__name__ = Limited.__qualname__ = "LimitedHttpToolsProtocol"
    return Limited
