"""A write-back may not swap the session's wallets or drop its signers unless the grant asked for it.

Before, any refreshed session of the same user was stored: a holder could replace the wallets, or write
back an ``excludeSigners`` export and so destroy the stored key shares.
"""

from __future__ import annotations

from typing import Any

import httpx

from tests._db import RawDb
from tests._live import LiveVault
from tests.sessiongen import make_session, refresh_session


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _setup(vault: LiveVault, seed: int, **grant: Any) -> tuple[dict[str, Any], str, dict[str, Any]]:
    session, body = make_session(seed)
    sid = httpx.post(f"{vault.public}/api/import-session", json={"session": session}).json()["session_id"]
    signer = vault.token("signer")
    lease = httpx.post(
        f"{vault.internal}/v1/sessions/{sid}/lease", json={"purpose": "sign", **grant}, headers=_auth(signer)
    )
    assert lease.status_code == 201, lease.text
    return body, signer, lease.json()


def _release(vault: LiveVault, signer: str, lease: dict[str, Any], session: str) -> httpx.Response:
    return httpx.post(
        f"{vault.internal}/v1/leases/{lease['lease_id']}/release",
        json={"fencing_token": lease["fencing_token"], "session": session},
        headers=_auth(signer),
    )


def test_a_write_back_that_swaps_wallets_or_drops_signers_is_refused(vault: LiveVault, raw: RawDb) -> None:
    body, signer, lease = _setup(vault, 421)
    other_wallets, _ = make_session(422, user_id=body["userId"])
    without_signers, _ = refresh_session(body, 423, signers=False)
    for session, detail in (
        (other_wallets, "the refreshed session changes the session's wallet ids"),
        (without_signers, "the refreshed session removes a wallet's signer"),
    ):
        answer = _release(vault, signer, lease, session)
        assert answer.status_code == 422, answer.text
        assert answer.json() == {"error": "invalid_session", "detail": detail}
    assert raw.query("SELECT version FROM sessions WHERE id = %s", [lease["session_id"]]) == [(1,)]
    denied = raw.query(
        "SELECT detail FROM audit_events WHERE action = 'lease.release' AND outcome = 'denied' ORDER BY id"
    )
    assert denied == [("invalid_session",), ("invalid_session",)]
    # The lease is kept, and a same-wallet refresh is still stored.
    refreshed, _ = refresh_session(body, 424)
    answer = _release(vault, signer, lease, refreshed)
    assert answer.status_code == 200 and answer.json()["written_back"] is True, answer.text


def test_a_grant_that_allows_wallet_changes_may_write_them_back(vault: LiveVault, raw: RawDb) -> None:
    body, signer, lease = _setup(vault, 425, allow_wallet_changes=True)
    without_signers, _ = refresh_session(body, 426, signers=False)
    answer = _release(vault, signer, lease, without_signers)
    assert answer.status_code == 200 and answer.json()["written_back"] is True, answer.text
    assert raw.query("SELECT version, has_signers FROM sessions WHERE id = %s", [lease["session_id"]]) == [
        (2, False)
    ]
    grants = raw.query("SELECT detail FROM audit_events WHERE action = 'lease.grant' AND outcome = 'ok'")
    assert grants == [("wallet changes allowed",)]
