"""Audit events, their hash chain and signed checkpoints: pure functions over values.

An event's *content* is every field but its id, sequence number and hashes, as canonical JSON. The
vault MACs the content when it writes the event (so a row inserted behind its back is never sealed),
and a sealing step later gives each event the next sequence number and the chain hash. The content
includes ``uid``, 128 random bits per event, so a copy of a genuine row is a duplicate, not a new event
(events written before uids existed have none, and their content is the format-1 field list).

    hash(seq) = SHA-256("sv-audit-chain-1" || hash(seq - 1) || seq || id || SHA-256(content))

with 32 zero bytes before the first. Checkpoints sign (with Ed25519) the chain head at a moment, the
highest event id the sealer had seen (``max_id``: an unsealed event below it was refused, or had not
committed yet) and the previous checkpoint's hash, so a cut tail or a rewritten chain is visible to
anyone with the public key.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "CONTENT_FIELDS",
    "GENESIS",
    "Checkpoint",
    "Event",
    "chain_state_payload",
    "checkpoint_hash",
    "checkpoint_payload",
    "content_bytes",
    "content_hash",
    "digest_content",
    "link",
]

GENESIS = bytes(32)


@dataclass(frozen=True, slots=True)
class Event:
    """One audit event as stored. ``seq`` and ``hash`` are None until the event is sealed."""

    id: int
    at_us: int
    action: str
    outcome: str
    uid: str | None = None
    actor_token_id: str | None = None
    actor_name: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    lease_id: str | None = None
    fencing_token: int | None = None
    purpose: str | None = None
    detail: str | None = None
    request_id: str | None = None
    source: str | None = None
    subjects: str | None = None
    seq: int | None = None
    hash: bytes | None = field(default=None, repr=False)
    mac: bytes | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["hash"] = None if self.hash is None else self.hash.hex()
        out["mac"] = None if self.mac is None else self.mac.hex()
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Event:
        values = dict(data)
        for name in ("hash", "mac"):
            values[name] = None if values.get(name) is None else bytes.fromhex(values[name])
        return cls(**values)


# The event's fields are declared once, by Event: its content is every field but the row id, the MAC and
# the two the sealer sets. The store's AuditRecord and the table's columns are checked against these
# (tests/unit/test_audit_schema.py); format-1 content (events from before uids) lacks ``uid``.
CHAIN_FIELDS = ("seq", "hash")
CONTENT_FIELDS = tuple(f for f in Event.__dataclass_fields__ if f not in ("id", "mac", *CHAIN_FIELDS))
_FORMAT1_FIELDS = tuple(f for f in CONTENT_FIELDS if f != "uid")


def content_bytes(fields: Any) -> bytes:
    """Canonical JSON of an event's content; ``fields`` is an Event or a mapping with CONTENT_FIELDS.
    An event without a uid (written before uids existed) has the format-1 content, without the field."""
    get = fields.get if isinstance(fields, dict) else lambda name: getattr(fields, name)
    names = _FORMAT1_FIELDS if get("uid") is None else CONTENT_FIELDS
    body = {name: get(name) for name in names}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def content_hash(fields: Any) -> bytes:
    return digest_content(content_bytes(fields))


def digest_content(content: bytes) -> bytes:
    """SHA-256 of canonical content bytes (for callers that already have them)."""
    return hashlib.sha256(b"sv-audit-event-1\x00" + content).digest()


def link(prev: bytes, seq: int, event_id: int, digest: bytes) -> bytes:
    """The chain hash of the event at ``seq``, given the previous hash and the event's content hash."""
    return hashlib.sha256(
        b"sv-audit-chain-1\x00" + prev + seq.to_bytes(8, "big") + event_id.to_bytes(8, "big") + digest
    ).digest()


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed statement: at ``at_us`` the chain's head was ``head`` at ``seq``; before me came ``prev``."""

    id: int
    at_us: int
    seq: int
    head: bytes
    prev: bytes
    key_id: str
    signature: bytes = field(repr=False)
    max_id: int | None = None  # None in format-1 checkpoints, signed before high-water marks existed

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at_us": self.at_us,
            "seq": self.seq,
            "head": self.head.hex(),
            "prev": self.prev.hex(),
            "key_id": self.key_id,
            "signature": self.signature.hex(),
            "max_id": self.max_id,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Checkpoint:
        return cls(
            id=int(data["id"]),
            at_us=int(data["at_us"]),
            seq=int(data["seq"]),
            head=bytes.fromhex(data["head"]),
            prev=bytes.fromhex(data["prev"]),
            key_id=str(data["key_id"]),
            signature=bytes.fromhex(data["signature"]),
            max_id=None if data.get("max_id") is None else int(data["max_id"]),
        )


def checkpoint_payload(
    *,
    id: int,  # noqa: A002 - the checkpoint's id
    at_us: int,
    seq: int,
    head: bytes,
    prev: bytes,
    key_id: str,
    max_id: int | None = None,
) -> bytes:
    """The bytes a checkpoint's signature covers (format 2 with ``max_id``, format 1 without)."""
    body: dict[str, Any] = {
        "v": "sv-audit-checkpoint-1",
        "id": id,
        "at_us": at_us,
        "seq": seq,
        "head": head.hex(),
        "prev": prev.hex(),
        "key_id": key_id,
    }
    if max_id is not None:
        body |= {"v": "sv-audit-checkpoint-2", "max_id": max_id}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def checkpoint_hash(checkpoint: Checkpoint) -> bytes:
    """What the next checkpoint's ``prev`` must be."""
    payload = checkpoint_payload(
        id=checkpoint.id, at_us=checkpoint.at_us, seq=checkpoint.seq, head=checkpoint.head,
        prev=checkpoint.prev, key_id=checkpoint.key_id, max_id=checkpoint.max_id,
    )  # fmt: skip
    return hashlib.sha256(payload + checkpoint.signature).digest()


def chain_state_payload(
    *, seq: int, head: bytes, checkpoint_id: int, checkpoint_hash: bytes, checkpoint_at_us: int, max_id: int
) -> bytes:
    """The bytes the vault MACs for the ``audit_chain`` row, so a database writer cannot move the head."""
    body = {
        "v": "sv-audit-chain-state-1",
        "seq": seq,
        "head": head.hex(),
        "checkpoint_id": checkpoint_id,
        "checkpoint_hash": checkpoint_hash.hex(),
        "checkpoint_at_us": checkpoint_at_us,
        "max_id": max_id,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
