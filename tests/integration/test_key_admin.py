"""Key management over the admin API on both backends and both KEK providers (the local keyring, and
Transit on a real OpenBao server): KEK rotation, rewrap, retirement, DEK rotation and crypto-shredding,
each audited; a lease load running through rotation."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from tests._db import RawDb
from tests._live import LiveVault
from tests._openbao import BaoServer
from tests.integration.test_leases import Signer, _error, _ingest
from tests.sessiongen import make_session, refresh_session
from vault.crypto import Keyring, dek_aad
from vault.errors import DecryptionError
from vault.keys import LocalKeyringProvider, WrappedKey
from vault.settings import Settings


@pytest.fixture(params=["local", "transit"])
def provider(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture
def settings(db_url: str, keyring_file: Path, audit_keys_file: Path, provider: str,
             request: pytest.FixtureRequest) -> Settings:  # fmt: skip
    """The suite's settings, with this test's KEK provider (Transit: a fresh key on the dev server)."""
    values: dict[str, Any] = {"database_url": SecretStr(db_url), "keyring_file": keyring_file,
                              "audit_keys_file": audit_keys_file}  # fmt: skip
    if provider == "transit":
        bao: BaoServer = request.getfixturevalue("openbao")
        values |= {"kek_provider": "transit", "transit_addr": bao.addr, "transit_key": bao.create_key(),
                   "transit_token": SecretStr(bao.root_token)}  # fmt: skip
    return Settings.model_validate(values)


def _kek_of(settings: Settings) -> Any:
    from vault.keys import TransitProvider

    if settings.kek_provider == "transit":
        return TransitProvider.from_settings(settings)
    return LocalKeyringProvider.from_file(settings.require_keyring_file())


TIMEOUT = 60.0  # a loaded 2-core machine can stall a request for seconds; a timeout here proves nothing


def _admin(vault: LiveVault, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(
        method, vault.internal + path, headers={"Authorization": f"Bearer {vault.admin_token}"},
        timeout=TIMEOUT, **kwargs,
    )  # fmt: skip


def _ok(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


def _users(vault: LiveVault, n: int, seed: int) -> list[tuple[str, str]]:
    """Ingest ``n`` users' sessions; return (user_id, session)."""
    out = []
    for i in range(n):
        session, body = make_session(seed + i)
        _ingest(vault, session)
        out.append((body["userId"], session))
    return out


def _actions(raw: RawDb, prefix: str) -> list[tuple[str, str, str | None]]:
    rows = raw.query(
        "SELECT action, outcome, detail FROM audit_events WHERE action LIKE %s ORDER BY id", [prefix + "%"]
    )
    return [tuple(r) for r in rows]


