"""The sealing step: gives committed audit events their place in the hash chain, and signs checkpoints.

It runs after commit, off the hot path, in any vault process (the chain row's lock serialises several).
An unsealed row whose MAC is wrong was not written by the vault: it is left unsealed, which offline
verification reports as an insertion once a checkpoint has passed it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from vault.audit import (
    AuditKeys,
    Checkpoint,
    checkpoint_hash,
    checkpoint_payload,
    content_bytes,
    digest_content,
    link,
)
from vault.store import ChainState, Store

__all__ = ["SealResult", "seal"]

log = logging.getLogger("vault.audit")


@dataclass(frozen=True, slots=True)
class SealResult:
    sealed: int
    rejected: int
    checkpoint: Checkpoint | None


async def seal(
    store: Store, keys: AuditKeys, *, checkpoint_every_us: int, now_us: int | None = None, batch: int = 5000
) -> SealResult:
    """Seal up to ``batch`` events and, if due, sign a checkpoint, in one transaction."""
    now = time.time_ns() // 1000 if now_us is None else now_us
    async with store.transaction() as tx:
        state = await tx.lock_chain()
        seq, head = state.seq, state.head
        sealed: list[tuple[int, int, bytes]] = []
        rejected, after = 0, 0
        # Page past rows left unsealed (forged), so any number of them cannot stall the chain.
        while len(sealed) < batch and (page := await tx.unsealed_events(batch, after_id=after)):
            for event in page:
                if len(sealed) == batch:
                    break
                content = content_bytes(event)  # canonical JSON once: for the MAC and for the chain
                if not keys.mac_ok(content, event.mac):
                    rejected += 1
                    log.warning("audit: event id %d has no valid MAC; it is left unsealed", event.id)
                    continue
                seq += 1
                head = link(head, seq, event.id, digest_content(content))
                sealed.append((event.id, seq, head))
            after = page[-1].id
        await tx.seal_events(sealed)
        checkpoint = None
        if state.checkpoint_id == 0 or now - state.checkpoint_at_us >= checkpoint_every_us:
            checkpoint = _sign(keys, state.checkpoint_id + 1, now, seq, head, state.checkpoint_hash)
            await tx.insert_checkpoint(checkpoint)
        await tx.save_chain(
            ChainState(
                seq=seq,
                head=head,
                checkpoint_id=state.checkpoint_id if checkpoint is None else checkpoint.id,
                checkpoint_hash=state.checkpoint_hash if checkpoint is None else checkpoint_hash(checkpoint),
                checkpoint_at_us=state.checkpoint_at_us if checkpoint is None else now,
            )
        )
    return SealResult(len(sealed), rejected, checkpoint)


def _sign(keys: AuditKeys, cid: int, at_us: int, seq: int, head: bytes, prev: bytes) -> Checkpoint:
    key_id = keys.public_key.key_id
    payload = checkpoint_payload(id=cid, at_us=at_us, seq=seq, head=head, prev=prev, key_id=key_id)
    return Checkpoint(
        id=cid, at_us=at_us, seq=seq, head=head, prev=prev, key_id=key_id, signature=keys.sign(payload)
    )
