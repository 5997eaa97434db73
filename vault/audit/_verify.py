"""Verification of an audit log against the checkpoint public key (and, when given, the MAC key).

Names the first thing that fails and how:

- ``modified``: an event's content no longer matches the hash the chain vouches for (or, for an event
  nothing downstream vouches for yet, its stored hash: it carries the vault's MAC and uid fields);
- ``deleted``: a sequence number is missing;
- ``inserted``: a row the vault did not seal (a duplicate sequence number, a sealed-looking row without
  a MAC that nothing vouches for, a copy of another event's uid, or an unsealed row that a settled
  checkpoint's high-water mark or time has passed);
- ``reordered``: genuine events stand at each other's places;
- ``tail_cut``: a checkpoint covers events that are gone;
- ``rewritten``: the chain is self-consistent but does not match a signed checkpoint;
- ``checkpoint_forged`` / ``checkpoint_deleted``: a bad signature or a broken checkpoint chain;
- ``future_dated``: an event dated later than the verifier's clock plus the allowed skew;
- ``forged``: (only with the MAC key, i.e. live) an event whose MAC does not verify: its content was not
  written by the vault, even if its chain hash was computed with the public formula.

Events after the newest checkpoint are reported as uncovered: their deletion cannot be proven until
the next checkpoint, which the vault issues every few seconds even when nothing happens.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from vault.audit._chain import (
    GENESIS,
    Checkpoint,
    Event,
    checkpoint_hash,
    checkpoint_payload,
    content_bytes,
    content_hash,
    link,
)
from vault.audit._keys import PublicKey

__all__ = ["DEFAULT_GRACE_US", "DEFAULT_SKEW_US", "MacChecker", "Problem", "Report", "verify"]

DEFAULT_GRACE_US = 60_000_000
DEFAULT_SKEW_US = 300_000_000


class MacChecker(Protocol):
    """What verify needs of the audit keys to check event MACs (``AuditKeys`` is one)."""

    def mac_ok(self, payload: bytes, mac: bytes | None, *, purpose: str = "") -> bool: ...


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str
    seq: int | None
    event_id: int | None
    detail: str

    def __str__(self) -> str:
        where = []
        if self.seq is not None:
            where.append(f"seq {self.seq}")
        if self.event_id is not None:
            where.append(f"event id {self.event_id}")
        return f"{self.kind} at {', '.join(where) or 'checkpoints'}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Report:
    events: int
    sealed: int
    checkpoints: int
    uncovered: int
    problem: Problem | None

    @property
    def ok(self) -> bool:
        return self.problem is None


def _check_checkpoints(checkpoints: list[Checkpoint], key: PublicKey) -> Problem | None:
    prev = GENESIS
    for expected_id, cp in enumerate(checkpoints, start=1):
        if cp.id != expected_id:
            return Problem(
                "checkpoint_deleted", None, None, f"checkpoint {expected_id} is missing (next is {cp.id})"
            )
        payload = checkpoint_payload(
            id=cp.id, at_us=cp.at_us, seq=cp.seq, head=cp.head, prev=cp.prev, key_id=cp.key_id,
            max_id=cp.max_id,
        )  # fmt: skip
        if cp.key_id != key.key_id or not key.verify(cp.signature, payload):
            return Problem("checkpoint_forged", cp.seq, None, f"checkpoint {cp.id} has no valid signature")
        if cp.prev != prev:
            return Problem(
                "checkpoint_forged",
                cp.seq,
                None,
                f"checkpoint {cp.id} does not follow checkpoint {cp.id - 1}",
            )
        prev = checkpoint_hash(cp)
    return None


def _vouched(event: Event, following: Event | None, heads: dict[int, list[bytes]]) -> bool:
    """Does anything downstream (the next link or a checkpoint) confirm this event's stored hash?"""
    if event.hash is None:
        return False
    if event.hash in heads.get(event.seq or 0, []):
        return True
    return following is not None and following.hash == link(
        event.hash, following.seq or 0, following.id, content_hash(following)
    )


def _broken_link(sealed: list[Event], i: int, prev: bytes, heads: dict[int, list[bytes]]) -> Problem:
    event = sealed[i]
    seq = event.seq or 0
    for other in sealed:
        if other is not event and other.hash == link(prev, seq, other.id, content_hash(other)):
            return Problem("reordered", seq, event.id, f"event id {other.id} belongs at seq {seq}")
    following = sealed[i + 1] if i + 1 < len(sealed) else None
    if _vouched(event, following, heads):
        return Problem("modified", seq, event.id, "the event's content differs from what the chain recorded")
    if following is None and event.mac is not None and event.uid is not None:
        # The last sealed event, uncovered: nothing downstream can tell which of its content and its hash
        # changed, but it carries what only the vault writes (a MAC and a uid), so it was the vault's.
        return Problem("modified", seq, event.id, "the last event's content or hash changed since sealing")
    return Problem("inserted", seq, event.id, "nothing in the chain vouches for this event")


