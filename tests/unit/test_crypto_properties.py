"""Property tests for vault.crypto: round trips, and every edit of a blob fails the same way."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from vault.crypto import KEY_SIZE, build_aad, key_version_of, seal, unseal
from vault.errors import DecryptionError

keys = st.binary(min_size=KEY_SIZE, max_size=KEY_SIZE)
key_versions = st.integers(min_value=1, max_value=2**32 - 1)
plaintexts = st.binary(max_size=2048)
aads = st.binary(max_size=256)
aad_parts = st.lists(st.one_of(st.text(max_size=20), st.integers()), max_size=5)


def _fails(blob: bytes, *, key: bytes, aad: bytes) -> None:
    with pytest.raises(DecryptionError) as exc:
        unseal(blob, key=key, aad=aad)
    assert exc.value.detail == "decryption failed"
    assert exc.value.__cause__ is None


@given(plaintext=plaintexts, key=keys, key_version=key_versions, aad=aads)
def test_round_trip(plaintext: bytes, key: bytes, key_version: int, aad: bytes) -> None:
    blob = seal(plaintext, key=key, key_version=key_version, aad=aad)
    assert key_version_of(blob) == key_version
    assert unseal(blob, key=key, aad=aad) == plaintext


@given(plaintext=plaintexts, key=keys, key_version=key_versions, aad=aads, data=st.data())
def test_any_single_bit_flip_fails(
    plaintext: bytes, key: bytes, key_version: int, aad: bytes, data: st.DataObject
) -> None:
    blob = seal(plaintext, key=key, key_version=key_version, aad=aad)
    index = data.draw(st.integers(min_value=0, max_value=len(blob) - 1), label="index")
    bit = data.draw(st.integers(min_value=0, max_value=7), label="bit")
    edited = bytearray(blob)
    edited[index] ^= 1 << bit
    _fails(bytes(edited), key=key, aad=aad)


@given(plaintext=plaintexts, key=keys, key_version=key_versions, aad=aads, data=st.data())
def test_any_truncation_fails(
    plaintext: bytes, key: bytes, key_version: int, aad: bytes, data: st.DataObject
) -> None:
    blob = seal(plaintext, key=key, key_version=key_version, aad=aad)
    length = data.draw(st.integers(min_value=0, max_value=len(blob) - 1), label="length")
    _fails(blob[:length], key=key, aad=aad)


@given(plaintext=plaintexts, key=keys, key_version=key_versions, aad=aads, other=aads)
def test_different_aad_fails(
    plaintext: bytes, key: bytes, key_version: int, aad: bytes, other: bytes
) -> None:
    assume(aad != other)
    blob = seal(plaintext, key=key, key_version=key_version, aad=aad)
    _fails(blob, key=key, aad=other)


@given(plaintext=plaintexts, key=keys, other_key=keys, key_version=key_versions, aad=aads)
def test_different_key_fails(
    plaintext: bytes, key: bytes, other_key: bytes, key_version: int, aad: bytes
) -> None:
    assume(key != other_key)
    blob = seal(plaintext, key=key, key_version=key_version, aad=aad)
    _fails(blob, key=other_key, aad=aad)


@given(context=st.text(min_size=1, max_size=20), parts=aad_parts, other=aad_parts)
def test_build_aad_is_injective(context: str, parts: list[str | int], other: list[str | int]) -> None:
    # ints encode as their decimal string, so compare the parts as strings
    as_text = [str(p) for p in parts]
    other_text = [str(p) for p in other]
    assert (build_aad(context, *parts) == build_aad(context, *other)) == (as_text == other_text)


@given(plaintext=plaintexts, key=keys, key_version=key_versions, parts=aad_parts, other=aad_parts)
def test_blob_bound_to_its_aad_parts(
    plaintext: bytes, key: bytes, key_version: int, parts: list[str | int], other: list[str | int]
) -> None:
    assume([str(p) for p in parts] != [str(p) for p in other])
    blob = seal(plaintext, key=key, key_version=key_version, aad=build_aad("session", *parts))
    _fails(blob, key=key, aad=build_aad("session", *other))
