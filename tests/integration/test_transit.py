"""The Transit KEK provider against a real OpenBao server (``tests/_openbao.py``): no mocks.

Async tests run their coroutine with ``asyncio.run`` inside a plain test function; each makes (and
closes) its provider inside that loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
from pydantic import SecretStr

from tests._openbao import BaoServer, DurableBao, free_port, new_key_name
from vault.crypto import dek_aad, generate_key
from vault.errors import ConfigError, DecryptionError, InvalidRequest, KeyUnavailable, VaultError
from vault.keys import TransitProvider, WrappedKey
from vault.settings import Settings

T = TypeVar("T")


def run(provider: Callable[[], TransitProvider], body: Callable[[TransitProvider], Awaitable[T]]) -> T:
    async def main() -> T:
        kek = provider()
        try:
            return await body(kek)
        finally:
            await kek.close()

    return asyncio.run(main())


def test_wrap_unwrap_round_trip(openbao: BaoServer, transit_key: str) -> None:
    dek = generate_key()

    async def body(kek: TransitProvider) -> None:
        wrapped = await kek.wrap(dek, aad=dek_aad("alice", 1))
        assert wrapped.kek_id == f"transit:transit/{transit_key}" == kek.kek_id
        assert wrapped.kek_version == 1 and wrapped.blob.startswith(b"vault:v1:")
        assert dek not in wrapped.blob and "blob" not in repr(wrapped)
        assert await kek.unwrap(wrapped, aad=dek_aad("alice", 1)) == dek
        assert kek.local is False
        await kek.check()

    run(lambda: openbao.provider(transit_key), body)


def test_the_context_binds_user_and_version(openbao: BaoServer, transit_key: str) -> None:
    async def body(kek: TransitProvider) -> None:
        wrapped = await kek.wrap(generate_key(), aad=dek_aad("alice", 1))
        for aad in (dek_aad("bob", 1), dek_aad("alice", 2), b"x"):
            with pytest.raises(DecryptionError):
                await kek.unwrap(wrapped, aad=aad)
        text = wrapped.blob.decode()
        tampered = text[:-6] + ("AAAA" if text[-6:-2] != "AAAA" else "BBBB") + text[-2:]
        for blob in (tampered.encode(), b"vault:v1:", b"\xff\xfe", b"vault:v9:" + wrapped.blob[9:]):
            with pytest.raises(DecryptionError):
                await kek.unwrap(WrappedKey(kek.kek_id, 1, blob), aad=dek_aad("alice", 1))
        with pytest.raises(DecryptionError):  # another KEK's key is never sent to this one
            await kek.unwrap(WrappedKey("transit:transit/other", 1, wrapped.blob), aad=dek_aad("alice", 1))

    run(lambda: openbao.provider(transit_key), body)


def test_rotate_then_new_wraps_use_the_new_version_and_old_still_unwrap(
    openbao: BaoServer, transit_key: str
) -> None:
    async def body(kek: TransitProvider) -> None:
        status = await kek.status()
        assert (status.kek_id, status.active_version, status.min_decryption_version, status.versions) == (
            kek.kek_id, 1, 1, (1,),
        )  # fmt: skip
        old_dek = generate_key()
        old = await kek.wrap(old_dek, aad=dek_aad("u", 1))
        assert await kek.rotate() == 2
        new = await kek.wrap(generate_key(), aad=dek_aad("u", 2))
        assert new.kek_version == 2 and new.blob.startswith(b"vault:v2:")
        assert await kek.unwrap(old, aad=dek_aad("u", 1)) == old_dek
        status = await kek.status()
        assert (status.active_version, status.min_decryption_version, status.versions) == (2, 1, (1, 2))

    run(lambda: openbao.provider(transit_key), body)


def test_rewrap_with_context_moves_old_ciphertexts_to_the_latest_version(
    openbao: BaoServer, transit_key: str
) -> None:
    """OpenBao 2.7's rewrap takes the derivation ``context`` per batch item (and checks it)."""

    async def body(kek: TransitProvider) -> None:
        deks = {f"user-{i}": generate_key() for i in range(5)}
        wrapped = {u: await kek.wrap(d, aad=dek_aad(u, 1)) for u, d in deks.items()}
        await kek.rotate()
        assert await kek.rotate() == 3
        items = [(w, dek_aad(u, 1)) for u, w in wrapped.items()]
        items.insert(2, (wrapped["user-0"], dek_aad("user-1", 1)))  # the wrong user: does not open
        items.append((WrappedKey("local", 1, b"\x01" * 40), dek_aad("user-0", 1)))  # not Transit's
        items.append((WrappedKey(kek.kek_id, 1, b"vault:v1:AAAA"), dek_aad("user-0", 1)))
        results = await kek.rewrap(items)
        assert len(results) == len(items)
        assert results[2] is None and results[-1] is None and results[-2] is None
        good = [r for i, r in enumerate(results) if i not in (2, len(items) - 1, len(items) - 2)]
        for (user, dek), new in zip(deks.items(), good, strict=True):
            assert new is not None and new.kek_version == 3 and new.blob.startswith(b"vault:v3:")
            assert new.kek_id == kek.kek_id
            assert await kek.unwrap(new, aad=dek_aad(user, 1)) == dek
            with pytest.raises(DecryptionError):  # still bound to its user and version
                await kek.unwrap(new, aad=dek_aad(user, 2))
        assert await kek.rewrap([]) == []

    run(lambda: openbao.provider(transit_key), body)


