"""Unit tests for vault.crypto: sealing, opaque failures, associated data, keyrings, secrets."""

from __future__ import annotations

import base64
import copy
import json
import pickle

import pytest

from vault.crypto import (
    FORMAT_VERSION,
    HEADER_SIZE,
    KEY_SIZE,
    Keyring,
    SecretBytes,
    build_aad,
    dek_aad,
    generate_key,
    key_version_of,
    seal,
    seal_with,
    session_aad,
    unseal,
    unseal_with,
)
from vault.crypto._aead import _seal_with_nonce
from vault.errors import ConfigError, DecryptionError, VaultError

KEY = bytes(range(32))
OTHER_KEY = bytes(range(100, 132))
AAD = session_aad("user-1", "sess-1", 1)
PLAINTEXT = b'{"userId":"user-1","session":"secret-session-material"}'
TAG_SIZE = 16


def _assert_opaque(exc: pytest.ExceptionInfo[DecryptionError]) -> None:
    assert type(exc.value) is DecryptionError
    assert exc.value.detail == "decryption failed"
    assert str(exc.value) == "decryption failed"
    assert exc.value.__cause__ is None
    assert exc.value.__suppress_context__ or exc.value.__context__ is None


def _leaks(text: str, secret: bytes) -> bool:
    forms = [
        secret.hex(),
        secret.hex().upper(),
        base64.b64encode(secret).decode(),
        base64.urlsafe_b64encode(secret).decode(),
        repr(secret),
        str(list(secret)),
    ]
    return any(form in text for form in forms)


# --- seal / unseal ---------------------------------------------------------------------------------


def test_generate_key() -> None:
    keys = {generate_key() for _ in range(8)}
    assert len(keys) == 8
    assert all(type(k) is bytes and len(k) == KEY_SIZE for k in keys)


def test_constants() -> None:
    assert (KEY_SIZE, FORMAT_VERSION, HEADER_SIZE) == (32, 1, 17)


def test_round_trip() -> None:
    blob = seal(PLAINTEXT, key=KEY, key_version=3, aad=AAD)
    assert unseal(blob, key=KEY, aad=AAD) == PLAINTEXT


def test_round_trip_empty_plaintext_and_empty_aad() -> None:
    blob = seal(b"", key=KEY, key_version=1, aad=b"")
    assert len(blob) == HEADER_SIZE + TAG_SIZE
    assert unseal(blob, key=KEY, aad=b"") == b""


def test_blob_layout() -> None:
    blob = seal(PLAINTEXT, key=KEY, key_version=0x01020304, aad=AAD)
    assert len(blob) == HEADER_SIZE + len(PLAINTEXT) + TAG_SIZE
    assert blob[0] == FORMAT_VERSION == 1
    assert blob[1:5] == bytes([1, 2, 3, 4])
    assert key_version_of(blob) == 0x01020304
    assert PLAINTEXT not in blob


def test_each_seal_uses_a_fresh_nonce() -> None:
    blobs = [seal(PLAINTEXT, key=KEY, key_version=1, aad=AAD) for _ in range(16)]
    assert len({b[5:HEADER_SIZE] for b in blobs}) == 16
    assert len(set(blobs)) == 16


def test_seal_with_nonce_is_deterministic() -> None:
    nonce = bytes(12)
    first = _seal_with_nonce(PLAINTEXT, key=KEY, key_version=1, aad=AAD, nonce=nonce)
    assert first == _seal_with_nonce(PLAINTEXT, key=KEY, key_version=1, aad=AAD, nonce=nonce)
    assert first[5:HEADER_SIZE] == nonce


@pytest.mark.parametrize("key", [b"", bytes(16), bytes(24), bytes(31), bytes(33)])
def test_seal_rejects_wrong_key_length_with_value_error(key: bytes) -> None:
    with pytest.raises(ValueError, match="key must be 32 bytes") as exc:
        seal(PLAINTEXT, key=key, key_version=1, aad=AAD)
    assert not isinstance(exc.value, VaultError)


