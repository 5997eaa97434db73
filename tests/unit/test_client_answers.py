"""The client on answers from a mock transport: the TTL it sends and infers, and answers the vault would not
give, mapped to error classes. No server. (The client against a real vault: ``integration/test_client.py``.)"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from vault.client import AsyncVaultClient, ClientError, Lease, VaultClient
from vault.client._lease import GrantRequest
from vault.errors import SessionExpired, StoredSessionExpired, VaultError

SENT_AT = 1_800_000_000.0  # when a grant was sent, for the inference below (``time.time()`` seconds)


def _grant_body(expires_at: datetime) -> dict[str, object]:
    return {"lease_id": "l", "session_id": "s", "user_id": "u", "fencing_token": 1,
            "expires_at": expires_at.isoformat(), "session": "x"}  # fmt: skip


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
def test_the_ttl_is_the_one_asked_for_or_inferred_from_the_grant(
    ttl_seconds: int | None, expires_in: float, expected: int
) -> None:
    expires_at = datetime.fromtimestamp(SENT_AT + expires_in, UTC)
    request = GrantRequest.of("u", None, "sign", ttl_seconds)
    lease = request.lease(_grant_body(expires_at), SENT_AT, SENT_AT + 0.01)
    assert (lease.ttl_seconds, lease.expires_at) == (expected, expires_at)


def _granting(expires_in: float, bodies: list[dict[str, object]]) -> httpx.MockTransport:
    """A vault that grants every lease for ``expires_in`` seconds and records each request body."""

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        if request.url.path.endswith("/release"):
            return httpx.Response(200, json={"lease_id": "l", "released": True, "written_back": False})
        return httpx.Response(201, json=_grant_body(datetime.now(UTC) + timedelta(seconds=expires_in)))

    return httpx.MockTransport(handler)


@pytest.mark.parametrize(("ttl_seconds", "expected"), [(None, 30), (5, 5)])
def test_the_ttl_is_sent_only_when_asked_for(ttl_seconds: int | None, expected: int) -> None:
    # Granted for 95 s: inferred, that is capped at 30 s however long the answer took.
    bodies: list[dict[str, object]] = []
    with VaultClient("http://vault", "t", transport=_granting(95.0, bodies)) as client:
        lease = client.grant("u", purpose="sign", ttl_seconds=ttl_seconds)
    wanted: dict[str, object] = {"purpose": "sign"}
    if ttl_seconds is not None:
        wanted["ttl_seconds"] = ttl_seconds
    assert bodies == [wanted]
    assert lease.ttl_seconds == expected

    async def main() -> Lease:
        transport = _granting(95.0, bodies)
        async with AsyncVaultClient("http://vault", "t", transport=transport) as client:
            async with client.lease("u", purpose="sign", ttl_seconds=ttl_seconds, renew=False) as lease:
                return lease

    bodies.clear()
    assert asyncio.run(main()).ttl_seconds == expected
    assert bodies[0] == wanted


def _answering(status: int, body: object) -> httpx.MockTransport:
    def handler(_request: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(status, text=body)
        return httpx.Response(status, json=body)

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