def test_rewrap_in_chunks_keeps_the_order(openbao: BaoServer, transit_key: str) -> None:
    async def body(kek: TransitProvider) -> None:
        deks = [generate_key() for _ in range(600)]  # more than one request's worth
        wrapped = [await kek.wrap(d, aad=dek_aad(f"u{i}", 1)) for i, d in enumerate(deks)]
        await kek.rotate()
        items = [(w, dek_aad(f"u{i}", 1 if i % 97 else 2)) for i, w in enumerate(wrapped)]
        results = await kek.rewrap(items)
        for i, new in enumerate(results):
            if i % 97 == 0:
                assert new is None
            else:
                assert new is not None and new.kek_version == 2
        for i in (1, 250, 251, 599):
            new = results[i]
            assert new is not None and await kek.unwrap(new, aad=dek_aad(f"u{i}", 1)) == deks[i]

    run(lambda: openbao.provider(transit_key), body)


def test_retired_versions_no_longer_unwrap_and_the_active_one_cannot_be_retired(
    openbao: BaoServer, transit_key: str
) -> None:
    """Transit answers 400 for a ciphertext below min_decryption_version: a DEK that cannot be opened
    any more is a DecryptionError (not an outage: retrying will not help)."""

    async def body(kek: TransitProvider) -> None:
        v1 = await kek.wrap(generate_key(), aad=dek_aad("u", 1))
        await kek.rotate()
        v2 = await kek.wrap(generate_key(), aad=dek_aad("u", 2))
        await kek.rotate()
        v3_dek = generate_key()
        v3 = await kek.wrap(v3_dek, aad=dek_aad("u", 3))
        for bad in (3, 4, 0, -1):
            with pytest.raises(InvalidRequest, match="below the active one"):
                await kek.retire(bad)
        await kek.retire(2)
        for old, version in ((v1, 1), (v2, 2)):
            with pytest.raises(DecryptionError):
                await kek.unwrap(old, aad=dek_aad("u", version))
        assert await kek.rewrap([(v1, dek_aad("u", 1))]) == [None]
        assert await kek.unwrap(v3, aad=dek_aad("u", 3)) == v3_dek
        status = await kek.status()
        assert (status.active_version, status.min_decryption_version, status.versions) == (3, 3, (3,))
        await kek.retire(1)  # already retired: never lowers the minimum again
        assert (await kek.status()).min_decryption_version == 3
        with pytest.raises(DecryptionError):
            await kek.unwrap(v2, aad=dek_aad("u", 2))

    run(lambda: openbao.provider(transit_key), body)


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"type": "aes256-gcm96", "derived": False}, "derived=true"),
        ({"type": "chacha20-poly1305", "derived": False}, "derived=true"),
        ({"type": "rsa-2048", "derived": False}, "type must be one of"),
        ({"type": "ed25519", "derived": False}, "type must be one of"),
        ({"type": "ed25519", "derived": True}, "type must be one of"),
    ],
)
def test_check_refuses_a_key_that_cannot_bind_the_owner(
    openbao: BaoServer, options: dict[str, object], problem: str
) -> None:
    key = openbao.create_key(**options)

    async def body(kek: TransitProvider) -> None:
        with pytest.raises(ConfigError, match=problem):
            await kek.check()

    run(lambda: openbao.provider(key), body)