@pytest.mark.parametrize("version", [0, -1, 2**32, 2**40, True])
def test_seal_rejects_key_version_out_of_range(version: int) -> None:
    with pytest.raises(ValueError, match="key_version") as exc:
        seal(PLAINTEXT, key=KEY, key_version=version, aad=AAD)
    assert not isinstance(exc.value, VaultError)


@pytest.mark.parametrize("version", [1, 2, 2**31, 2**32 - 1])
def test_seal_accepts_the_whole_key_version_range(version: int) -> None:
    blob = seal(PLAINTEXT, key=KEY, key_version=version, aad=AAD)
    assert key_version_of(blob) == version
    assert unseal(blob, key=KEY, aad=AAD) == PLAINTEXT


@pytest.mark.parametrize("nonce", [b"", bytes(8), bytes(11), bytes(13), bytes(16)])
def test_seal_with_nonce_rejects_wrong_nonce_length(nonce: bytes) -> None:
    with pytest.raises(ValueError, match="nonce"):
        _seal_with_nonce(PLAINTEXT, key=KEY, key_version=1, aad=AAD, nonce=nonce)


# --- every failure is the same opaque DecryptionError -------------------------------------------------


def _blob() -> bytes:
    return seal(PLAINTEXT, key=KEY, key_version=1, aad=AAD)


def _flip(blob: bytes, index: int) -> bytes:
    edited = bytearray(blob)
    edited[index] ^= 0x01
    return bytes(edited)


FAILURES: dict[str, tuple[bytes, bytes, bytes]] = {
    "empty blob": (b"", KEY, AAD),
    "one byte": (b"\x01", KEY, AAD),
    "header only": (_blob()[:HEADER_SIZE], KEY, AAD),
    "header and partial tag": (_blob()[: HEADER_SIZE + TAG_SIZE - 1], KEY, AAD),
    "truncated ciphertext": (_blob()[:-1], KEY, AAD),
    "extra byte appended": (_blob() + b"\x00", KEY, AAD),
    "format version 0": (b"\x00" + _blob()[1:], KEY, AAD),
    "format version 2": (b"\x02" + _blob()[1:], KEY, AAD),
    "key version 0 in header": (_blob()[:1] + bytes(4) + _blob()[5:], KEY, AAD),
    "nonce edited": (_flip(_blob(), 5), KEY, AAD),
    "ciphertext edited": (_flip(_blob(), HEADER_SIZE), KEY, AAD),
    "tag edited": (_flip(_blob(), -1), KEY, AAD),
    "wrong key": (_blob(), OTHER_KEY, AAD),
    "wrong aad": (_blob(), KEY, session_aad("user-1", "sess-1", 2)),
    "empty aad": (_blob(), KEY, b""),
    "key of 0 bytes": (_blob(), b"", AAD),
    "key of 16 bytes": (_blob(), KEY[:16], AAD),
    "key of 31 bytes": (_blob(), KEY[:31], AAD),
    "key of 33 bytes": (_blob(), KEY + b"\x00", AAD),
}


@pytest.mark.parametrize(("blob", "key", "aad"), FAILURES.values(), ids=FAILURES.keys())
def test_every_failure_is_an_opaque_decryption_error(blob: bytes, key: bytes, aad: bytes) -> None:
    with pytest.raises(DecryptionError) as exc:
        unseal(blob, key=key, aad=aad)
    _assert_opaque(exc)


def test_bad_tag_is_not_chained_to_the_library_error() -> None:
    with pytest.raises(DecryptionError) as exc:
        unseal(_blob(), key=OTHER_KEY, aad=AAD)
    _assert_opaque(exc)
    assert exc.value.__suppress_context__