def test_rotate_rewrap_retire_keep_every_session_open(vault: LiveVault, raw: RawDb) -> None:
    users = _users(vault, 3, 600)
    status = _ok(_admin(vault, "GET", "/v1/keys"))
    kek_id = status["kek_id"]
    assert kek_id == (
        "local" if vault.settings.kek_provider == "local" else f"transit:transit/{vault.settings.transit_key}"
    )
    assert status["active_version"] == 1 and status["versions"] == [1]
    assert status["deks"] == [{"kek_id": kek_id, "kek_version": 1, "deks": 3}] and status["stale"] == 0

    # Retiring the active version is refused, and so is retiring a version data keys still need.
    _error(_admin(vault, "POST", "/v1/keys/1/retire"), 422, "invalid_request")
    rotated = _ok(_admin(vault, "POST", "/v1/keys/rotate"))
    assert rotated["active_version"] == 2 and rotated["versions"] == [1, 2] and rotated["stale"] == 3
    _error(_admin(vault, "POST", "/v1/keys/1/retire"), 422, "invalid_request")

    # A new user's data key is wrapped under the new version at once.
    newcomer = _users(vault, 1, 610)
    counts = {(d["kek_version"]): d["deks"] for d in _ok(_admin(vault, "GET", "/v1/keys"))["deks"]}
    assert counts == {1: 3, 2: 1}

    started = _ok(_admin(vault, "POST", "/v1/keys/rewrap", json={"batch": 2}), 202)
    assert set(started) >= {"running", "stale", "rewrapped"}
    for _ in range(200):
        progress = _ok(_admin(vault, "GET", "/v1/keys/rewrap"))
        if not progress["running"] and progress["stale"] == 0:
            break
        threading.Event().wait(0.05)
    assert progress["stale"] == 0 and progress["rewrapped"] == 3 and progress["failed"] == 0, progress
    assert raw.query("SELECT DISTINCT kek_version FROM user_keys") == [(2,)]

    old_blobs = [bytes(r[0]) for r in raw.query("SELECT wrapped_dek FROM user_keys")]
    retired = _ok(_admin(vault, "POST", "/v1/keys/1/retire"))
    assert retired["versions"] == [2] and retired["min_decryption_version"] == 2
    if vault.settings.kek_provider == "local":
        keyring = Keyring.from_json(vault.settings.require_keyring_file().read_bytes())
        assert keyring.versions == (2,)
    assert old_blobs  # the rewrapped keys open under version 2 only (the leases below prove it)

    signer = Signer(vault)
    for user_id, session in [*users, *newcomer]:
        lease = signer.lease_user(user_id).json()
        assert lease["session"] == session
        assert signer.release(lease["lease_id"], lease["fencing_token"]).status_code == 200

    actions = [a for a, _, _ in _actions(raw, "key.")]
    assert actions == ["key.rotate", "key.rewrap", "key.rewrap", "key.retire"]
    assert all(outcome == "ok" for _, outcome, _ in _actions(raw, "key."))


def test_rewrap_is_idempotent_and_a_dry_run_changes_nothing(vault: LiveVault, raw: RawDb) -> None:
    _users(vault, 2, 620)
    _ok(_admin(vault, "POST", "/v1/keys/rotate"))
    before = raw.query("SELECT user_id, wrapped_dek FROM user_keys ORDER BY user_id")
    _error(_admin(vault, "POST", "/v1/keys/rewrap", json={"batch": 0}), 422, "invalid_request")
    _error(_admin(vault, "POST", "/v1/keys/rewrap", json={"bogus": True}), 422, "invalid_request")
    assert raw.query("SELECT user_id, wrapped_dek FROM user_keys ORDER BY user_id") == before
    _ok(_admin(vault, "POST", "/v1/keys/rewrap", json={}), 202)
    for _ in range(200):
        if _ok(_admin(vault, "GET", "/v1/keys/rewrap"))["stale"] == 0:
            break
        threading.Event().wait(0.05)
    after = raw.query("SELECT user_id, wrapped_dek FROM user_keys ORDER BY user_id")
    assert after != before
    _ok(_admin(vault, "POST", "/v1/keys/rewrap", json={}), 202)
    for _ in range(200):
        if not _ok(_admin(vault, "GET", "/v1/keys/rewrap"))["running"]:
            break
        threading.Event().wait(0.05)
    assert raw.query("SELECT user_id, wrapped_dek FROM user_keys ORDER BY user_id") == after


def test_key_routes_need_the_admin_role(vault: LiveVault) -> None:
    signer = vault.token("signer")
    for method, path in [("GET", "/v1/keys"), ("POST", "/v1/keys/rotate"), ("GET", "/v1/keys/rewrap"),
                         ("POST", "/v1/keys/1/retire"), ("POST", "/v1/users/u/rotate-dek"),
                         ("POST", "/v1/users/u/shred")]:  # fmt: skip
        anonymous = httpx.request(method, vault.internal + path)
        assert anonymous.status_code == 401, path
        forbidden = httpx.request(
            method, vault.internal + path, headers={"Authorization": f"Bearer {signer}"}
        )
        assert forbidden.status_code == 403 and forbidden.json()["error"] == "forbidden", path