@pytest.mark.parametrize("key_type", ["aes128-gcm96", "chacha20-poly1305"])
def test_check_accepts_every_derived_aead_key(openbao: BaoServer, key_type: str) -> None:
    key = openbao.create_key(type=key_type)

    async def body(kek: TransitProvider) -> None:
        await kek.check()
        dek = generate_key()
        assert await kek.unwrap(await kek.wrap(dek, aad=b"a"), aad=b"a") == dek

    run(lambda: openbao.provider(key), body)


def test_check_refuses_a_missing_key_or_mount(openbao: BaoServer) -> None:
    async def body(kek: TransitProvider) -> None:
        with pytest.raises(ConfigError, match="does not exist"):
            await kek.check()

    run(lambda: openbao.provider(new_key_name()), body)
    run(lambda: openbao.provider("k", mount="no-such-mount"), body)


def test_a_missing_key_is_unavailable_at_run_time(openbao: BaoServer) -> None:
    async def body(kek: TransitProvider) -> None:
        wrapped = WrappedKey(kek.kek_id, 1, b"vault:v1:" + b"A" * 40)
        with pytest.raises(KeyUnavailable, match="no such transit key"):
            await kek.unwrap(wrapped, aad=b"a")
        with pytest.raises(KeyUnavailable):
            await kek.status()

    run(lambda: openbao.provider(new_key_name()), body)


def test_a_wrong_token_is_key_unavailable_at_once(openbao: BaoServer, transit_key: str) -> None:
    async def body(kek: TransitProvider) -> None:
        wrapped = WrappedKey(kek.kek_id, 1, b"vault:v1:" + b"A" * 40)
        started = time.monotonic()
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: kek.wrap(b"k" * 32, aad=b"a"), lambda: kek.unwrap(wrapped, aad=b"a"),
            kek.status, kek.check, kek.rotate, lambda: kek.retire(1), lambda: kek.rewrap([(wrapped, b"a")]),
        ]  # fmt: skip
        for call in calls:
            with pytest.raises(KeyUnavailable, match="permission denied"):
                await call()
        assert time.monotonic() - started < 5  # 403 is not retried

    run(lambda: openbao.provider(transit_key, token="s.not-a-real-token"), body)