@pytest.mark.parametrize(
    "other",
    [
        session_aad("user-2", "sess-1", 1),
        session_aad("user-1", "sess-2", 1),
        session_aad("user-1", "sess-1", 2),
        dek_aad("user-1", 1),
        build_aad("session", "user-1", "sess-1"),
        build_aad("session", "user-1", "sess-1", 1, ""),
    ],
    ids=["other user", "other session", "other version", "dek context", "missing part", "extra part"],
)
def test_a_blob_moved_elsewhere_does_not_open(other: bytes) -> None:
    blob = seal(PLAINTEXT, key=KEY, key_version=1, aad=AAD)
    with pytest.raises(DecryptionError) as exc:
        unseal(blob, key=KEY, aad=other)
    _assert_opaque(exc)


def test_a_wrapped_dek_moved_to_another_user_or_version_does_not_open() -> None:
    blob = seal(generate_key(), key=KEY, key_version=1, aad=dek_aad("user-1", 1))
    for other in (dek_aad("user-2", 1), dek_aad("user-1", 2)):
        with pytest.raises(DecryptionError):
            unseal(blob, key=KEY, aad=other)


@pytest.mark.parametrize("version", [2, 0x100, 0x01000001, 2**32 - 1])
def test_the_header_key_version_is_authenticated(version: int) -> None:
    blob = seal(PLAINTEXT, key=KEY, key_version=1, aad=AAD)
    edited = blob[:1] + version.to_bytes(4, "big") + blob[5:]
    assert key_version_of(edited) == version
    with pytest.raises(DecryptionError) as exc:
        unseal(edited, key=KEY, aad=AAD)
    _assert_opaque(exc)


@pytest.mark.parametrize(
    "blob",
    [b"", bytes(HEADER_SIZE), b"\x01" + bytes(HEADER_SIZE + TAG_SIZE - 2), b"\x02" + bytes(40), bytes(40)],
    ids=["empty", "header only", "one short", "format 2", "key version 0"],
)
def test_key_version_of_rejects_a_malformed_header(blob: bytes) -> None:
    with pytest.raises(DecryptionError) as exc:
        key_version_of(blob)
    _assert_opaque(exc)


# --- associated data ------------------------------------------------------------------------------------


def test_build_aad_encoding() -> None:
    assert build_aad("ctx", "ab", 12) == (
        b"sv-aad-1" + b"\x00\x00\x00\x03ctx" + b"\x00\x00\x00\x02ab" + b"\x00\x00\x00\x0212"
    )
    assert build_aad("ctx") == b"sv-aad-1\x00\x00\x00\x03ctx"
    assert build_aad("c", "é") == b"sv-aad-1\x00\x00\x00\x01c\x00\x00\x00\x02\xc3\xa9"


def test_build_aad_encodes_ints_as_decimal_strings() -> None:
    assert build_aad("c", 7) == build_aad("c", "7")
    assert build_aad("c", -12) == build_aad("c", "-12")
    assert build_aad("c", 0) != build_aad("c", "")


def test_build_aad_is_unambiguous() -> None:
    encodings = {
        build_aad("session", "ab", "c"),
        build_aad("session", "a", "bc"),
        build_aad("session", "abc"),
        build_aad("session", "abc", ""),
        build_aad("session", "", "abc"),
        build_aad("sessiona", "bc"),
        build_aad("session", "a\x00\x00\x00\x01b"),
        build_aad("session", "a", "b"),
    }
    assert len(encodings) == 8


def test_helpers() -> None:
    assert session_aad("u", "s", 3) == build_aad("session", "u", "s", 3)
    assert dek_aad("u", 3) == build_aad("user-dek", "u", 3)
    assert session_aad("u", "s", 3) != dek_aad("u", 3)


