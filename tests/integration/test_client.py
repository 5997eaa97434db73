"""The lease client (sync and asyncio) against a real vault on loopback, on PostgreSQL and SQLite.

Async tests run their coroutine with ``asyncio.run`` inside a plain test function. Waiting for a held lease
runs on a fake clock (the client's ``clock`` and ``sleep``); lease expiry and background renewal are real
time on the database's clock, so those tests sleep, with margins that a loaded machine cannot eat. (The
client on a mock transport: ``unit/test_client_answers.py``, ``unit/test_client_waiting.py``.)
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from datetime import datetime

import httpx
import pytest

from tests._clocks import FakeMonotonic
from tests._live import LiveVault
from tests.sessiongen import make_session, refresh_serialized
from vault.client import AsyncVaultClient, Lease, VaultClient, VaultUnreachable
from vault.errors import (
    Forbidden,
    LeaseHeld,
    LeaseLost,
    NoLease,
    NoSession,
    PurposeNotAllowed,
    Unauthorized,
)

# Lease times are the database's clock; this process's clock brackets them. The same host's clock, so this
# is rounding only (SQLite: milliseconds), and room for a remote PostgreSQL's small skew.
SKEW = 0.5
POLL = 15.0  # seconds to wait for background renewal (real time, every third of the TTL) to act


def _ingest(vault: LiveVault, seed: int) -> tuple[str, str, str]:
    """Ingest a new session; return ``(serialized, user_id, session_id)``."""
    session, _ = make_session(seed)
    response = httpx.post(f"{vault.public}/api/import-session", json={"session": session})
    assert response.status_code == 201, response.text
    out = response.json()
    return session, out["user_id"], out["session_id"]


def _refreshed(seed: int, original: str) -> str:
    return refresh_serialized(original, seed)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _expires_in(lease: Lease, ttl: float, sent: float) -> None:
    """Granted or renewed (on the database's clock) after ``sent`` and before now: it expires ``ttl`` later."""
    assert sent + ttl - SKEW <= lease.expires_at.timestamp() <= time.time() + ttl + SKEW


def _eventually(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + POLL
    while not condition():
        assert time.monotonic() < deadline, f"not within {POLL} s"
        time.sleep(0.05)


async def _eventually_async(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + POLL
    while not condition():
        assert time.monotonic() < deadline, f"not within {POLL} s"
        await asyncio.sleep(0.05)


# --- round trip, release on exit, write-back ---------------------------------------------------------


def test_sync_round_trip_release_and_write_back(vault: LiveVault) -> None:
    s1, user_id, session_id = _ingest(vault, 101)
    s2 = _refreshed(102, s1)
    with VaultClient(vault.internal, vault.token("signer")) as client:
        with client.lease(user_id, purpose="sign") as lease:
            assert lease.session == s1
            assert (lease.user_id, lease.session_id) == (user_id, session_id)
            assert lease.expires_at.tzinfo is not None
            first = lease.fencing_token
        # Released on exit: the next lease (by session id) is granted at once, with the next fencing token.
        with client.lease(session_id=session_id, purpose="sign") as lease:
            assert (lease.session, lease.fencing_token) == (s1, first + 1)
            lease.refreshed = s2
        with client.lease(user_id, purpose="sign") as lease:
            assert (lease.session, lease.session_id, lease.fencing_token) == (s2, session_id, first + 2)
            lease.set_refreshed(s3 := _refreshed(103, s1))
            with pytest.raises(LeaseHeld):  # held, even for the same credential
                client.grant(user_id, purpose="sign")
        # A block that raises still releases, but writes nothing back.
        with pytest.raises(ValueError, match="boom"):
            with client.lease(user_id, purpose="sign") as lease:
                lease.refreshed = s1
                raise ValueError("boom")
        # Plain methods: grant, renew, release.
        lease = client.grant(user_id, purpose="sign", ttl_seconds=10)
        assert lease.session == s3  # written back above; s1, set in the block that raised, was not
        before = lease.expires_at
        assert isinstance(client.renew(lease), datetime)
        assert lease.expires_at >= before
        assert client.release(lease) is False
        with pytest.raises(LeaseLost):
            client.renew(lease)
        assert lease.lost


def test_async_round_trip_release_and_write_back(vault: LiveVault) -> None:
    s1, user_id, session_id = _ingest(vault, 111)
    s2 = _refreshed(112, s1)
    token = vault.token("signer")

    async def main() -> None:
        async with AsyncVaultClient(vault.internal, token) as client:
            async with client.lease(user_id, purpose="sign") as lease:
                assert lease.session == s1
                assert (lease.user_id, lease.session_id) == (user_id, session_id)
                first = lease.fencing_token
            async with client.lease(session_id=session_id, purpose="sign") as lease:
                assert (lease.session, lease.fencing_token) == (s1, first + 1)
                lease.refreshed = s2
            async with client.lease(user_id, purpose="sign") as lease:
                assert (lease.session, lease.fencing_token) == (s2, first + 2)
            with pytest.raises(ValueError, match="boom"):
                async with client.lease(user_id, purpose="sign") as lease:
                    lease.set_refreshed(s1)
                    raise ValueError("boom")
            lease = await client.grant(user_id, purpose="sign", ttl_seconds=10)
            assert lease.session == s2
            before = lease.expires_at
            assert await client.renew(lease) >= before
            assert await client.release(lease, _refreshed(113, s1)) is True
            with pytest.raises(LeaseLost):
                await client.release(lease)

    asyncio.run(main())


# --- background renewal ------------------------------------------------------------------------------


def test_sync_background_renewal_keeps_a_short_lease(vault: LiveVault) -> None:
    _, user_id, _ = _ingest(vault, 121)
    with (
        VaultClient(vault.internal, vault.token("signer")) as holder,
        VaultClient(vault.internal, vault.token("signer")) as other,
    ):
        # Renewed every second, a 3 s lease has 2 s to spare for a renewal that a busy machine delays.
        with holder.lease(user_id, purpose="sign", ttl_seconds=3) as lease:
            granted_until = lease.expires_at
            for _ in range(2):  # at ~3.3 s and ~6.6 s: past the unrenewed expiry, twice
                time.sleep(3.3)  # waits on the database's clock on purpose: only renewal keeps the lease
                with pytest.raises(LeaseHeld) as held:
                    other.grant(user_id, purpose="sign")
                assert held.value.retry_after >= 1
            assert not lease.lost
            assert lease.expires_at > granted_until
            fence = lease.fencing_token
        # Released on exit, not merely left to expire.
        assert other.grant(user_id, purpose="sign").fencing_token == fence + 1


def test_async_background_renewal_keeps_a_short_lease(vault: LiveVault) -> None:
    _, user_id, _ = _ingest(vault, 131)
    tokens = vault.token("signer"), vault.token("signer")

    async def main() -> None:
        async with (
            AsyncVaultClient(vault.internal, tokens[0]) as holder,
            AsyncVaultClient(vault.internal, tokens[1]) as other,
        ):
            async with holder.lease(user_id, purpose="sign", ttl_seconds=3) as lease:
                granted_until = lease.expires_at
                for _ in range(2):
                    await asyncio.sleep(3.3)  # waits on the database's clock on purpose: see the sync test
                    with pytest.raises(LeaseHeld) as held:
                        await other.grant(user_id, purpose="sign")
                    assert held.value.retry_after >= 1
                assert not lease.lost
                assert lease.expires_at > granted_until
                fence = lease.fencing_token
            assert (await other.grant(user_id, purpose="sign")).fencing_token == fence + 1

    asyncio.run(main())


# --- the vault's default TTL ------------------------------------------------------------------------


def test_sync_default_ttl_is_the_tokens_maximum_when_lower(vault: LiveVault) -> None:
    _, user_id, _ = _ingest(vault, 211)
    with VaultClient(vault.internal, vault.token("signer", max_ttl_seconds=10)) as client:
        sent = time.time()
        with client.lease(user_id, purpose="sign") as lease:
            _expires_in(lease, 10, sent)
            assert lease.ttl_seconds == 10  # renewal runs every ~3.3 s, not every 10 s (30 / 3)
            renewed_from = lease.expires_at
            time.sleep(1.1)  # waits on the database's clock on purpose: a later renewal expires later
            sent = time.time()
            assert client.renew(lease) > renewed_from
            _expires_in(lease, 10, sent)  # renewed by the lease's own TTL
    with VaultClient(vault.internal, vault.token("signer")) as client:
        sent = time.time()
        lease = client.grant(user_id, purpose="sign")  # no token maximum: the vault's 30 s
        assert lease.ttl_seconds == 30
        _expires_in(lease, 30, sent)
        client.release(lease)
        sent = time.time()
        lease = client.grant(user_id, purpose="sign", ttl_seconds=7)  # asked for: used as is
        assert lease.ttl_seconds == 7
        _expires_in(lease, 7, sent)
        client.release(lease)


def test_async_default_ttl_is_the_tokens_maximum_when_lower(vault: LiveVault) -> None:
    _, user_id, _ = _ingest(vault, 221)
    token = vault.token("signer", max_ttl_seconds=10)

    async def main() -> None:
        async with AsyncVaultClient(vault.internal, token) as client:
            sent = time.time()
            async with client.lease(user_id, purpose="sign") as lease:
                _expires_in(lease, 10, sent)
                assert lease.ttl_seconds == 10
            lease = await client.grant(user_id, purpose="sign")
            assert lease.ttl_seconds == 10
            await client.release(lease)

    asyncio.run(main())


# --- waiting for a held lease ------------------------------------------------------------------------


def test_sync_wait_for_a_held_lease(vault: LiveVault) -> None:
    _, user_id, _ = _ingest(vault, 141)
    tokens = vault.token("signer"), vault.token("signer")
    waiting = FakeMonotonic()
    with (
        VaultClient(vault.internal, tokens[0]) as first,
        VaultClient(vault.internal, tokens[1], clock=waiting.clock, sleep=waiting.sleep) as second,
    ):
        sent = time.monotonic()
        held = first.grant(user_id, purpose="sign", ttl_seconds=30)
        with pytest.raises(LeaseHeld) as refused:
            with second.lease(user_id, purpose="sign"):
                pass  # pragma: no cover
        assert waiting.sleeps == []  # no wait: refused at the first attempt
        # The held lease's time left on the database's clock, in whole seconds, rounded up.
        assert 30 - (time.monotonic() - sent) - 1 <= refused.value.retry_after <= 30
        # A short wait gives up at its deadline, not later: on the client's (fake) clock, exactly.
        with pytest.raises(LeaseHeld):
            with second.lease(user_id, purpose="sign", wait=0.4):
                pass  # pragma: no cover
        assert waiting.now == waiting.start + 0.4  # the deadline, as the client computed it
        assert len(waiting.sleeps) >= 4  # the first three delays are at most 0.05, 0.1 and 0.2 s

        # A long enough wait gets the lease at the first attempt after the holder releases it.
        patient = FakeMonotonic()

        def sleep_then_release(seconds: float) -> None:
            patient.sleep(seconds)
            if len(patient.sleeps) == 3:
                assert first.release(held) is False

        with VaultClient(vault.internal, tokens[1], clock=patient.clock, sleep=sleep_then_release) as third:
            with third.lease(user_id, purpose="sign", wait=6) as lease:
                assert lease.fencing_token == held.fencing_token + 1
        assert len(patient.sleeps) == 3  # each at most its ceiling: 0.05, 0.1, 0.2 s


def test_async_wait_for_a_held_lease(vault: LiveVault) -> None:
    _, user_id, _ = _ingest(vault, 151)
    tokens = vault.token("signer"), vault.token("signer")
    waiting, patient = FakeMonotonic(), FakeMonotonic()

    async def main() -> None:
        async with AsyncVaultClient(vault.internal, tokens[0]) as first:
            held = await first.grant(user_id, purpose="sign", ttl_seconds=30)

            async def sleep_then_release(seconds: float) -> None:
                await patient.asleep(seconds)
                if len(patient.sleeps) == 3:
                    assert await first.release(held) is False

            async with AsyncVaultClient(
                vault.internal, tokens[1], clock=waiting.clock, sleep=waiting.asleep
            ) as second:
                with pytest.raises(LeaseHeld) as refused:
                    async with second.lease(user_id, purpose="sign"):
                        pass  # pragma: no cover
                assert refused.value.retry_after >= 1 and waiting.sleeps == []
                with pytest.raises(LeaseHeld):
                    async with second.lease(user_id, purpose="sign", wait=0.4):
                        pass  # pragma: no cover
                assert waiting.now == waiting.start + 0.4 and len(waiting.sleeps) >= 4
            async with AsyncVaultClient(
                vault.internal, tokens[1], clock=patient.clock, sleep=sleep_then_release
            ) as third:
                async with third.lease(user_id, purpose="sign", wait=6) as lease:
                    assert lease.fencing_token == held.fencing_token + 1
            assert len(patient.sleeps) == 3  # each at most its ceiling: 0.05, 0.1, 0.2 s

    asyncio.run(main())


# --- typed errors ------------------------------------------------------------------------------------


def test_sync_typed_errors(vault: LiveVault) -> None:
    _, user_id, _ = _ingest(vault, 161)
    with VaultClient(vault.internal, vault.token("signer", purposes=["sign"])) as client:
        with pytest.raises(NoSession):
            client.grant("no-such-user", purpose="sign")
        with pytest.raises(NoSession):
            client.grant(session_id="00000000-0000-4000-8000-000000000000", purpose="sign")
        with pytest.raises(PurposeNotAllowed):
            with client.lease(user_id, purpose="other"):
                pass  # pragma: no cover
        lease = client.grant(user_id, purpose="sign", ttl_seconds=30)
        ghost = Lease(
            "00000000-0000-4000-8000-00000000dead",
            lease.session_id,
            user_id,
            1,
            lease.expires_at,
            5,
            session="",
        )
        with pytest.raises(NoLease):
            client.renew(ghost)
        client.release(lease)
    with VaultClient(vault.internal, "not-a-token") as client:
        with pytest.raises(Unauthorized) as unauthorized:
            client.grant(user_id, purpose="sign")
        assert unauthorized.value.code == "unauthorized"
    with VaultClient(vault.internal, vault.token("ingest")) as client:
        with pytest.raises(Forbidden) as forbidden:
            client.grant(user_id, purpose="sign")
        assert type(forbidden.value) is Forbidden
    with VaultClient(f"http://127.0.0.1:{_closed_port()}", "t", timeout=2) as client:
        with pytest.raises(VaultUnreachable):
            client.grant(user_id, purpose="sign")
    with VaultClient(vault.internal, "t") as client, pytest.raises(ValueError):
        client.lease("u", session_id="s", purpose="sign")


def test_async_typed_errors(vault: LiveVault) -> None:
    _, user_id, _ = _ingest(vault, 171)
    token = vault.token("signer", purposes=["sign"])

    async def main() -> None:
        async with AsyncVaultClient(vault.internal, token) as client:
            with pytest.raises(NoSession):
                async with client.lease("no-such-user", purpose="sign"):
                    pass  # pragma: no cover
            with pytest.raises(PurposeNotAllowed):
                await client.grant(user_id, purpose="other")
        async with AsyncVaultClient(vault.internal, "not-a-token") as client:
            with pytest.raises(Unauthorized):
                await client.grant(user_id, purpose="sign")
        async with AsyncVaultClient(f"http://127.0.0.1:{_closed_port()}", "t", timeout=2) as client:
            with pytest.raises(VaultUnreachable):
                await client.grant(user_id, purpose="sign")

    asyncio.run(main())


# --- lost leases -------------------------------------------------------------------------------------


def test_sync_lost_lease(vault: LiveVault) -> None:
    s1, user_id, _ = _ingest(vault, 181)
    with (
        VaultClient(vault.internal, vault.token("signer")) as first,
        VaultClient(vault.internal, vault.token("signer")) as second,
    ):
        # Expired without renewal and taken over: leaving the block raises LeaseLost.
        with pytest.raises(LeaseLost):
            with first.lease(user_id, purpose="sign", ttl_seconds=1, renew=False) as lease:
                time.sleep(2.2)  # waits on the database's clock on purpose: the 1 s lease has expired
                taken = second.grant(user_id, purpose="sign", ttl_seconds=30)
                assert taken.fencing_token == lease.fencing_token + 1
                lease.refreshed = _refreshed(182, s1)  # must not be written back
        second.release(taken)
        # Background renewal learns of the loss (here: released behind its back) and marks the lease.
        with pytest.raises(LeaseLost):
            with first.lease(user_id, purpose="sign", ttl_seconds=3) as lease:
                assert lease.session == s1  # the lost lease's refreshed session was not written back
                first.release(lease)
                _eventually(lambda: lease.lost)  # the next renewal, ~1 s on, is refused
        # A block that raises keeps its own exception, even when the release then fails.
        with pytest.raises(KeyError):
            with first.lease(user_id, purpose="sign", renew=False) as lease:
                first.release(lease)
                raise KeyError("mine")


def test_async_lost_lease(vault: LiveVault) -> None:
    _, user_id, _ = _ingest(vault, 191)
    tokens = vault.token("signer"), vault.token("signer")

    async def main() -> None:
        async with (
            AsyncVaultClient(vault.internal, tokens[0]) as first,
            AsyncVaultClient(vault.internal, tokens[1]) as second,
        ):
            with pytest.raises(LeaseLost):
                async with first.lease(user_id, purpose="sign", ttl_seconds=1, renew=False) as lease:
                    await asyncio.sleep(2.2)  # waits on the database's clock on purpose: the lease expired
                    taken = await second.grant(user_id, purpose="sign", ttl_seconds=30)
                    assert taken.fencing_token == lease.fencing_token + 1
            await second.release(taken)
            with pytest.raises(LeaseLost):
                async with first.lease(user_id, purpose="sign", ttl_seconds=3) as lease:
                    await first.release(lease)
                    await _eventually_async(lambda: lease.lost)  # the next renewal, ~1 s on, is refused
            with pytest.raises(KeyError):
                async with first.lease(user_id, purpose="sign", renew=False) as lease:
                    await first.release(lease)
                    raise KeyError("mine")

    asyncio.run(main())


# --- secrets stay out of reprs -----------------------------------------------------------------------


def test_reprs_show_neither_token_nor_session(vault: LiveVault) -> None:
    session, user_id, _ = _ingest(vault, 201)
    token = vault.token("signer")
    refreshed = _refreshed(202, session)
    with VaultClient(vault.internal, token) as client:
        scope = client.lease(user_id, purpose="sign")
        with scope as lease:
            lease.refreshed = refreshed
            shown = [repr(client), str(client), repr(lease), str(lease), repr(scope), repr(client._http)]
            assert vault.internal in repr(client)
            assert lease.lease_id in repr(lease)
    for text in shown:
        for secret in (token, session, refreshed):
            assert secret not in text

    async def main() -> str:
        async with AsyncVaultClient(vault.internal, token) as client:
            return repr(client)

    assert token not in asyncio.run(main())
