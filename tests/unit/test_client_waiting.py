"""Waiting for a held lease, on a fake clock: the clients' ``clock`` and ``sleep`` are all they wait with, so
the deadline, the number of attempts and the backoff's caps are asserted exactly, with no server and no real
sleeping. (The waiting against a real vault: ``integration/test_client.py``.)"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import httpx
import pytest

from tests._clocks import FakeMonotonic
from vault.client import AsyncVaultClient, Lease, VaultClient, _lease
from vault.errors import LeaseHeld

START = 1000.0  # the fake clock's first reading


class BusyVault:
    """A vault that refuses every grant (409 lease_held) until ``free_after`` attempts, then grants it.

    Records the fake clock's reading at every attempt.
    """

    def __init__(
        self,
        clock: FakeMonotonic,
        *,
        retry_after: int | None = None,
        header: str | None = None,
        free_after: int | None = None,
    ) -> None:
        self.clock = clock
        self.retry_after = retry_after
        self.header = header
        self.free_after = free_after
        self.attempts: list[float] = []

    def transport(self) -> httpx.MockTransport:  # for either client
        return httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/release"):
            return httpx.Response(200, json={"lease_id": "l", "released": True, "written_back": False})
        self.attempts.append(self.clock.now)
        if self.free_after is not None and len(self.attempts) > self.free_after:
            expires_at = datetime.now(UTC) + timedelta(seconds=30)
            return httpx.Response(
                201,
                json={"lease_id": "l", "session_id": "s", "user_id": "u", "fencing_token": 2,
                      "expires_at": expires_at.isoformat(), "session": "x"},
            )  # fmt: skip
        body: dict[str, object] = {"error": "lease_held", "detail": "held"}
        if self.retry_after is not None:
            body["retry_after"] = self.retry_after
        headers = {} if self.header is None else {"Retry-After": self.header}
        return httpx.Response(409, json=body, headers=headers)


def _sync_client(clock: FakeMonotonic, vault: BusyVault) -> VaultClient:
    return VaultClient("http://vault", "t", transport=vault.transport(), clock=clock.clock, sleep=clock.sleep)


def _async_client(clock: FakeMonotonic, vault: BusyVault) -> AsyncVaultClient:
    return AsyncVaultClient(
        "http://vault", "t", transport=vault.transport(), clock=clock.clock, sleep=clock.asleep
    )


@pytest.fixture
def no_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every backoff delay at the top of its jitter range: the schedule becomes exact."""
    monkeypatch.setattr(_lease, "random", SimpleNamespace(uniform=lambda _low, high: high))


Waited = tuple[FakeMonotonic, BusyVault, LeaseHeld]


def _wait_sync(wait: float, *, retry_after: int | None = None, header: str | None = None) -> Waited:
    """Wait ``wait`` fake seconds for a lease that stays held; the clock, the vault and the final refusal."""
    clock = FakeMonotonic(START)
    held = BusyVault(clock, retry_after=retry_after, header=header)
    with _sync_client(clock, held) as client, pytest.raises(LeaseHeld) as refused:
        with client.lease("u", purpose="sign", wait=wait):
            pass  # pragma: no cover
    return clock, held, refused.value


def _wait_async(wait: float, *, retry_after: int | None = None, header: str | None = None) -> Waited:
    clock = FakeMonotonic(START)
    held = BusyVault(clock, retry_after=retry_after, header=header)

    async def main() -> LeaseHeld:
        async with _async_client(clock, held) as client:
            with pytest.raises(LeaseHeld) as refused:
                async with client.lease(session_id="s", purpose="sign", wait=wait):
                    pass  # pragma: no cover
            return refused.value

    return clock, held, asyncio.run(main())


def _gave_up_at_the_deadline(clock: FakeMonotonic, vault: BusyVault, wait: float) -> None:
    """Slept exactly up to the deadline, never past it; one attempt before each sleep and one after the last."""
    assert clock.now == START + wait  # the deadline, as the client computed it
    assert vault.attempts[-1] == START + wait  # the last attempt is at the deadline, none after it
    assert all(at <= START + wait for at in vault.attempts)
    assert len(vault.attempts) == len(clock.sleeps) + 1


@pytest.mark.usefixtures("no_jitter")
def test_retry_after_falls_back_to_the_header_and_waiting_stops_at_the_deadline() -> None:
    clock, vault, held = _wait_sync(0.5, header="7")
    assert held.retry_after == 7  # the body has none: the Retry-After header's
    # Doubling from 50 ms (7 s is no cap here); the last delay is cut to the time left.
    assert clock.sleeps == pytest.approx([0.05, 0.1, 0.2, 0.15])
    assert len(vault.attempts) == 5
    _gave_up_at_the_deadline(clock, vault, 0.5)


@pytest.mark.usefixtures("no_jitter")
def test_the_delay_is_capped_at_two_seconds() -> None:
    clock, vault, held = _wait_sync(10, header="7")
    assert held.retry_after == 7
    assert clock.sleeps == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2, 2, 2, 0.85])
    assert len(vault.attempts) == 11
    _gave_up_at_the_deadline(clock, vault, 10)


@pytest.mark.usefixtures("no_jitter")
def test_async_waiting_stops_at_the_deadline_and_retry_after_caps_the_delay() -> None:
    clock, vault, held = _wait_async(3, retry_after=1)
    assert held.retry_after == 1
    # 1.6 s would be next: retry_after (1 s) caps it; the last delay is cut to the time left.
    assert clock.sleeps == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8, 1, 0.45])
    assert len(vault.attempts) == 8
    _gave_up_at_the_deadline(clock, vault, 3)


@pytest.mark.parametrize("wait_for", [_wait_sync, _wait_async])
def test_with_jitter_every_delay_is_within_its_ceiling_and_the_deadline_holds(
    wait_for: Callable[..., Waited],
) -> None:
    for _ in range(50):
        clock, vault, held = wait_for(2.5, retry_after=1)
        assert held.retry_after == 1
        for n, delay in enumerate(clock.sleeps):
            assert 0 <= delay <= min(0.05 * 2**n, 1, 2)
        _gave_up_at_the_deadline(clock, vault, 2.5)


@pytest.mark.parametrize("wait_for", [_wait_sync, _wait_async])
def test_no_wait_is_one_attempt_and_no_sleep(wait_for: Callable[..., Waited]) -> None:
    clock, vault, held = wait_for(0, retry_after=9)
    assert (held.retry_after, clock.sleeps, vault.attempts) == (9, [], [START])


@pytest.mark.usefixtures("no_jitter")
def test_a_lease_freed_while_waiting_is_taken_at_the_next_attempt() -> None:
    clock = FakeMonotonic(START)
    vault = BusyVault(clock, retry_after=30, free_after=3)
    with (
        _sync_client(clock, vault) as client,
        client.lease("u", purpose="sign", wait=60, renew=False) as lease,
    ):
        assert lease.fencing_token == 2
    assert clock.sleeps == pytest.approx([0.05, 0.1, 0.2])
    assert len(vault.attempts) == 4

    async def main() -> Lease:
        async with (
            _async_client(clock, vault) as client,
            client.lease("u", purpose="sign", wait=60, renew=False) as lease,
        ):
            return lease

    clock.sleeps.clear()
    vault.attempts.clear()
    assert asyncio.run(main()).fencing_token == 2
    assert clock.sleeps == pytest.approx([0.05, 0.1, 0.2])
    assert len(vault.attempts) == 4
