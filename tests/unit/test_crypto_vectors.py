"""Known-answer tests: the raw AES-256-GCM primitive (GCM spec test cases 13-16) and the vault's own
blob format (tests/vectors/aes_gcm_seal.json, seal_v1)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vault.crypto import FORMAT_VERSION, HEADER_SIZE, build_aad, key_version_of, unseal
from vault.crypto._aead import _seal_with_nonce

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "aes_gcm_seal.json"


@dataclass(frozen=True)
class GcmVector:
    name: str
    key: bytes
    nonce: bytes
    aad: bytes
    plaintext: bytes
    ciphertext: bytes
    tag: bytes


@dataclass(frozen=True)
class SealVector:
    name: str
    key: bytes
    key_version: int
    nonce: bytes
    context: str
    parts: tuple[str | int, ...]
    aad_hex: str
    plaintext: bytes
    blob: bytes


def _load() -> dict[str, object]:
    doc = json.loads(VECTORS.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def _vectors(section: str) -> list[dict[str, object]]:
    block = _load()[section]
    assert isinstance(block, dict)
    assert isinstance(block["source"], str) and block["source"]
    vectors = block["vectors"]
    assert isinstance(vectors, list)
    assert all(isinstance(v, dict) for v in vectors)
    return vectors


def _str(v: dict[str, object], name: str) -> str:
    value = v[name]
    assert isinstance(value, str)
    return value


def _hex(v: dict[str, object], name: str) -> bytes:
    return bytes.fromhex(_str(v, name))


def _gcm_vectors() -> list[GcmVector]:
    return [
        GcmVector(
            name=_str(v, "name"),
            key=_hex(v, "key"),
            nonce=_hex(v, "nonce"),
            aad=_hex(v, "aad"),
            plaintext=_hex(v, "plaintext"),
            ciphertext=_hex(v, "ciphertext"),
            tag=_hex(v, "tag"),
        )
        for v in _vectors("gcm_spec")
    ]


def _part(value: object) -> str | int:
    assert isinstance(value, str | int) and not isinstance(value, bool)
    return value


def _seal_vectors() -> list[SealVector]:
    out = []
    for v in _vectors("seal_v1"):
        aad = v["aad"]
        assert isinstance(aad, dict)
        context = aad["context"]
        parts = aad["parts"]
        key_version = v["key_version"]
        assert isinstance(context, str) and isinstance(parts, list) and isinstance(key_version, int)
        out.append(
            SealVector(
                name=_str(v, "name"),
                key=_hex(v, "key"),
                key_version=key_version,
                nonce=_hex(v, "nonce"),
                context=context,
                parts=tuple(_part(p) for p in parts),
                aad_hex=_str(v, "aad_hex"),
                plaintext=_hex(v, "plaintext"),
                blob=_hex(v, "blob"),
            )
        )
    return out


GCM = _gcm_vectors()
SEAL = _seal_vectors()


def test_the_file_has_enough_vectors() -> None:
    assert [v.name for v in GCM] == ["Test Case 13", "Test Case 14", "Test Case 15", "Test Case 16"]
    assert len(SEAL) >= 4
    assert len({v.blob for v in SEAL}) == len(SEAL)


@pytest.mark.parametrize("v", GCM, ids=[v.name for v in GCM])
def test_gcm_spec_vector_with_the_raw_primitive(v: GcmVector) -> None:
    aead = AESGCM(v.key)
    assert aead.encrypt(v.nonce, v.plaintext, v.aad) == v.ciphertext + v.tag
    assert aead.decrypt(v.nonce, v.ciphertext + v.tag, v.aad) == v.plaintext


@pytest.mark.parametrize("v", GCM, ids=[v.name for v in GCM])
def test_gcm_spec_vector_through_seal_with_nonce(v: GcmVector) -> None:
    # The associated data differs (ours starts with the header), which changes only the tag: the
    # counter-mode ciphertext must be the spec's, and the tag the primitive's over header || aad.
    blob = _seal_with_nonce(v.plaintext, key=v.key, key_version=1, aad=v.aad, nonce=v.nonce)
    header, body = blob[:HEADER_SIZE], blob[HEADER_SIZE:]
    assert header == bytes([FORMAT_VERSION]) + (1).to_bytes(4, "big") + v.nonce
    assert body[: len(v.plaintext)] == v.ciphertext
    assert body == AESGCM(v.key).encrypt(v.nonce, v.plaintext, header + v.aad)
    assert unseal(blob, key=v.key, aad=v.aad) == v.plaintext


@pytest.mark.parametrize("v", SEAL, ids=[v.name for v in SEAL])
def test_seal_v1_vector_is_reproduced_byte_for_byte(v: SealVector) -> None:
    aad = build_aad(v.context, *v.parts)
    assert aad.hex() == v.aad_hex
    blob = _seal_with_nonce(v.plaintext, key=v.key, key_version=v.key_version, aad=aad, nonce=v.nonce)
    assert blob.hex() == v.blob.hex()


@pytest.mark.parametrize("v", SEAL, ids=[v.name for v in SEAL])
def test_seal_v1_vector_unseals(v: SealVector) -> None:
    aad = bytes.fromhex(v.aad_hex)
    assert unseal(v.blob, key=v.key, aad=aad) == v.plaintext
    assert key_version_of(v.blob) == v.key_version


@pytest.mark.parametrize("v", SEAL, ids=[v.name for v in SEAL])
def test_seal_v1_vector_layout_checked_with_the_raw_primitive(v: SealVector) -> None:
    header = v.blob[:HEADER_SIZE]
    assert header[0] == FORMAT_VERSION
    assert int.from_bytes(header[1:5], "big") == v.key_version
    assert header[5:] == v.nonce
    assert len(v.blob) == HEADER_SIZE + len(v.plaintext) + 16
    aad = bytes.fromhex(v.aad_hex)
    assert AESGCM(v.key).decrypt(v.nonce, v.blob[HEADER_SIZE:], header + aad) == v.plaintext
