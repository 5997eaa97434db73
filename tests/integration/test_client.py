"""The lease client (sync and asyncio) against a real vault on loopback, on PostgreSQL and SQLite.

Async tests run their coroutine with ``asyncio.run`` inside a plain test function.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests._live import LiveVault
from tests.sessiongen import make_session, refresh_serialized
from vault.client import AsyncVaultClient, ClientError, Lease, VaultClient, VaultUnreachable
from vault.errors import (
    Forbidden,
    LeaseHeld,
    LeaseLost,
    NoLease,
    NoSession,
    PurposeNotAllowed,
    SessionExpired,
    StoredSessionExpired,
    Unauthorized,
    VaultError,
)


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
        with holder.lease(user_id, purpose="sign", ttl_seconds=2) as lease:
            granted_until = lease.expires_at
            for _ in range(2):  # at ~2.5 s and ~5 s: well past the unrenewed expiry
                time.sleep(2.5)
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
            async with holder.lease(user_id, purpose="sign", ttl_seconds=2) as lease:
                granted_until = lease.expires_at
                for _ in range(2):
                    await asyncio.sleep(2.5)
                    with pytest.raises(LeaseHeld) as held:
                        await other.grant(user_id, purpose="sign")
                    assert held.value.retry_after >= 1
                assert not lease.lost
                assert lease.expires_at > granted_until
                fence = lease.fencing_token
            assert (await other.grant(user_id, purpose="sign")).fencing_token == fence + 1

    asyncio.run(main())


# --- the vault's default TTL ------------------------------------------------------------------------


def _seconds_left(lease: Lease) -> float:
    return (lease.expires_at - datetime.now(UTC)).total_seconds()


def test_sync_default_ttl_is_the_tokens_maximum_when_lower(vault: LiveVault) -> None:
    _, user_id, _ = _ingest(vault, 211)
    with VaultClient(vault.internal, vault.token("signer", max_ttl_seconds=10)) as client:
        with client.lease(user_id, purpose="sign") as lease:
            assert 9 <= _seconds_left(lease) <= 10.5
            assert lease.ttl_seconds == 10  # renewal runs every ~3.3 s, not every 10 s (30 / 3)
            renewed_from = lease.expires_at
            time.sleep(1.1)
            assert client.renew(lease) > renewed_from
            assert 9 <= _seconds_left(lease) <= 10.5  # renewed by the lease's own TTL
    with VaultClient(vault.internal, vault.token("signer")) as client:
        lease = client.grant(user_id, purpose="sign")  # no token maximum: the vault's 30 s
        assert (lease.ttl_seconds, 29 <= _seconds_left(lease) <= 30.5) == (30, True)
        client.release(lease)
        lease = client.grant(user_id, purpose="sign", ttl_seconds=7)  # asked for: used as is
        assert (lease.ttl_seconds, 6 <= _seconds_left(lease) <= 7.5) == (7, True)
        client.release(lease)


def test_async_default_ttl_is_the_tokens_maximum_when_lower(vault: LiveVault) -> None:
    _, user_id, _ = _ingest(vault, 221)
    token = vault.token("signer", max_ttl_seconds=10)

    async def main() -> None:
        async with AsyncVaultClient(vault.internal, token) as client:
            async with client.lease(user_id, purpose="sign") as lease:
                assert 9 <= _seconds_left(lease) <= 10.5
                assert lease.ttl_seconds == 10
            lease = await client.grant(user_id, purpose="sign")
            assert lease.ttl_seconds == 10
            await client.release(lease)

    asyncio.run(main())


def _granting(expires_in: float, bodies: list[dict[str, object]]) -> httpx.MockTransport:
    """A vault that grants every lease for ``expires_in`` seconds and records each request body."""

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        if request.url.path.endswith("/release"):
            return httpx.Response(200, json={"lease_id": "l", "released": True, "written_back": False})
        expires_at = datetime.now(UTC) + timedelta(seconds=expires_in)
        return httpx.Response(
            201,
            json={"lease_id": "l", "session_id": "s", "user_id": "u", "fencing_token": 1,
                  "expires_at": expires_at.isoformat(), "session": "x"},
        )  # fmt: skip

    return httpx.MockTransport(handler)


@pytest.mark.parametrize(
    ("ttl_seconds", "expires_in", "expected"),
    [
        (None, 10.0, 10),
        (None, 30.2, 30),
        (None, 0.2, 1),  # at least 1
        (None, 95.0, 30),  # a client clock behind the vault's cannot stretch the default past 30 s
        (5, 9.0, 5),  # asked for: the vault grants exactly that
    ],
)
def test_ttl_is_omitted_when_not_given_and_inferred_from_the_grant(
    ttl_seconds: int | None, expires_in: float, expected: int
) -> None:
    bodies: list[dict[str, object]] = []
    with VaultClient("http://vault", "t", transport=_granting(expires_in, bodies)) as client:
        lease = client.grant("u", purpose="sign", ttl_seconds=ttl_seconds)
    wanted: dict[str, object] = {"purpose": "sign"}
    if ttl_seconds is not None:
        wanted["ttl_seconds"] = ttl_seconds
    assert bodies == [wanted]
    assert lease.ttl_seconds == expected

    async def main() -> Lease:
        transport = _granting(expires_in, bodies)
        async with AsyncVaultClient("http://vault", "t", transport=transport) as client:
            async with client.lease("u", purpose="sign", ttl_seconds=ttl_seconds, renew=False) as lease:
                return lease

    bodies.clear()
    assert asyncio.run(main()).ttl_seconds == expected
    assert bodies[0] == wanted


# --- waiting for a held lease ------------------------------------------------------------------------


def test_sync_wait_for_a_held_lease(vault: LiveVault) -> None:
    _, user_id, _ = _ingest(vault, 141)
    with (
        VaultClient(vault.internal, vault.token("signer")) as first,
        VaultClient(vault.internal, vault.token("signer")) as second,
    ):
        held = first.grant(user_id, purpose="sign", ttl_seconds=30)
        started = time.monotonic()
        with pytest.raises(LeaseHeld) as refused:
            with second.lease(user_id, purpose="sign"):
                pass  # pragma: no cover
        assert time.monotonic() - started < 1
        assert 25 <= refused.value.retry_after <= 30
        # A short wait gives up at its deadline, not later.
        started = time.monotonic()
        with pytest.raises(LeaseHeld):
            with second.lease(user_id, purpose="sign", wait=0.4):
                pass  # pragma: no cover
        assert 0.4 <= time.monotonic() - started < 1.2
        # A long enough wait gets the lease once the first holder releases it (after ~1 s).
        with ThreadPoolExecutor(1) as pool:

            def release_later() -> bool:
                time.sleep(1)
                return first.release(held)

            released = pool.submit(release_later)
            started = time.monotonic()
            with second.lease(user_id, purpose="sign", wait=6) as lease:
                waited = time.monotonic() - started
                assert lease.fencing_token == held.fencing_token + 1
            assert released.result() is False
        assert 0.9 <= waited < 4.5


def test_async_wait_for_a_held_lease(vault: LiveVault) -> None:
    _, user_id, _ = _ingest(vault, 151)
    tokens = vault.token("signer"), vault.token("signer")

    async def main() -> None:
        async with (
            AsyncVaultClient(vault.internal, tokens[0]) as first,
            AsyncVaultClient(vault.internal, tokens[1]) as second,
        ):
            held = await first.grant(user_id, purpose="sign", ttl_seconds=30)
            with pytest.raises(LeaseHeld) as refused:
                async with second.lease(user_id, purpose="sign"):
                    pass  # pragma: no cover
            assert refused.value.retry_after >= 1
            started = time.monotonic()
            with pytest.raises(LeaseHeld):
                async with second.lease(user_id, purpose="sign", wait=0.4):
                    pass  # pragma: no cover
            assert 0.4 <= time.monotonic() - started < 1.2

            async def release_later() -> bool:
                await asyncio.sleep(1)
                return await first.release(held)

            releasing = asyncio.create_task(release_later())
            started = time.monotonic()
            async with second.lease(user_id, purpose="sign", wait=6) as lease:
                waited = time.monotonic() - started
                assert lease.fencing_token == held.fencing_token + 1
            assert await releasing is False
            assert 0.9 <= waited < 4.5

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
        lease = client.grant(user_id, purpose="sign", ttl_seconds=5)
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
                time.sleep(2.2)
                taken = second.grant(user_id, purpose="sign", ttl_seconds=30)
                assert taken.fencing_token == lease.fencing_token + 1
                lease.refreshed = _refreshed(182, s1)  # must not be written back
        second.release(taken)
        # Background renewal learns of the loss (here: released behind its back) and marks the lease.
        with pytest.raises(LeaseLost):
            with first.lease(user_id, purpose="sign", ttl_seconds=3) as lease:
                assert lease.session == s1  # the lost lease's refreshed session was not written back
                first.release(lease)
                time.sleep(1.4)
                assert lease.lost
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
                    await asyncio.sleep(2.2)
                    taken = await second.grant(user_id, purpose="sign", ttl_seconds=30)
                    assert taken.fencing_token == lease.fencing_token + 1
            await second.release(taken)
            with pytest.raises(LeaseLost):
                async with first.lease(user_id, purpose="sign", ttl_seconds=3) as lease:
                    await first.release(lease)
                    await asyncio.sleep(1.4)
                    assert lease.lost
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


# --- answers the vault would not give: mapped without a server ---------------------------------------


def _answering(status: int, body: object, headers: dict[str, str] | None = None) -> httpx.MockTransport:
    def handler(_request: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(status, text=body, headers=headers)
        return httpx.Response(status, json=body, headers=headers)

    return httpx.MockTransport(handler)


@pytest.mark.parametrize(
    ("status", "body", "expected", "code"),
    [
        (410, {"error": "session_expired", "detail": "x"}, StoredSessionExpired, "session_expired"),
        (422, {"error": "session_expired", "detail": "x"}, SessionExpired, "session_expired"),
        (418, {"error": "teapot", "detail": "short and stout"}, ClientError, "teapot"),
        (502, "<html>bad gateway</html>", ClientError, "http_error"),
        (500, {"error": "internal", "detail": "internal error"}, VaultError, "internal"),
    ],
)
def test_error_bodies_map_to_classes(
    status: int, body: object, expected: type[VaultError], code: str
) -> None:
    with VaultClient("http://vault", "t", transport=_answering(status, body)) as client:
        with pytest.raises(VaultError) as raised:
            client.grant("u", purpose="sign")
    assert type(raised.value) is expected
    assert raised.value.code == code
    if isinstance(raised.value, ClientError):
        assert raised.value.status == status


def test_retry_after_falls_back_to_the_header_and_waiting_stops_at_the_deadline() -> None:
    attempts = 0

    def handler(_request: httpx.Request) -> httpx.Response:
        nonlocal attempts
        attempts += 1
        return httpx.Response(
            409, json={"error": "lease_held", "detail": "held"}, headers={"Retry-After": "7"}
        )

    with VaultClient("http://vault", "t", transport=httpx.MockTransport(handler)) as client:
        started = time.monotonic()
        with pytest.raises(LeaseHeld) as held:
            with client.lease("u", purpose="sign", wait=0.5):
                pass  # pragma: no cover
        elapsed = time.monotonic() - started
    assert held.value.retry_after == 7
    assert 0.5 <= elapsed < 1
    assert attempts >= 3


def test_async_waiting_stops_at_the_deadline() -> None:
    async def main() -> float:
        transport = _answering(409, {"error": "lease_held", "detail": "held", "retry_after": 1})
        async with AsyncVaultClient("http://vault", "t", transport=transport) as client:
            started = time.monotonic()
            with pytest.raises(LeaseHeld):
                async with client.lease(session_id="s", purpose="sign", wait=0.3):
                    pass  # pragma: no cover
            return time.monotonic() - started

    assert 0.3 <= asyncio.run(main()) < 0.8
