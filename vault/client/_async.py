"""The asyncio client: ``async with client.lease("user", purpose="sign") as lease: ...``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
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

__all__ = ["AsyncLeaseScope", "AsyncVaultClient"]


class AsyncVaultClient:
    """A signer's client of the vault's internal API. The token is sent, never shown (not in any repr).

    ``transport`` and ``timeout`` go to the underlying :class:`httpx.AsyncClient`. ``clock`` (monotonic
    seconds) and ``sleep`` (awaited) are what :meth:`lease` waits with while another holder has the lease
    (its ``wait``), and nothing else: background renewal keeps real time. Tests pass a fake pair whose
    sleep advances the clock.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._clock = clock
        self._sleep = sleep
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}"},
            transport=transport,
            timeout=timeout,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _post(self, path: str, payload: dict[str, Any], expected: int) -> dict[str, Any]:
        try:
            response = await self._http.post(path, json=payload)
        except httpx.TransportError as exc:
            raise transport_error(exc) from exc
        return json_body(response, expected)

    async def grant(
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
        return await self._grant(GrantRequest.of(user_id, session_id, purpose, ttl_seconds))

    async def _grant(self, request: GrantRequest) -> Lease:
        sent_at = time.time()
        body = await self._post(request.path, request.payload, 201)
        return request.lease(body, sent_at, time.time())

    async def renew(self, lease: Lease) -> datetime:
        """Extend the lease by its TTL from now; updates and returns ``lease.expires_at``."""
        try:
            body = await self._post(*renew_request(lease), 200)
            lease.expires_at = parse_renewed(body, time.time())
        except LeaseLost:
            lease.lost = True
            raise
        return lease.expires_at

    async def release(self, lease: Lease, session: str | None = None) -> bool:
        """End the lease, writing ``session`` back as the session's next version if given.

        Returns whether the vault wrote a session back.
        """
        try:
            body = await self._post(*release_request(lease, session), 200)
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
    ) -> AsyncLeaseScope:
        """An async context manager holding a lease for its block: grant (waiting up to ``wait`` seconds while
        another holder has it), renew in the background, release (with ``lease.refreshed``) on exit.

        Without ``ttl_seconds`` the vault's default applies (30 s, or the token's maximum if lower)."""
        request = GrantRequest.of(user_id, session_id, purpose, ttl_seconds)
        check_wait(wait)
        return AsyncLeaseScope(self, request, wait=wait, renew=renew)

    async def _grant_waiting(self, request: GrantRequest, wait: float) -> Lease:
        backoff = Backoff(self._clock() + wait)
        while True:
            try:
                return await self._grant(request)
            except LeaseHeld as exc:
                delay = backoff.delay(exc.retry_after, self._clock())
                if delay is None:
                    raise
                await self._sleep(delay)


class _Renewer:
    """A task renewing a lease every third of its TTL until stopped or the lease is lost."""

    def __init__(self, client: AsyncVaultClient, lease: Lease) -> None:
        self.client = client
        self.lease = lease
        self.error: BaseException | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="vault-lease-renewal")

    async def stop(self) -> None:
        task = self._task
        if task is None:
            return
        task.cancel()
        # asyncio.wait does not raise the task's CancelledError, but does raise our own if we are cancelled.
        await asyncio.wait([task])

    async def _run(self) -> None:
        interval = renewal_interval(self.lease.ttl_seconds)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.client.renew(self.lease)
            except Exception as exc:
                if renewal_stops(self.lease, exc):
                    self.error = exc
                    return


class AsyncLeaseScope:
    """Returned by :meth:`AsyncVaultClient.lease`; ``async with`` it to hold the lease. Single use."""

    def __init__(self, client: AsyncVaultClient, request: GrantRequest, *, wait: float, renew: bool) -> None:
        self._client = client
        self._request = request
        self._wait = wait
        self._renew = renew
        self._entered = False
        self._lease: Lease | None = None
        self._renewer: _Renewer | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lease={self._lease!r})"

    async def __aenter__(self) -> Lease:
        if self._entered:
            raise RuntimeError("a lease scope can be entered only once")
        self._entered = True
        lease = await self._client._grant_waiting(self._request, self._wait)  # noqa: SLF001 - its own client
        self._lease = lease
        if self._renew:
            self._renewer = _Renewer(self._client, lease)
            self._renewer.start()
        return lease

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        lease = self._lease
        assert lease is not None
        lost_because: BaseException | None = None
        if self._renewer is not None:
            await self._renewer.stop()
            lost_because = self._renewer.error
        if exc_type is not None:
            # The block failed: give the lease back without write-back; the block's exception wins.
            if not lease.lost:
                with contextlib.suppress(Exception):
                    await self._client.release(lease)
            return
        if lease.lost:
            raise LeaseLost("the lease was lost while held: renewal was refused") from lost_because
        if lease.refreshed is None:
            await self._client.release(lease)
            return
        try:
            await self._client.release(lease, lease.refreshed)
        except (InvalidSession, TooLarge):
            # The vault kept the lease and refused the write-back: free the session, then report it.
            with contextlib.suppress(Exception):
                await self._client.release(lease)
            raise