def test_rotate_dek_keeps_a_lease_in_progress_and_its_write_back(vault: LiveVault, raw: RawDb) -> None:
    session, body = make_session(630)
    user_id = body["userId"]
    sid = _ingest(vault, session)["session_id"]
    signer = Signer(vault)
    lease = signer.lease_user(user_id).json()
    before = raw.query("SELECT ciphertext FROM sessions WHERE id = %s", [sid])[0][0]

    rotated = _ok(_admin(vault, "POST", f"/v1/users/{user_id}/rotate-dek"))
    assert rotated == {"user_id": user_id, "dek_version": 2, "sessions": 1}
    keys = raw.query("SELECT dek_version, status, length(wrapped_dek) FROM user_keys WHERE user_id = %s "
                     "ORDER BY dek_version", [user_id])  # fmt: skip
    assert keys == [(1, "destroyed", 0), (2, "active", keys[1][2])] and keys[1][2] > 0
    row = raw.query("SELECT dek_version, version, ciphertext FROM sessions WHERE id = %s", [sid])[0]
    assert row[0] == 2 and row[1] == 1 and bytes(row[2]) != bytes(before)

    refreshed, _ = refresh_session(body, 631)
    released = signer.release(lease["lease_id"], lease["fencing_token"], refreshed)
    assert released.status_code == 200 and released.json()["written_back"] is True, released.text
    again = signer.lease_user(user_id).json()
    assert again["session"] == refreshed
    _error(_admin(vault, "POST", "/v1/users/nobody-at-all/rotate-dek"), 404, "not_found")
    assert [a for a, _, _ in _actions(raw, "user.")] == ["user.rotate_dek"]


def test_shred_destroys_keys_and_ciphertext_and_ends_leases(vault: LiveVault, raw: RawDb) -> None:
    session, body = make_session(640)
    user_id = body["userId"]
    sid = _ingest(vault, session)["session_id"]
    other, other_body = make_session(641)
    _ingest(vault, other)
    signer = Signer(vault)
    lease = signer.lease_user(user_id).json()
    before = bytes(raw.query("SELECT ciphertext FROM sessions WHERE id = %s", [sid])[0][0])
    wrapped = bytes(raw.query("SELECT wrapped_dek FROM user_keys WHERE user_id = %s", [user_id])[0][0])

    shredded = _ok(_admin(vault, "POST", f"/v1/users/{user_id}/shred"))
    assert shredded == {"shredded": True, "sessions": 1, "leases": 1}
    assert raw.query("SELECT status, length(ciphertext) FROM sessions WHERE id = %s", [sid]) == [
        ("shredded", 0)
    ]
    assert raw.query("SELECT status, length(wrapped_dek) FROM user_keys WHERE user_id = %s", [user_id]) == [
        ("destroyed", 0)
    ]
    dump = raw.everything()
    assert before not in dump and wrapped not in dump
    # Nothing of the user's left in the database opens, with any KEK version that ever existed.
    kek = _kek_of(vault.settings)

    async def nothing_opens() -> None:
        try:
            status = await kek.status()
            for blob, version in raw.query("SELECT wrapped_dek, dek_version FROM user_keys WHERE user_id = %s",
                                           [user_id]):  # fmt: skip
                for kek_version in status.versions:
                    with pytest.raises(DecryptionError):
                        await kek.unwrap(WrappedKey(status.kek_id, kek_version, bytes(blob)),
                                         aad=dek_aad(user_id, version))  # fmt: skip
        finally:
            await kek.close()

    asyncio.run(nothing_opens())

    # Leasing and writing back answer 410 user_shredded; the other user is untouched.
    _error(signer.lease_user(user_id), 410, "user_shredded")
    _error(signer.lease_session(sid), 410, "user_shredded")
    refreshed, _ = refresh_session(body, 642)
    _error(signer.release(lease["lease_id"], lease["fencing_token"], refreshed), 410, "user_shredded")
    assert raw.query("SELECT status FROM sessions WHERE id = %s", [sid]) == [("shredded",)]
    assert signer.lease_user(other_body["userId"]).json()["session"] == other

    # A later login starts afresh with a new data key (a version never used before).
    fresh, _ = refresh_session(body, 643)
    new_sid = _ingest(vault, fresh)["session_id"]
    assert raw.query("SELECT dek_version FROM sessions WHERE id = %s", [new_sid]) == [(2,)]
    assert signer.lease_user(user_id).json()["session"] == fresh
    _error(_admin(vault, "POST", "/v1/users/nobody-at-all/shred"), 404, "not_found")
    events = _actions(raw, "user.shred")
    assert len(events) == 1 and events[0][1] == "ok" and "1 leases ended" in (events[0][2] or "")


