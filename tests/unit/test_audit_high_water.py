"""Offline verification's high-water rule: an unsealed event below a *settled* checkpoint's high-water mark
was inserted behind the vault's back; below an unsettled one, or above every settled one, it may still be
committing. (The same rule on a real database: ``integration/test_audit_integrity.py``.)"""

from __future__ import annotations

import dataclasses
from typing import Any

from vault.audit import (
    GENESIS,
    AuditKeys,
    Checkpoint,
    Event,
    checkpoint_hash,
    checkpoint_payload,
    content_hash,
    link,
    verify,
)


def _signed(keys: AuditKeys, **fields: Any) -> Checkpoint:
    fields |= {"seq": 3, "key_id": keys.public_key.key_id}
    return Checkpoint(**fields, signature=keys.sign(checkpoint_payload(**fields)))


def test_the_high_water_rule_is_positional() -> None:
    keys, head, sealed = AuditKeys.generate(), GENESIS, []
    for i in (1, 2, 3):
        event = Event(id=i, at_us=1_000 + i, action="a", outcome="ok", uid=f"{i:032x}")
        head = link(head, i, i, content_hash(event))
        sealed.append(dataclasses.replace(event, seq=i, hash=head))
    # Checkpoint 1 saw ids up to 4 (id 4 was refused); id 5 committed after it. Both are dated far later.
    late = [Event(id=i, at_us=10**12, action="lease.grant", outcome="ok", uid=f"{i:032x}") for i in (4, 5)]
    first = _signed(keys, id=1, at_us=2_000, head=head, prev=GENESIS, max_id=4)

    def check(second_at: int, unsealed: list[Event]) -> str | None:
        second = _signed(keys, id=2, at_us=second_at, head=head, prev=checkpoint_hash(first), max_id=5)
        problem = verify([*sealed, *unsealed], [first, second], keys.public_key, grace_us=500).problem
        return None if problem is None else str(problem)

    high_water = "an event the vault never sealed (below a checkpoint's high-water)"
    assert check(2_600, late) == f"inserted at event id 4: {high_water}"
    assert check(2_400, late) is None  # checkpoint 1 is not settled yet: id 4 may still be committing
    assert check(2_600, late[1:]) is None  # id 5 is above every settled high-water mark
