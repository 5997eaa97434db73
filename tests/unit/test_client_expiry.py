"""The client refuses a grant or renewal whose expiry has passed by the time the answer arrives."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from vault.client import Lease
from vault.client._lease import GrantRequest, parse_renewed
from vault.errors import LeaseLost

ARRIVED = 1_800_000_000.0  # when the answer arrived (``time.time()`` seconds): fixed, so nothing is timed


def _at(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def test_the_client_refuses_a_grant_or_renewal_already_past() -> None:
    """The client's own check, for whatever clock or network delay the vault cannot see."""
    body = {
        "lease_id": "l",
        "session_id": "s",
        "user_id": "u",
        "fencing_token": 1,
        "expires_at": _at(ARRIVED - 1),
        "session": "x",
    }
    request = GrantRequest.of("u", None, "sign", 5)
    with pytest.raises(LeaseLost):
        request.lease(body, ARRIVED - 2, ARRIVED)
    for expires in (ARRIVED - 1, ARRIVED):  # an expiry at the very moment of arrival has passed too
        with pytest.raises(LeaseLost):
            parse_renewed({"expires_at": _at(expires)}, ARRIVED)
    lease: Lease = request.lease({**body, "expires_at": _at(ARRIVED + 0.001)}, ARRIVED - 2, ARRIVED)
    assert lease.expires_at.timestamp() == ARRIVED + 0.001
    assert parse_renewed({"expires_at": _at(ARRIVED + 5)}, ARRIVED).timestamp() == ARRIVED + 5