def test_a_least_privilege_token_wraps_but_cannot_create_keys(openbao: BaoServer, transit_key: str) -> None:
    """The policy the provider's docstring names: ``update`` (not ``create``) on encrypt, so a wrap under
    a missing key is refused instead of silently creating a key."""
    missing = new_key_name()
    policy = "\n".join(
        f'path "transit/{path}" {{ capabilities = ["{cap}"] }}'
        for key in (transit_key, missing)
        for path, cap in (
            (f"encrypt/{key}", "update"), (f"decrypt/{key}", "update"), (f"rewrap/{key}", "update"),
            (f"keys/{key}", "read"), (f"keys/{key}/rotate", "update"), (f"keys/{key}/config", "update"),
        )
    )  # fmt: skip
    token = openbao.token_with_policy(policy)

    async def body(kek: TransitProvider) -> None:
        await kek.check()
        wrapped = await kek.wrap(b"d" * 32, aad=b"a")
        await kek.rotate()
        assert await kek.unwrap(wrapped, aad=b"a") == b"d" * 32
        [new] = await kek.rewrap([(wrapped, b"a")])
        assert new is not None and new.kek_version == 2
        await kek.retire(1)

    async def missing_key(kek: TransitProvider) -> None:
        with pytest.raises(KeyUnavailable, match="permission denied"):
            await kek.wrap(b"d" * 32, aad=b"a")

    run(lambda: openbao.provider(transit_key, token=token), body)
    run(lambda: openbao.provider(missing, token=token), missing_key)
    assert openbao.api("GET", f"transit/keys/{missing}").status_code == 404


@pytest.mark.slow
def test_a_stopped_server_is_unavailable_in_bounded_time_and_a_restart_recovers(
    durable_openbao: Callable[[], DurableBao],
) -> None:
    server = durable_openbao()

    async def body(kek: TransitProvider) -> None:
        dek = generate_key()
        wrapped = await kek.wrap(dek, aad=dek_aad("u", 1))
        server.stop()
        for call in (
            lambda: kek.wrap(dek, aad=dek_aad("u", 2)),
            lambda: kek.unwrap(wrapped, aad=dek_aad("u", 1)),
        ):
            started = time.monotonic()
            with pytest.raises(KeyUnavailable, match="unreachable"):
                await call()
            assert time.monotonic() - started <= kek.max_call_seconds
        with pytest.raises(KeyUnavailable):
            await kek.check()
        server.start()  # same storage, unsealed again: the key survived
        assert await kek.unwrap(wrapped, aad=dek_aad("u", 1)) == dek
        again = await kek.wrap(dek, aad=dek_aad("u", 2))
        assert await kek.unwrap(again, aad=dek_aad("u", 2)) == dek
        await kek.check()

    run(lambda: server.provider(server.key, timeout=1.0, retries=2), body)


@pytest.mark.slow
def test_a_hung_server_times_out_in_bounded_time(durable_openbao: Callable[[], DurableBao]) -> None:
    """SIGSTOP: the kernel still accepts connections, nothing answers; every attempt is cut off."""
    server = durable_openbao()

    async def body(kek: TransitProvider) -> None:
        dek = generate_key()
        wrapped = await kek.wrap(dek, aad=b"a")
        server.pause()
        try:
            started = time.monotonic()
            with pytest.raises(KeyUnavailable, match="no answer in time"):
                await kek.unwrap(wrapped, aad=b"a")
            elapsed = time.monotonic() - started
            assert 1.0 <= elapsed <= kek.max_call_seconds + 0.5, elapsed
            with pytest.raises(KeyUnavailable):  # rotate is not retried after a timeout (it may have acted)
                await kek.rotate()
        finally:
            server.resume()
        assert await kek.unwrap(wrapped, aad=b"a") == dek

    run(lambda: server.provider(server.key, timeout=0.5, retries=2), body)


@pytest.mark.slow
def test_a_sealed_server_is_key_unavailable(durable_openbao: Callable[[], DurableBao]) -> None:
    server = durable_openbao()

    async def body(kek: TransitProvider) -> None:
        wrapped = await kek.wrap(b"d" * 32, aad=b"a")
        server.ok("POST", "sys/seal")
        for call in (kek.check, lambda: kek.unwrap(wrapped, aad=b"a"), kek.status):
            with pytest.raises(KeyUnavailable, match="sealed"):
                await call()
        server.ok("POST", "sys/unseal", {"key": server.unseal_key})
        server.wait_health()
        assert await kek.unwrap(wrapped, aad=b"a") == b"d" * 32

    run(lambda: server.provider(server.key, timeout=1.0, retries=1), body)