def test_build_aad_rejects_bad_parts() -> None:
    with pytest.raises(TypeError):
        build_aad("c", True)
    with pytest.raises(TypeError):
        build_aad("c", b"bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        build_aad(b"c")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="context"):
        build_aad("")


# --- keyring ------------------------------------------------------------------------------------------


def test_generate() -> None:
    ring = Keyring.generate()
    assert ring.versions == (1,)
    assert ring.active_version == 1
    version, key = ring.active_key()
    assert version == 1 and len(key) == KEY_SIZE
    assert ring.key(1) == key
    assert Keyring.generate().key(1) != key


def test_rotate_adds_an_active_version_and_keeps_the_old() -> None:
    ring = Keyring({1: KEY}, active=1)
    rotated = ring.rotate(OTHER_KEY)
    assert rotated.versions == (1, 2)
    assert rotated.active_key() == (2, OTHER_KEY)
    assert rotated.key(1) == KEY
    assert ring.versions == (1,) and ring.active_version == 1  # the original is unchanged
    random = rotated.rotate()
    assert random.versions == (1, 2, 3)
    assert random.active_version == 3
    assert len(random.key(3)) == KEY_SIZE
    assert random.key(3) not in (KEY, OTHER_KEY)


def test_rotate_uses_max_plus_one_after_removals() -> None:
    ring = Keyring({1: KEY, 5: OTHER_KEY}, active=1)
    assert ring.rotate().versions == (1, 5, 6)


@pytest.mark.parametrize(
    ("new_key", "message"),
    [
        (bytes(31), "key 2 is not 32 bytes"),
        (bytes(32), "key 2 is weak"),
        (b"\xaa" * 32, "key 2 is weak"),
        (KEY, "keys 1 and 2 are identical"),
    ],
)
def test_rotate_rejects_a_bad_key(new_key: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Keyring({1: KEY}, active=1).rotate(new_key)


def test_rotate_refuses_past_the_last_version() -> None:
    ring = Keyring({2**32 - 1: KEY}, active=2**32 - 1)
    with pytest.raises(ValueError, match="exhausted"):
        ring.rotate()


def test_remove() -> None:
    ring = Keyring({1: KEY}, active=1).rotate(OTHER_KEY)
    smaller = ring.remove(1)
    assert smaller.versions == (2,)
    assert smaller.active_key() == (2, OTHER_KEY)
    assert ring.versions == (1, 2)
    with pytest.raises(DecryptionError):
        smaller.key(1)


def test_remove_refuses_the_active_version() -> None:
    ring = Keyring({1: KEY}, active=1).rotate(OTHER_KEY)
    with pytest.raises(ValueError, match="active"):
        ring.remove(2)


def test_remove_refuses_an_unknown_version() -> None:
    with pytest.raises(ValueError, match="no key version 9"):
        Keyring({1: KEY}, active=1).remove(9)


@pytest.mark.parametrize("version", [0, 2, 2**32])
def test_key_of_an_unknown_version_is_an_opaque_decryption_error(version: int) -> None:
    with pytest.raises(DecryptionError) as exc:
        Keyring({1: KEY}, active=1).key(version)
    _assert_opaque(exc)


@pytest.mark.parametrize(
    ("keys", "active", "message"),
    [
        ({}, 1, "no keys"),
        ({0: KEY}, 0, "key versions must be"),
        ({2**32: KEY}, 2**32, "key versions must be"),
        ({1: KEY}, 2, "active version 2 has no key"),
        ({1: KEY}, 0, "active version must be"),
        ({1: KEY[:16]}, 1, "key 1 is not 32 bytes"),
        ({1: bytes(32)}, 1, "key 1 is weak"),
        ({1: KEY, 2: KEY}, 1, "keys 1 and 2 are identical"),
    ],
)
def test_constructor_validates(keys: dict[int, bytes], active: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Keyring(keys, active=active)


def test_keyring_is_immutable() -> None:
    ring = Keyring({1: KEY}, active=1)
    with pytest.raises(AttributeError):
        ring._active = 2
    with pytest.raises(AttributeError):
        del ring._keys
    assert copy.copy(ring) is ring
    assert copy.deepcopy(ring) is ring


def test_keyring_equality() -> None:
    assert Keyring({1: KEY}, active=1) == Keyring({1: KEY}, active=1)
    assert Keyring({1: KEY}, active=1) != Keyring({1: OTHER_KEY}, active=1)
    assert Keyring({1: KEY}, active=1) != Keyring({2: KEY}, active=2)
    assert Keyring({1: KEY, 2: OTHER_KEY}, active=1) != Keyring({1: KEY, 2: OTHER_KEY}, active=2)
    assert Keyring({1: KEY}, active=1) != object()
    with pytest.raises(TypeError):
        hash(Keyring({1: KEY}, active=1))


def test_keyring_cannot_be_pickled() -> None:
    ring = Keyring({1: KEY}, active=1)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(TypeError):
            pickle.dumps(ring, protocol=protocol)


# --- keyring JSON ---------------------------------------------------------------------------------


def test_json_round_trip() -> None:
    ring = Keyring({1: KEY, 2: OTHER_KEY}, active=2)
    data = ring.to_json()
    assert isinstance(data, bytes)
    assert json.loads(data) == {
        "format": "session-vault-keyring/1",
        "active": 2,
        "keys": {"1": base64.b64encode(KEY).decode(), "2": base64.b64encode(OTHER_KEY).decode()},
    }
    assert Keyring.from_json(data) == ring
    generated = Keyring.generate().rotate()
    assert Keyring.from_json(generated.to_json()) == generated


def _doc(**changes: object) -> bytes:
    doc: dict[str, object] = {
        "format": "session-vault-keyring/1",
        "active": 1,
        "keys": {"1": base64.b64encode(KEY).decode()},
    }
    doc.update(changes)
    return json.dumps(doc).encode()


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


BAD_JSON: dict[str, tuple[bytes, str]] = {
    "not JSON": (b"{not json", "keyring: not valid UTF-8 JSON"),
    "empty": (b"", "keyring: not valid UTF-8 JSON"),
    "not UTF-8": (b'{"format": "\xff"}', "keyring: not valid UTF-8 JSON"),
    "a list": (b"[]", "keyring: the top level must be a JSON object"),
    "duplicate member": (
        b'{"format": "session-vault-keyring/1", "active": 1, "active": 1, "keys": {}}',
        "keyring: a JSON object has a duplicate member",
    ),
    "missing format": (
        json.dumps({"active": 1, "keys": {"1": _b64(KEY)}}).encode(),
        'keyring: the top level must have exactly "format", "active" and "keys"',
    ),
    "unknown field": (
        _doc(comment="x"),
        'keyring: the top level must have exactly "format", "active" and "keys"',
    ),
    "wrong format tag": (
        _doc(format="session-vault-keyring/2"),
        'keyring: "format" must be "session-vault-keyring/1"',
    ),
    "active a string": (_doc(active="1"), 'keyring: "active" must be an integer in 1..4294967295'),
    "active a bool": (_doc(active=True), 'keyring: "active" must be an integer in 1..4294967295'),
    "active 0": (_doc(active=0), 'keyring: "active" must be an integer in 1..4294967295'),
    "active missing from keys": (_doc(active=2), "keyring: the active version 2 has no key"),
    "keys empty": (_doc(keys={}), 'keyring: "keys" must be a non-empty object'),
    "keys a list": (_doc(keys=[_b64(KEY)]), 'keyring: "keys" must be a non-empty object'),
    "version name not a number": (
        _doc(keys={"one": _b64(KEY)}),
        'keyring: the names in "keys" must be decimal integers in 1..4294967295',
    ),
    "version name with a leading zero": (
        _doc(keys={"01": _b64(KEY)}),
        'keyring: the names in "keys" must be decimal integers in 1..4294967295',
    ),
    "version 0": (
        _doc(keys={"0": _b64(KEY), "1": _b64(OTHER_KEY)}),
        'keyring: the names in "keys" must be decimal integers in 1..4294967295',
    ),
    "version too large": (
        _doc(keys={"1": _b64(KEY), "4294967296": _b64(OTHER_KEY)}),
        'keyring: the names in "keys" must be decimal integers in 1..4294967295',
    ),
    "key not a string": (_doc(keys={"1": 5}), "keyring: key 1 must be a base64 string"),
    "key not base64": (_doc(keys={"1": "not base64!"}), "keyring: key 1 is not valid base64"),
    "key with bad padding": (_doc(keys={"1": _b64(KEY)[:-1]}), "keyring: key 1 is not valid base64"),
    "key with a newline": (_doc(keys={"1": _b64(KEY)[:20] + "\n" + _b64(KEY)[20:]}), "not valid base64"),
    "key of 31 bytes": (_doc(keys={"1": _b64(KEY[:31])}), "keyring: key 1 is not 32 bytes"),
    "key of 33 bytes": (_doc(keys={"1": _b64(KEY + b"!")}), "keyring: key 1 is not 32 bytes"),
    "key all zero": (_doc(keys={"1": _b64(bytes(32))}), "keyring: key 1 is weak (all its bytes are equal)"),
    "key all one byte": (
        _doc(keys={"1": _b64(OTHER_KEY), "2": _b64(b"\x07" * 32)}),
        "keyring: key 2 is weak (all its bytes are equal)",
    ),
    "two identical keys": (
        _doc(keys={"1": _b64(KEY), "3": _b64(KEY)}),
        "keyring: keys 1 and 3 are identical",
    ),
}


@pytest.mark.parametrize(("data", "detail"), BAD_JSON.values(), ids=BAD_JSON.keys())
def test_from_json_rejects_malformed_input_precisely(data: bytes, detail: str) -> None:
    with pytest.raises(ConfigError) as exc:
        Keyring.from_json(data)
    assert detail in exc.value.detail
    assert exc.value.detail.startswith("keyring: ")
    assert exc.value.__cause__ is None
    assert not _leaks(exc.value.detail, KEY) and not _leaks(exc.value.detail, KEY[:31])
    assert not _leaks(repr(exc.value), KEY)


# --- seal_with / unseal_with ------------------------------------------------------------------------


def test_seal_with_uses_the_active_key_and_unseal_with_picks_by_header() -> None:
    ring = Keyring({1: KEY}, active=1)
    old = seal_with(ring, PLAINTEXT, aad=AAD)
    assert key_version_of(old) == 1
    assert unseal(old, key=KEY, aad=AAD) == PLAINTEXT
    ring = ring.rotate(OTHER_KEY)
    new = seal_with(ring, PLAINTEXT, aad=AAD)
    assert key_version_of(new) == 2
    assert unseal(new, key=OTHER_KEY, aad=AAD) == PLAINTEXT
    assert unseal_with(ring, old, aad=AAD) == PLAINTEXT
    assert unseal_with(ring, new, aad=AAD) == PLAINTEXT


def test_unseal_with_an_unknown_or_removed_version_fails_opaquely() -> None:
    ring = Keyring({1: KEY}, active=1).rotate(OTHER_KEY)
    foreign = seal_with(Keyring({3: generate_key()}, active=3), PLAINTEXT, aad=AAD)
    with pytest.raises(DecryptionError) as exc:
        unseal_with(ring, foreign, aad=AAD)
    _assert_opaque(exc)
    blob = seal_with(ring, PLAINTEXT, aad=AAD)
    assert key_version_of(blob) == 2
    with pytest.raises(DecryptionError) as exc:
        unseal_with(ring.rotate().remove(2), blob, aad=AAD)
    _assert_opaque(exc)


def test_unseal_with_failures_are_opaque() -> None:
    ring = Keyring({1: KEY}, active=1)
    blob = seal_with(ring, PLAINTEXT, aad=AAD)
    for bad_blob, aad in [(blob, dek_aad("user-1", 1)), (blob[:10], AAD), (_flip(blob, -3), AAD)]:
        with pytest.raises(DecryptionError) as exc:
            unseal_with(ring, bad_blob, aad=aad)
        _assert_opaque(exc)


# --- nothing leaks ----------------------------------------------------------------------------------


def test_keyring_repr_shows_versions_only() -> None:
    ring = Keyring({1: KEY, 2: OTHER_KEY}, active=2)
    assert repr(ring) == "Keyring(versions=(1, 2), active=2)"
    assert str(ring) == repr(ring)
    for text in (repr(ring), str(ring), f"{ring}", repr([ring]), repr({"k": ring})):
        assert not _leaks(text, KEY)
        assert not _leaks(text, OTHER_KEY)


def test_generated_keyring_repr_leaks_nothing() -> None:
    ring = Keyring.generate().rotate()
    texts = [repr(ring), str(ring), repr([ring])]
    for version in ring.versions:
        assert not any(_leaks(text, ring.key(version)) for text in texts)


def test_secret_bytes_repr_leaks_nothing() -> None:
    secret = SecretBytes(KEY)
    assert repr(secret) == "SecretBytes(<redacted>)"
    assert str(secret) == "SecretBytes(<redacted>)"
    for text in (repr(secret), str(secret), f"{secret}", repr([secret]), repr((secret, 1))):
        assert not _leaks(text, KEY)


def test_errors_leak_nothing() -> None:
    blob = seal(PLAINTEXT, key=KEY, key_version=1, aad=AAD)
    with pytest.raises(DecryptionError) as exc:
        unseal(blob, key=OTHER_KEY, aad=AAD)
    text = repr(exc.value) + str(exc.value) + str(exc.getrepr())
    for secret in (KEY, OTHER_KEY, PLAINTEXT):
        assert not _leaks(text, secret)
    with pytest.raises(ValueError) as value_error:
        seal(PLAINTEXT, key=KEY[:31], key_version=1, aad=AAD)
    assert not _leaks(str(value_error.value), KEY[:31])


# --- SecretBytes ----------------------------------------------------------------------------------


def test_secret_bytes_reveal_and_len() -> None:
    secret = SecretBytes(KEY)
    assert secret.reveal() == KEY
    assert len(secret) == KEY_SIZE
    assert len(SecretBytes(b"")) == 0
    assert not SecretBytes(b"")


def test_secret_bytes_equality() -> None:
    assert SecretBytes(KEY) == SecretBytes(KEY)
    assert SecretBytes(KEY) != SecretBytes(OTHER_KEY)
    assert SecretBytes(KEY) != SecretBytes(KEY[:31])
    assert SecretBytes(KEY) != KEY
    assert KEY != SecretBytes(KEY)


def test_secret_bytes_is_unhashable() -> None:
    with pytest.raises(TypeError):
        hash(SecretBytes(KEY))


def test_secret_bytes_is_immutable() -> None:
    secret = SecretBytes(KEY)
    with pytest.raises(AttributeError):
        secret._value = b"x"
    with pytest.raises(AttributeError):
        del secret._value
    with pytest.raises(AttributeError):
        secret.other = 1
    assert copy.copy(secret) is secret
    assert copy.deepcopy(secret) is secret


def test_secret_bytes_wraps_bytes_only() -> None:
    with pytest.raises(TypeError):
        SecretBytes("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        SecretBytes(32)  # type: ignore[arg-type]


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_secret_bytes_cannot_be_pickled(protocol: int) -> None:
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(SecretBytes(KEY), protocol=protocol)
    with pytest.raises(TypeError):
        pickle.dumps({"dek": SecretBytes(KEY)}, protocol=protocol)