def _copies(events: list[Event]) -> Problem | None:
    first: dict[str, int] = {}
    for event in sorted(events, key=lambda e: e.id):
        if event.uid is None:
            continue
        if event.uid in first:
            return Problem(
                "inserted", event.seq, event.id, f"a copy of event id {first[event.uid]} (the same uid)"
            )
        first[event.uid] = event.id
    return None


def _unsealed(unsealed: list[Event], cps: list[Checkpoint], grace_us: int) -> Problem | None:
    """An unsealed event is the vault's only until a settled checkpoint has passed it: by its high-water
    mark (the sealer had seen every id up to it) or, for format-1 checkpoints, by time. A checkpoint is
    settled once a newer one is ``grace_us`` later, so a transaction that committed just after a
    checkpoint is not flagged before the sealer had a chance to seal it."""
    for event in unsealed:
        if event.id <= 0:
            return Problem("inserted", None, event.id, "an event id the vault never assigns (0 or less)")
    if not cps:
        return None
    last = cps[-1]
    settled = [cp for cp in cps if cp.at_us <= last.at_us - grace_us]
    high_water = max((cp.max_id or 0 for cp in settled), default=0)
    for event in sorted(unsealed, key=lambda e: e.id):
        if event.id <= high_water:
            return Problem(
                "inserted",
                None,
                event.id,
                "an event the vault never sealed (below a checkpoint's high-water)",
            )
        if event.at_us < last.at_us - grace_us:
            return Problem("inserted", None, event.id, "an event the vault never sealed")
    return None


def _dated(events: list[Event], now_us: int | None, max_skew_us: int) -> Problem | None:
    if now_us is None:
        return None
    for event in sorted(events, key=lambda e: e.id):
        if event.at_us > now_us + max_skew_us:
            ahead = (event.at_us - now_us) // 1_000_000
            return Problem("future_dated", event.seq, event.id, f"dated {ahead} s after the verifier's clock")
    return None


def _macs(events: list[Event], macs: MacChecker | None) -> Problem | None:
    if macs is None:
        return None
    for event in sorted(events, key=lambda e: (e.seq is None, e.seq or 0, e.id)):
        if not macs.mac_ok(content_bytes(event), event.mac):
            return Problem("forged", event.seq, event.id, "the event's MAC does not verify")
    return None


def verify(
    events: Iterable[Event],
    checkpoints: Iterable[Checkpoint],
    key: PublicKey,
    *,
    grace_us: int = DEFAULT_GRACE_US,
    macs: MacChecker | None = None,
    now_us: int | None = None,
    max_skew_us: int = DEFAULT_SKEW_US,
) -> Report:
    """Verify ``events`` and ``checkpoints`` against ``key``. With ``macs`` (the audit keys: live
    verification) every event's MAC is checked too; with ``now_us`` (the verifier's clock) events dated
    more than ``max_skew_us`` later are flagged. Structural problems are reported before MAC ones."""
    all_events = list(events)
    cps = sorted(checkpoints, key=lambda c: c.id)
    sealed = sorted((e for e in all_events if e.seq is not None), key=lambda e: (e.seq or 0, e.id))
    unsealed = [e for e in all_events if e.seq is None]
    last = cps[-1] if cps else None
    uncovered = len(unsealed) + sum(1 for e in sealed if last is None or (e.seq or 0) > last.seq)

    def report(problem: Problem | None) -> Report:
        return Report(len(all_events), len(sealed), len(cps), uncovered, problem)

    problem = _check_checkpoints(cps, key)
    if problem is not None:
        return report(problem)
    heads: dict[int, list[bytes]] = defaultdict(list)
    for cp in cps:
        heads[cp.seq].append(cp.head)

    prev, expected = GENESIS, 1
    for i, event in enumerate(sealed):
        seq = event.seq or 0
        if seq < expected:
            return report(Problem("inserted", seq, event.id, f"a second event claims seq {seq}"))
        if seq > expected:
            gap = f"seq {expected}" if seq == expected + 1 else f"seq {expected} to {seq - 1}"
            return report(
                Problem("deleted", expected, None, f"{gap} missing; the next event is id {event.id}")
            )
        digest = link(prev, seq, event.id, content_hash(event))
        if digest != event.hash:
            return report(_broken_link(sealed, i, prev, heads))
        if any(head != digest for head in heads.get(seq, [])):
            return report(
                Problem("rewritten", seq, event.id, "the chain here does not match a signed checkpoint")
            )
        prev, expected = digest, expected + 1
    if last is not None and last.seq >= expected:
        return report(
            Problem(
                "tail_cut",
                expected,
                None,
                f"checkpoint {last.id} covers up to seq {last.seq}; the log ends at {expected - 1}",
            )
        )
    return report(
        _copies(all_events)
        or _unsealed(unsealed, cps, grace_us)
        or _dated(all_events, now_us, max_skew_us)
        or _macs(all_events, macs)
    )