@pytest.mark.slow  # a load of leases through two rotations and rewraps: tens of seconds on SQLite
def test_rotation_and_rewrap_under_a_lease_load(vault: LiveVault) -> None:
    users = _users(vault, 4, 650)
    token = vault.token("signer")
    stop = threading.Event()
    failures: list[str] = []
    cycles: list[int] = []

    def load(seed: int) -> None:
        auth = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=vault.internal, headers=auth, timeout=TIMEOUT) as http:
            i = seed
            while not stop.is_set():
                user_id, session = users[i % len(users)]
                i += 1
                got = http.post(f"/v1/users/{user_id}/lease", json={"purpose": "sign", "ttl_seconds": 30})
                if got.status_code == 409 and got.json()["error"] == "lease_held":
                    continue
                if got.status_code != 201 or got.json()["session"] != session:
                    failures.append(f"grant {got.status_code} {got.text[:80]}")
                    continue
                lease = got.json()
                done = http.post(f"/v1/leases/{lease['lease_id']}/release",
                                 json={"fencing_token": lease["fencing_token"]})  # fmt: skip
                if done.status_code != 200:
                    failures.append(f"release {done.status_code}")
                cycles.append(1)

    threads = [threading.Thread(target=load, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(2):
            _ok(_admin(vault, "POST", "/v1/keys/rotate"))
            _ok(_admin(vault, "POST", "/v1/keys/rewrap", json={"batch": 1}), 202)
            for _ in range(400):
                if _ok(_admin(vault, "GET", "/v1/keys"))["stale"] == 0:
                    break
                threading.Event().wait(0.05)
        for user_id, _ in users:
            _ok(_admin(vault, "POST", f"/v1/users/{user_id}/rotate-dek"))
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert not failures, failures[:5]
    assert len(cycles) > 0
    status = _ok(_admin(vault, "GET", "/v1/keys"))
    assert status["active_version"] == 3 and status["stale"] == 0


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_shred_is_refused_input_and_changes_nothing(vault: LiveVault, raw: RawDb) -> None:
    _users(vault, 1, 660)
    tables = "SELECT s.id, s.status, s.ciphertext, k.status, k.wrapped_dek FROM sessions s JOIN user_keys k ON k.user_id = s.user_id"
    before = raw.query(tables)
    for path in ["/v1/users/%20/shred", "/v1/users/" + "x" * 300 + "/shred", "/v1/keys/0/retire",
                 "/v1/keys/abc/retire", "/v1/keys/99999999999/retire"]:  # fmt: skip
        response = _admin(vault, "POST", path)
        assert response.status_code in (404, 422), (path, response.status_code)
        assert set(response.json()) == {"error", "detail"}
    assert raw.query(tables) == before


def test_a_running_vault_picks_up_a_rotation_made_elsewhere(vault: LiveVault, raw: RawDb) -> None:
    """A rotation by the CLI or another replica (here: another provider instance on the same keyring file or
    Transit key) is what the running vault wraps new data keys under, without a restart."""
    _users(vault, 1, 670)
    kek = _kek_of(vault.settings)

    async def rotate() -> int:
        try:
            version: int = await kek.rotate()
            return version
        finally:
            await kek.close()

    assert asyncio.run(rotate()) == 2
    ((user_id, session),) = _users(vault, 1, 671)
    assert raw.query("SELECT kek_version FROM user_keys WHERE user_id = %s", [user_id]) == [(2,)]
    assert _ok(_admin(vault, "GET", "/v1/keys"))["active_version"] == 2
    signer = Signer(vault)
    assert signer.lease_user(user_id).json()["session"] == session


@pytest.mark.parametrize(("backend", "provider"), [("sqlite", "local")], indirect=True)
def test_a_reader_in_another_process_does_not_stall_a_shred(
    vault: LiveVault, raw: RawDb, caplog: pytest.LogCaptureFixture
) -> None:
    """The WAL checkpoint after a shred waits for other processes' readers at most a second (not SQLite's
    30 s busy timeout on the vault's only connection); the old pages then go at a later checkpoint."""
    import sqlite3
    import time

    ((user_id, _),) = _users(vault, 1, 680)
    reader = sqlite3.connect(raw.sqlite_path)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM sessions").fetchall()  # holds a read snapshot of the WAL
        started = time.monotonic()
        shredded = _ok(_admin(vault, "POST", f"/v1/users/{user_id}/shred"))
        took = time.monotonic() - started
    finally:
        reader.close()
    assert shredded["shredded"] is True
    assert took < 15, took  # a stalled checkpoint would hold the connection for the 30 s busy timeout
    assert any("SQLite WAL" in r.getMessage() for r in caplog.records if r.name == "vault.keys")
    signer = Signer(vault)
    _error(signer.lease_user(user_id), 410, "user_shredded")


@pytest.mark.parametrize(("backend", "provider"), [("postgresql", "local")], indirect=True)
def test_racing_dek_rotations_and_a_shred_of_one_user_serialise(vault: LiveVault, raw: RawDb) -> None:
    """Two DEK rotations and then a shred of one user, sent at once: the user's row lock orders them; the
    rotations get distinct versions, at most one key stays active, nothing is left half-rotated, and the
    shred, whenever it lands, destroys every version."""
    ((user_id, session),) = _users(vault, 1, 690)
    barrier = threading.Barrier(2)
    answers: list[httpx.Response] = []

    def rotate() -> None:
        barrier.wait()
        answers.append(_admin(vault, "POST", f"/v1/users/{user_id}/rotate-dek"))

    threads = [threading.Thread(target=rotate) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(r.status_code for r in answers) == [200, 200], [r.text for r in answers]
    assert sorted(r.json()["dek_version"] for r in answers) == [2, 3]
    keys = raw.query("SELECT dek_version, status FROM user_keys WHERE user_id = %s ORDER BY 1", [user_id])
    assert keys == [(1, "destroyed"), (2, "destroyed"), (3, "active")]
    assert raw.query("SELECT dek_version FROM sessions WHERE user_id = %s", [user_id]) == [(3,)]
    signer = Signer(vault)
    lease = signer.lease_user(user_id).json()
    assert lease["session"] == session

    def call(op: str) -> None:
        answers.append(_admin(vault, "POST", f"/v1/users/{user_id}/{op}"))

    racing = [threading.Thread(target=call, args=(op,)) for op in ("shred", "rotate-dek")]
    for thread in racing:
        thread.start()
    for thread in racing:
        thread.join(60)
    last = {r.request.url.path.rsplit("/", 1)[1]: r for r in answers[2:]}
    assert last["shred"].status_code == 200
    assert last["rotate-dek"].status_code in (200, 410), last["rotate-dek"].text  # before or after the shred
    assert raw.query(
        "SELECT count(*) FROM user_keys WHERE user_id = %s AND status <> 'destroyed'", [user_id]
    ) == [(0,)]
    assert raw.query("SELECT status, length(ciphertext) FROM sessions WHERE user_id = %s", [user_id]) == [
        ("shredded", 0)
    ]
    _error(signer.release(lease["lease_id"], lease["fencing_token"]), 410, "user_shredded")
