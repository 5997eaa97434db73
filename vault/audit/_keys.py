"""The audit keys: an Ed25519 key that signs checkpoints and an HMAC key for events and identifiers.

Both are separate from the data keys. The file format is JSON, mode 0600 (its reading and writing is
the caller's). Auditors need only the public key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from vault.errors import ConfigError

__all__ = ["AuditKeys", "PublicKey", "subject_hmac"]

_FORMAT = "session-vault-audit-keys/1"


class PublicKey:
    """An Ed25519 checkpoint-verification key, with a short id (the first 8 bytes of its SHA-256, hex)."""

    def __init__(self, key: Ed25519PublicKey) -> None:
        self._key = key
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.key_id = hashlib.sha256(raw).hexdigest()[:16]

    @classmethod
    def from_pem(cls, pem: bytes) -> PublicKey:
        try:
            key = serialization.load_pem_public_key(pem)
        except ValueError:
            raise ConfigError("not a PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError("the audit public key must be Ed25519")
        return cls(key)

    def pem(self) -> str:
        return self._key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()

    def verify(self, signature: bytes, payload: bytes) -> bool:
        try:
            self._key.verify(signature, payload)
        except InvalidSignature:
            return False
        return True

    def __repr__(self) -> str:
        return f"PublicKey(key_id={self.key_id!r})"


def subject_hmac(hmac_key: bytes, normalized: str) -> str:
    """The searchable keyed hash of an identifying value (128 bits, hex)."""
    digest = hmac.new(hmac_key, b"sv-audit-subject-1\x00" + normalized.encode(), hashlib.sha256)
    return digest.hexdigest()[:32]


class AuditKeys:
    def __init__(self, signing_key: Ed25519PrivateKey, hmac_key: bytes) -> None:
        if len(hmac_key) != 32 or len(set(hmac_key)) == 1:
            raise ConfigError("audit keys: the HMAC key must be 32 random bytes")
        self._signing_key = signing_key
        self._hmac_key = hmac_key
        self.public_key = PublicKey(signing_key.public_key())

    @classmethod
    def generate(cls) -> AuditKeys:
        return cls(Ed25519PrivateKey.generate(), os.urandom(32))

    def __repr__(self) -> str:
        return f"AuditKeys(key_id={self.public_key.key_id!r})"

    def __reduce__(self) -> Any:
        raise TypeError("AuditKeys cannot be pickled")

    def sign(self, payload: bytes) -> bytes:
        return self._signing_key.sign(payload)

    def mac(self, payload: bytes, *, purpose: str = "") -> bytes:
        """HMAC-SHA-256 of ``payload``. Events use no ``purpose`` (their content is a JSON object); other
        records the vault authenticates (the chain row, token rows) name theirs, so no MAC of one kind
        is ever valid for another."""
        label = b"sv-audit-mac-1\x00" + (purpose.encode() + b"\x00" if purpose else b"")
        return hmac.new(self._hmac_key, label + payload, hashlib.sha256).digest()

    def mac_ok(self, payload: bytes, mac: bytes | None, *, purpose: str = "") -> bool:
        return mac is not None and hmac.compare_digest(self.mac(payload, purpose=purpose), mac)

    def subject(self, normalized: str) -> str:
        return subject_hmac(self._hmac_key, normalized)

    def to_json(self) -> bytes:
        seed = self._signing_key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        body = {
            "format": _FORMAT,
            "signing_key": base64.b64encode(seed).decode(),
            "hmac_key": base64.b64encode(self._hmac_key).decode(),
        }
        return (json.dumps(body, indent=2) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes) -> AuditKeys:
        try:
            body = json.loads(data)
        except ValueError:
            raise ConfigError("audit keys: not JSON") from None
        if not isinstance(body, dict) or body.get("format") != _FORMAT:
            raise ConfigError(f"audit keys: the format must be {_FORMAT}")
        try:
            seed = base64.b64decode(body["signing_key"], validate=True)
            hmac_key = base64.b64decode(body["hmac_key"], validate=True)
        except (KeyError, TypeError, ValueError):
            raise ConfigError("audit keys: signing_key and hmac_key must be base64") from None
        if len(seed) != 32 or len(set(seed)) == 1:
            raise ConfigError("audit keys: the signing key must be 32 random bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(seed), hmac_key)