TRANSIT = {"kek_provider": "transit", "transit_key": "k", "transit_token": SecretStr("t-secret-1")}


@pytest.mark.parametrize(
    "addr",
    ["http://10.0.0.5:8200", "http://vault.example.com", "http://127.0.0.1.example.com", "http://[::2]:8200",
     "ftp://127.0.0.1", "https://", "https://u:p@vault.example.com", "https://vault.example.com/v1",
     "https://vault.example.com:99999"],
)  # fmt: skip
def test_settings_refuse_plain_http_off_loopback_and_malformed_addresses(addr: str) -> None:
    with pytest.raises(ConfigError, match=r"^VAULT_TRANSIT_ADDR: ") as caught:
        Settings.load(transit_addr=addr, **TRANSIT)
    assert "u:p" not in caught.value.detail and "example" not in caught.value.detail


@pytest.mark.parametrize(
    "addr",
    ["http://127.0.0.1:8200", "http://127.1.2.3:8200", "http://localhost:8200", "http://[::1]:8200",
     "https://vault.example.com:8200", "https://vault.example.com/"],
)  # fmt: skip
def test_settings_accept_https_and_loopback_http(addr: str) -> None:
    settings = Settings.load(transit_addr=addr, **TRANSIT)
    assert "t-secret-1" not in repr(settings) and "t-secret-1" not in str(settings)
    assert settings.kek_provider == "transit" and settings.transit_addr == addr.rstrip("/")
    defaults = (settings.transit_mount, settings.transit_timeout_seconds, settings.transit_retries)
    assert defaults == ("transit", 5, 3)


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"transit_addr": None}, "VAULT_TRANSIT_ADDR is required"),
        ({"transit_key": None}, "VAULT_TRANSIT_KEY is required"),
        ({"transit_token": None}, "exactly one of VAULT_TRANSIT_TOKEN and VAULT_TRANSIT_TOKEN_FILE"),
        ({"transit_token_file": Path("/t")}, "exactly one of VAULT_TRANSIT_TOKEN and"),
        ({"transit_key": "../sys"}, "^VAULT_TRANSIT_KEY: "),
        ({"transit_mount": "a/../b"}, "^VAULT_TRANSIT_MOUNT: "),
        ({"transit_namespace": "ns x"}, "^VAULT_TRANSIT_NAMESPACE: "),
        ({"transit_timeout_seconds": 0}, "^VAULT_TRANSIT_TIMEOUT_SECONDS: "),
        ({"transit_retries": 11}, "^VAULT_TRANSIT_RETRIES: "),
        ({"transit_ca_file": Path("/ca.pem")}, "VAULT_TRANSIT_CA_FILE is set but"),
    ],
)
def test_settings_refuse_an_incomplete_or_bad_transit_configuration(
    overrides: dict[str, object], problem: str
) -> None:
    with pytest.raises(ConfigError, match=problem) as caught:
        Settings.load(**(TRANSIT | {"transit_addr": "http://127.0.0.1:8200"} | overrides))
    assert "t-secret-1" not in caught.value.detail


def test_from_settings_reads_the_token_file_once_stripped(
    openbao: BaoServer, transit_key: str, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"  {openbao.root_token}\n")
    token_file.chmod(0o600)
    settings = Settings.load(
        kek_provider="transit",
        transit_addr=openbao.addr,
        transit_key=transit_key,
        transit_token_file=token_file,
    )

    async def body(kek: TransitProvider) -> None:
        token_file.write_text("changed")  # read once, at startup
        await kek.check()
        dek = generate_key()
        assert await kek.unwrap(await kek.wrap(dek, aad=b"a"), aad=b"a") == dek

    run(lambda: TransitProvider.from_settings(settings), body)
    token_file.chmod(0o644)
    with pytest.raises(ConfigError, match="must not be readable by group or others"):
        TransitProvider.from_settings(settings)
    token_file.write_text("\n")
    token_file.chmod(0o600)
    with pytest.raises(ConfigError, match="empty"):
        TransitProvider.from_settings(settings)


