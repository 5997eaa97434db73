"""The blocking client: ``with client.lease("user", purpose="sign") as lease: ...``."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from datetime import datetime
from types import TracebackType
from typing import Any, Self

import httpx

from vault.client._errors import json_body
from vault.client._lease import (
    Backoff,
    GrantRequest,
    Lease,
    check_wait,
    parse_released,
    parse_renewed,
    release_request,
    renew_request,
    renewal_interval,
    renewal_stops,
    transport_error,
)
from vault.errors import InvalidSession, LeaseHeld, LeaseLost, TooLarge

__all__ = ["LeaseScope", "VaultClient"]


class VaultClient:
    """A signer's client of the vault's internal API. The token is sent, never shown (not in any repr).

    ``transport`` and ``timeout`` go to the underlying :class:`httpx.Client`. ``clock`` (monotonic seconds)
    and ``sleep`` are what :meth:`lease` waits with while another holder has the lease (its ``wait``), and
    nothing else: background renewal keeps real time. Tests pass a fake pair whose sleep advances the clock.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._clock = clock
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}"},
            transport=transport,
            timeout=timeout,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _post(self, path: str, payload: dict[str, Any], expected: int) -> dict[str, Any]:
        try:
            response = self._http.post(path, json=payload)
        except httpx.TransportError as exc:
            raise transport_error(exc) from exc
        return json_body(response, expected)

    def grant(
        self,
        user_id: str | None = None,
        *,
        session_id: str | None = None,
        purpose: str,
        ttl_seconds: int | None = None,
    ) -> Lease:
        """Take a lease on the user's newest session (or on one session by id), once, without renewal.

        Without ``ttl_seconds`` the vault's default applies (30 s, or the token's maximum if lower).
        """
        return self._grant(GrantRequest.of(user_id, session_id, purpose, ttl_seconds))

    def _grant(self, request: GrantRequest) -> Lease:
        sent_at = time.time()
        body = self._post(request.path, request.payload, 201)
        return request.lease(body, sent_at, time.time())

    def renew(self, lease: Lease) -> datetime:
        """Extend the lease by its TTL from now; updates and returns ``lease.expires_at``."""
        try:
            body = self._post(*renew_request(lease), 200)
            lease.expires_at = parse_renewed(body, time.time())
        except LeaseLost:
            lease.lost = True
            raise
        return lease.expires_at

    def release(self, lease: Lease, session: str | None = None) -> bool:
        """End the lease, writing ``session`` back as the session's next version if given.

        Returns whether the vault wrote a session back.
        """
        try:
            body = self._post(*release_request(lease, session), 200)
        except LeaseLost:
            lease.lost = True
            raise
        return parse_released(body)

    def lease(
        self,
        user_id: str | None = None,
        *,
        session_id: str | None = None,
        purpose: str,
        ttl_seconds: int | None = None,
        wait: float = 0.0,
        renew: bool = True,
    ) -> LeaseScope:
        """A context manager holding a lease for its block: grant (waiting up to ``wait`` seconds while
        another holder has it), renew in the background, release (with ``lease.refreshed``) on exit.

        Without ``ttl_seconds`` the vault's default applies (30 s, or the token's maximum if lower)."""
        request = GrantRequest.of(user_id, session_id, purpose, ttl_seconds)
        check_wait(wait)
        return LeaseScope(self, request, wait=wait, renew=renew)

    def _grant_waiting(self, request: GrantRequest, wait: float) -> Lease:
        backoff = Backoff(self._clock() + wait)
        while True:
            try:
                return self._grant(request)
            except LeaseHeld as exc:
                delay = backoff.delay(exc.retry_after, self._clock())
                if delay is None:
                    raise
                self._sleep(delay)


class _Renewer:
    """A daemon thread renewing a lease every third of its TTL until stopped or the lease is lost."""

    def __init__(self, client: VaultClient, lease: Lease) -> None:
        self.client = client
        self.lease = lease
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vault-lease-renewal", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        interval = renewal_interval(self.lease.ttl_seconds)
        while not self._stop.wait(interval):
            try:
                self.client.renew(self.lease)
            except Exception as exc:
                if renewal_stops(self.lease, exc):
                    self.error = exc
                    return


class LeaseScope:
    """Returned by :meth:`VaultClient.lease`; ``with`` it to hold the lease. Single use."""

    def __init__(self, client: VaultClient, request: GrantRequest, *, wait: float, renew: bool) -> None:
        self._client = client
        self._request = request
        self._wait = wait
        self._renew = renew
        self._entered = False
        self._lease: Lease | None = None
        self._renewer: _Renewer | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lease={self._lease!r})"

    def __enter__(self) -> Lease:
        if self._entered:
            raise RuntimeError("a lease scope can be entered only once")
        self._entered = True
        lease = self._client._grant_waiting(self._request, self._wait)  # noqa: SLF001 - its own client
        self._lease = lease
        if self._renew:
            self._renewer = _Renewer(self._client, lease)
            self._renewer.start()
        return lease

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        lease = self._lease
        assert lease is not None
        lost_because: BaseException | None = None
        if self._renewer is not None:
            self._renewer.stop()
            lost_because = self._renewer.error
        if exc_type is not None:
            # The block failed: give the lease back without write-back; the block's exception wins.
            if not lease.lost:
                with contextlib.suppress(Exception):
                    self._client.release(lease)
            return
        if lease.lost:
            raise LeaseLost("the lease was lost while held: renewal was refused") from lost_because
        if lease.refreshed is None:
            self._client.release(lease)
            return
        try:
            self._client.release(lease, lease.refreshed)
        except (InvalidSession, TooLarge):
            # The vault kept the lease and refused the write-back: free the session, then report it.
            with contextlib.suppress(Exception):
                self._client.release(lease)
            raise
