"""The client refuses a grant or renewal whose expiry has passed by the time the answer arrives."""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from vault.client import Lease
from vault.client._lease import GrantRequest, parse_renewed
from vault.errors import LeaseLost


def test_the_client_refuses_a_grant_or_renewal_already_past() -> None:
    """The client's own check, for whatever clock or network delay the vault cannot see."""
    past = datetime.fromtimestamp(time.time() - 1).astimezone().isoformat()
    body = {
        "lease_id": "l",
        "session_id": "s",
        "user_id": "u",
        "fencing_token": 1,
        "expires_at": past,
        "session": "x",
    }
    request = GrantRequest.of("u", None, "sign", 5)
    with pytest.raises(LeaseLost):
        request.lease(body, time.time() - 2, time.time())
    with pytest.raises(LeaseLost):
        parse_renewed({"expires_at": past}, time.time())
    future = datetime.fromtimestamp(time.time() + 5).astimezone().isoformat()
    lease: Lease = request.lease({**body, "expires_at": future}, time.time(), time.time())
    assert lease.expires_at.timestamp() > time.time()
