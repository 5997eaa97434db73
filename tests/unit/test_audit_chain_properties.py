"""Offline verification, as pure properties: an honest log verifies; any single edit to any sealed event,
any deletion, any swap of two events, and any cut of a checkpointed tail does not."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

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

KEYS = AuditKeys.generate()


def _log(n: int, every: int) -> tuple[list[Event], list[Checkpoint]]:
    events: list[Event] = []
    checkpoints: list[Checkpoint] = []
    head, prev_cp = GENESIS, GENESIS
    for i in range(1, n + 1):
        event = Event(id=i * 3, at_us=1_000 + i, action="lease.grant", outcome="ok", user_id=f"u{i % 5}",
                      fencing_token=i, purpose="sign")  # fmt: skip
        head = link(head, i, event.id, content_hash(event))
        events.append(dataclasses.replace(event, seq=i, hash=head))
        if i % every == 0 or i == n:
            cid = len(checkpoints) + 1
            key_id = KEYS.public_key.key_id
            payload = checkpoint_payload(
                id=cid, at_us=2_000 + i, seq=i, head=head, prev=prev_cp, key_id=key_id
            )
            cp = Checkpoint(cid, 2_000 + i, i, head, prev_cp, key_id, KEYS.sign(payload))
            checkpoints.append(cp)
            prev_cp = checkpoint_hash(cp)
    return events, checkpoints


sizes = st.integers(min_value=3, max_value=40)
every = st.integers(min_value=1, max_value=10)


@given(n=sizes, k=every)
def test_an_honest_log_verifies(n: int, k: int) -> None:
    events, checkpoints = _log(n, k)
    report = verify(events, checkpoints, KEYS.public_key)
    assert report.ok and report.sealed == n and report.uncovered == 0


@settings(max_examples=200)
@given(n=sizes, k=every, data=st.data())
def test_any_field_edit_is_caught_as_modified(n: int, k: int, data: st.DataObject) -> None:
    events, checkpoints = _log(n, k)
    i = data.draw(st.integers(0, n - 1))
    name = data.draw(
        st.sampled_from(["at_us", "action", "outcome", "user_id", "fencing_token", "purpose", "detail"])
    )
    old = getattr(events[i], name)
    new = old + 1 if isinstance(old, int) else f"{old}!"
    changes: dict[str, object] = {name: new}
    events[i] = dataclasses.replace(events[i], **changes)  # type: ignore[arg-type]
    problem = verify(events, checkpoints, KEYS.public_key).problem
    assert problem is not None and problem.kind == "modified" and problem.seq == i + 1


@given(n=sizes, k=every, data=st.data())
def test_any_deletion_is_caught(n: int, k: int, data: st.DataObject) -> None:
    events, checkpoints = _log(n, k)
    i = data.draw(st.integers(0, n - 1))
    del events[i]
    problem = verify(events, checkpoints, KEYS.public_key).problem
    assert problem is not None
    assert problem.kind == ("tail_cut" if i == n - 1 else "deleted") and problem.seq == i + 1


@given(n=sizes, k=every, data=st.data())
def test_any_swap_is_caught_as_reordered(n: int, k: int, data: st.DataObject) -> None:
    events, checkpoints = _log(n, k)
    i = data.draw(st.integers(0, n - 2))
    j = data.draw(st.integers(i + 1, n - 1))
    a, b = events[i], events[j]
    events[i], events[j] = dataclasses.replace(b, seq=a.seq), dataclasses.replace(a, seq=b.seq)
    problem = verify(events, checkpoints, KEYS.public_key).problem
    assert problem is not None and problem.kind == "reordered" and problem.seq == i + 1


@given(n=sizes, k=every, data=st.data())
def test_a_forged_or_missing_checkpoint_is_caught(n: int, k: int, data: st.DataObject) -> None:
    events, checkpoints = _log(n, k)
    i = data.draw(st.integers(0, len(checkpoints) - 1))
    expected: str | None
    if data.draw(st.booleans()):
        checkpoints[i] = dataclasses.replace(checkpoints[i], seq=checkpoints[i].seq - 1)
        expected = "checkpoint_forged"
    else:
        del checkpoints[i]
        expected = "checkpoint_deleted" if i < len(checkpoints) else None
    problem = verify(events, checkpoints, KEYS.public_key).problem
    if expected is None:  # the newest checkpoint gone: the log is still consistent, just less covered
        assert problem is None
    else:
        assert problem is not None and problem.kind == expected
