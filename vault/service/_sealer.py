"""The sealing step: gives committed audit events their place in the hash chain, and signs checkpoints.

It runs after commit, off the hot path, in any vault process (the chain row's lock serialises several).
Nothing it reads from the database is trusted without a key the database does not hold:

- the ``audit_chain`` row carries the vault's MAC (only the genesis row, before the first seal, has
  none, and is accepted only while nothing is sealed and no checkpoint exists);
- the event at the chain's head must carry a valid MAC, the head hash, and link to the event before it,
  and nothing may be sealed past the head;
- an unsealed row whose MAC is wrong was not written by the vault: it is left unsealed (logged once per
  process), which verification reports as an insertion once a settled checkpoint has passed it.

If the chain's state fails, :class:`~vault.errors.AuditChainBroken` is raised and nothing is sealed or
signed: a checkpoint never vouches for a chain a database writer has extended.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import MutableSet
from dataclasses import dataclass

from vault.audit import (
    DEFAULT_SKEW_US,
    GENESIS,
    AuditKeys,
    Checkpoint,
    chain_state_payload,
    checkpoint_hash,
    checkpoint_payload,
    content_bytes,
    digest_content,
    link,
)
from vault.errors import AuditChainBroken
from vault.store import FIRST_ID, ChainState, Store, Tx

__all__ = ["CHAIN_MAC_PURPOSE", "SealResult", "chain_mac", "check_chain", "seal"]

log = logging.getLogger("vault.audit")
CHAIN_MAC_PURPOSE = "audit-chain"
_REPORTED_MAX = 100_000


@dataclass(frozen=True, slots=True)
class SealResult:
    sealed: int
    rejected: int
    checkpoint: Checkpoint | None


def _payload(state: ChainState) -> bytes:
    return chain_state_payload(
        seq=state.seq, head=state.head, checkpoint_id=state.checkpoint_id,
        checkpoint_hash=state.checkpoint_hash, checkpoint_at_us=state.checkpoint_at_us, max_id=state.max_id,
    )  # fmt: skip


def chain_mac(keys: AuditKeys, state: ChainState) -> bytes:
    """The MAC the ``audit_chain`` row must carry for ``state`` (its own ``mac`` is ignored)."""
    return keys.mac(_payload(state), purpose=CHAIN_MAC_PURPOSE)


async def check_chain(tx: Tx, keys: AuditKeys, state: ChainState) -> None:
    """Raise :class:`AuditChainBroken` unless ``state`` (the locked chain row) and its head are genuine."""
    if state.mac is None:
        genesis = ChainState(
            seq=0, head=GENESIS, checkpoint_id=0, checkpoint_hash=GENESIS, checkpoint_at_us=0, max_id=0
        )
        if state != genesis or await tx.audit_checkpoints(after_id=0, limit=1):
            raise AuditChainBroken("the audit_chain row has no MAC but is not the genesis state")
    elif not keys.mac_ok(_payload(state), state.mac, purpose=CHAIN_MAC_PURPOSE):
        raise AuditChainBroken("the audit_chain row fails its MAC")
    # A genuine but older row (replayed) names a checkpoint that is not the newest one.
    newest = await tx.audit_checkpoints(after_id=max(0, state.checkpoint_id - 1), limit=2)
    if state.checkpoint_id == 0:
        pass  # genesis: no checkpoint exists (checked above)
    elif [cp.id for cp in newest] != [state.checkpoint_id] or checkpoint_hash(
        newest[0]
    ) != state.checkpoint_hash:
        raise AuditChainBroken("the audit_chain row does not name the newest checkpoint")
    if state.max_id > await tx.max_event_id():
        raise AuditChainBroken("the audit_chain row's high-water mark is above every event id")
    rows = await tx.sealed_from(max(1, state.seq - 1))
    expected = [s for s in (state.seq - 1, state.seq) if s >= 1]
    if [e.seq for e in rows] != expected:
        if len(rows) > len(expected) or (rows and (rows[-1].seq or 0) > state.seq):
            raise AuditChainBroken(f"an event is sealed past the chain's head (seq {state.seq})")
        raise AuditChainBroken(f"the event at the chain's head (seq {state.seq}) is missing")
    if state.seq == 0:
        return
    head = rows[-1]
    prev = rows[0].hash if state.seq > 1 else GENESIS
    content = content_bytes(head)
    if (
        head.hash != state.head
        or prev is None
        or not keys.mac_ok(content, head.mac)
        or link(prev, state.seq, head.id, digest_content(content)) != head.hash
    ):
        raise AuditChainBroken(f"the event at the chain's head (seq {state.seq}) fails its MAC or hash")


async def seal(
    store: Store,
    keys: AuditKeys,
    *,
    checkpoint_every_us: int,
    now_us: int | None = None,
    batch: int = 5000,
    reported: MutableSet[int] | None = None,
    max_skew_us: int = DEFAULT_SKEW_US,
) -> SealResult:
    """Seal up to ``batch`` events and, if due, sign a checkpoint, in one transaction.

    ``reported`` remembers the rows already logged as refused, so each is logged once per process.
    Raises :class:`AuditChainBroken` (nothing sealed) when the chain's state fails its checks.
    """
    now = time.time_ns() // 1000 if now_us is None else now_us
    async with store.transaction() as tx:
        state = await tx.lock_chain()
        await check_chain(tx, keys, state)
        seq, head, max_id = state.seq, state.head, state.max_id
        sealed: list[tuple[int, int, bytes]] = []
        rejected, after = 0, FIRST_ID
        # Page past rows left unsealed (forged), so any number of them cannot stall the chain.
        while len(sealed) < batch and (page := await tx.unsealed_events(batch, after_id=after)):
            for event in page:
                if len(sealed) == batch:
                    break
                max_id = max(max_id, event.id)
                content = content_bytes(event)  # canonical JSON once: for the MAC and for the chain
                if not keys.mac_ok(content, event.mac):
                    rejected += 1
                    _report(event.id, reported)
                    continue
                seq += 1
                head = link(head, seq, event.id, digest_content(content))
                sealed.append((event.id, seq, head))
            after = page[-1].id
        await tx.seal_events(sealed)
        due = state.checkpoint_id == 0 or now - state.checkpoint_at_us >= checkpoint_every_us
        if state.checkpoint_at_us > now + max_skew_us:
            log.error(
                "audit: the newest checkpoint is dated %d s after this process's clock; signing a new one",
                (state.checkpoint_at_us - now) // 1_000_000,
            )
            due = True
        checkpoint = None
        if due:
            checkpoint = _sign(keys, state.checkpoint_id + 1, now, seq, head, state.checkpoint_hash, max_id)
            await tx.insert_checkpoint(checkpoint)
        new = ChainState(
            seq=seq,
            head=head,
            checkpoint_id=state.checkpoint_id if checkpoint is None else checkpoint.id,
            checkpoint_hash=state.checkpoint_hash if checkpoint is None else checkpoint_hash(checkpoint),
            checkpoint_at_us=state.checkpoint_at_us if checkpoint is None else now,
            max_id=max_id,
        )
        await tx.save_chain(dataclasses.replace(new, mac=chain_mac(keys, new)))
    return SealResult(len(sealed), rejected, checkpoint)


def _report(event_id: int, reported: MutableSet[int] | None) -> None:
    if reported is not None:
        if event_id in reported:
            return
        if len(reported) >= _REPORTED_MAX:
            reported.clear()
        reported.add(event_id)
    log.warning("audit: event id %d has no valid MAC; it is left unsealed", event_id)


def _sign(
    keys: AuditKeys, cid: int, at_us: int, seq: int, head: bytes, prev: bytes, max_id: int
) -> Checkpoint:
    key_id = keys.public_key.key_id
    payload = checkpoint_payload(
        id=cid, at_us=at_us, seq=seq, head=head, prev=prev, key_id=key_id, max_id=max_id
    )
    return Checkpoint(
        id=cid, at_us=at_us, seq=seq, head=head, prev=prev, key_id=key_id, signature=keys.sign(payload),
        max_id=max_id,
    )  # fmt: skip
