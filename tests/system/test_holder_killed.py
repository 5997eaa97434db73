"""A holder that stops renewing (its process is killed) loses the lease at expiry; the next client gets it
with a larger fencing token, and the old holder's late write-back is refused.

The holder is a real client process (this module run as ``python -m tests.system.test_holder_killed``):
it takes a 5 s lease with background renewal through :class:`vault.client.VaultClient`, prints the
lease as one JSON line and sleeps in the ``with`` block until it is SIGKILLed.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests._db import RawDb
from tests.sessiongen import make_session
from tests.system._procs import new_token, serve
from vault.client import Lease, VaultClient
from vault.errors import LeaseHeld, LeaseLost
from vault.settings import Settings

pytestmark = (
    pytest.mark.slow
)  # kills a process and waits out a lease: `scripts/test.sh -m "not slow"` skips it

TTL = 5  # renewed every 5/3 s: a renewal that a busy machine delays still has over 3 s to spare
ROOT = Path(__file__).resolve().parents[2]
_URL_VAR, _TOKEN_VAR, _USER_VAR = "HOLDER_VAULT_URL", "HOLDER_TOKEN", "HOLDER_USER_ID"


def _hold() -> None:
    """The holder process: lease, report, then hold (renewing in the background) until killed."""
    with VaultClient(os.environ[_URL_VAR], os.environ[_TOKEN_VAR]) as client:
        with client.lease(os.environ[_USER_VAR], purpose="sign", ttl_seconds=TTL) as lease:
            line = {k: getattr(lease, k) for k in ("lease_id", "fencing_token", "session_id")}
            sys.stdout.write(json.dumps(line) + "\n")
            sys.stdout.flush()
            threading.Event().wait()


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "the holder printed nothing"
    line = proc.stdout.readline()
    assert line, f"the holder exited with {proc.wait()}"
    out: dict[str, Any] = json.loads(line)
    return out


def test_killed_holder_loses_the_lease_at_expiry(settings: Settings, raw: RawDb, tmp_path: Path) -> None:
    with serve(settings, 1, tmp_path) as [server]:
        original, body = make_session(301)
        imported = httpx.post(f"{server.public}/api/import-session", json={"session": original})
        assert imported.status_code == 201, imported.text
        user_id, session_id = body["userId"], imported.json()["session_id"]
        (version,) = raw.query("SELECT version FROM sessions WHERE id = %s", [session_id])[0]
        token1, token2 = new_token(settings, server, "signer"), new_token(settings, server, "signer")

        env = {**os.environ, _URL_VAR: server.internal, _TOKEN_VAR: token1, _USER_VAR: user_id}
        with (tmp_path / "holder.log").open("wb") as log:
            holder = subprocess.Popen(
                [sys.executable, "-m", "tests.system.test_holder_killed"],
                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log,
            )  # fmt: skip
        try:
            old = _read_line(holder, 30)
            assert old["session_id"] == session_id
            with VaultClient(server.internal, token2) as second:
                # Renewal keeps the lease alive well past its first expiry.
                for _ in range(2):
                    time.sleep(3)  # waits on the database's clock on purpose: at 6 s only renewal holds it
                    with pytest.raises(LeaseHeld):
                        second.grant(user_id, purpose="sign")
                assert holder.poll() is None, (tmp_path / "holder.log").read_text()

                holder.kill()
                holder.wait(10)
                killed_wall, killed = time.time(), time.monotonic()
                with second.lease(user_id, purpose="sign", wait=30, renew=False) as lease:
                    waited = time.monotonic() - killed
                    assert lease.fencing_token == old["fencing_token"] + 1
                    assert lease.session == original
                    _late_write_back_is_refused(server.internal, token1, old, user_id)
        finally:
            if holder.poll() is None:
                holder.kill()
                holder.wait(10)
            if holder.stdout is not None:
                holder.stdout.close()

        # Taken over at expiry: not before (the holder renewed up to the kill; granted_us below), and not much
        # after (a generous bound: the database's clock decides, and a busy machine answers late).
        assert waited < TTL + 10, waited
        rows = raw.query(
            "SELECT id, fencing_token, granted_us, expires_us, end_reason FROM leases "
            "WHERE session_id = %s ORDER BY fencing_token",
            [session_id],
        )
        assert [(r[0], r[1]) for r in rows] == [
            (old["lease_id"], old["fencing_token"]),
            (lease.lease_id, lease.fencing_token),
        ]
        (_, _, _, old_expires_us, old_reason), (_, _, new_granted_us, _, new_reason) = rows
        assert old_reason == "expired"
        assert new_reason == "released"
        assert old_expires_us / 1e6 > killed_wall, "the holder stopped renewing before the kill"
        assert new_granted_us >= old_expires_us, "the lease was granted again before it expired"
        takeovers = raw.query(
            "SELECT lease_id, fencing_token, outcome FROM audit_events WHERE action = 'lease.takeover'"
        )
        assert takeovers == [(old["lease_id"], old["fencing_token"], "ok")]
        refused = raw.query(
            "SELECT outcome, detail FROM audit_events WHERE action = 'lease.release' AND lease_id = %s",
            [old["lease_id"]],
        )
        assert refused == [("denied", "lease_lost")] * 2

        # Nothing was written back: same stored version, and the next lease gets the original session.
        assert raw.query("SELECT version FROM sessions WHERE id = %s", [session_id]) == [(version,)]
        with VaultClient(server.internal, token2) as client:
            with client.lease(user_id, purpose="sign") as latest:
                assert latest.session == original
                assert latest.fencing_token == old["fencing_token"] + 2


def _late_write_back_is_refused(url: str, token: str, old: dict[str, Any], user_id: str) -> None:
    """The killed holder's credential, lease id and fencing token, with a refreshed session: refused."""
    refreshed = make_session(302, user_id=user_id)[0]
    response = httpx.post(
        f"{url}/v1/leases/{old['lease_id']}/release",
        json={"fencing_token": old["fencing_token"], "session": refreshed},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 409, response.text
    assert response.json()["error"] == "lease_lost"
    # The same through the client, with the lease rebuilt from what the holder printed.
    stale = Lease(
        old["lease_id"], old["session_id"], user_id, old["fencing_token"], datetime.now(UTC), TTL, session=""
    )
    with VaultClient(url, token) as client, pytest.raises(LeaseLost):
        client.release(stale, refreshed)
    assert stale.lost


if __name__ == "__main__":
    _hold()