def test_settings_do_not_need_a_keyring_file_in_production_with_transit() -> None:
    settings = Settings.load(
        database_url=SecretStr("postgresql+asyncpg://vault:a-long-password-123@db/vault"),
        audit_keys_file=Path("/keys/audit.json"), transit_addr="https://kms.internal:8200", **TRANSIT,
    )  # fmt: skip
    settings.check_production()
    with pytest.raises(ConfigError, match="VAULT_KEYRING_FILE"):
        Settings.load(database_url=settings.database_url, audit_keys_file=Path("/a")).check_production()


def test_the_token_never_appears_in_reprs_or_errors(openbao: BaoServer, transit_key: str) -> None:
    token = openbao.root_token
    errors: list[BaseException] = []

    async def collect(call: Callable[[], Awaitable[object]]) -> None:
        try:
            await call()
        except VaultError as exc:
            errors.append(exc)

    async def body(kek: TransitProvider) -> None:
        assert token not in repr(kek) and token not in str(kek)
        wrapped = await kek.wrap(b"d" * 32, aad=b"a")
        await collect(lambda: kek.unwrap(wrapped, aad=b"b"))
        await collect(lambda: kek.retire(5))
        await collect(lambda: kek.unwrap(WrappedKey(kek.kek_id, 1, b"vault:v1:" + b"A" * 40), aad=b"a"))

    async def unreachable(kek: TransitProvider) -> None:
        assert token not in repr(kek)
        await collect(lambda: kek.wrap(b"d" * 32, aad=b"a"))
        await collect(kek.check)

    async def missing(kek: TransitProvider) -> None:
        await collect(kek.check)
        await collect(kek.status)

    run(lambda: openbao.provider(transit_key), body)
    run(lambda: openbao.provider(transit_key, token=token, timeout=0.5, retries=1), body)
    closed = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    run(lambda: TransitProvider(addr=closed, key="k", token=SecretStr(token), retries=1), unreachable)
    run(lambda: openbao.provider(new_key_name()), missing)
    assert len(errors) >= 8
    for exc in errors:
        chain: list[BaseException] = [exc]
        while (nxt := chain[-1].__cause__ or chain[-1].__context__) is not None and len(chain) < 10:
            chain.append(nxt)
        for link in chain:
            assert token not in str(link) and token not in repr(link)


def test_https_verifies_the_server_with_the_configured_ca(openbao_tls: BaoServer, tmp_path: Path) -> None:
    key = openbao_tls.create_key()
    assert openbao_tls.ca_file is not None and openbao_tls.addr.startswith("https://")
    base = {"kek_provider": "transit", "transit_addr": openbao_tls.addr, "transit_key": key}
    token = SecretStr(openbao_tls.root_token)
    with_ca = Settings.load(**base, transit_token=token, transit_ca_file=openbao_tls.ca_file)

    async def works(kek: TransitProvider) -> None:
        await kek.check()
        assert await kek.unwrap(await kek.wrap(b"d" * 32, aad=b"a"), aad=b"a") == b"d" * 32

    async def refused(kek: TransitProvider) -> None:  # the dev CA is not a system CA: no connection
        with pytest.raises(KeyUnavailable, match="TLS certificate does not verify"):
            await kek.check()

    run(lambda: TransitProvider.from_settings(with_ca), works)
    without_ca = Settings.load(**base, transit_token=token, transit_retries=0)
    run(lambda: TransitProvider.from_settings(without_ca), refused)
    bad_ca = tmp_path / "ca.pem"
    bad_ca.write_text("not a certificate")
    with pytest.raises(ConfigError, match="VAULT_TRANSIT_CA_FILE"):
        TransitProvider.from_settings(Settings.load(**base, transit_token=token, transit_ca_file=bad_ca))
