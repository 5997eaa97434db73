"""How fast `session-vault audit verify` checks a log: events verified per second over 1,000,000 events.

Builds a chain of realistic events in memory (the shapes the vault writes: grants, releases, ingests),
sealed and checkpointed exactly as the sealer does (a signed checkpoint every 1,000 events), writes it
as an export file, then times (a) verification of the in-memory log and (b) the full CLI path: parse
the export file and verify. Baseline in the same run: hashing the same canonical event bytes with
SHA-256 alone, the floor any chain verification pays.

    .venv/bin/python -m bench.audit_verify [--events 1000000] [--out bench/results/audit_verify.md]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench._harness import machine_line, markdown_table, median_time, timed, utc_now, write_report
from vault.audit import (
    GENESIS,
    AuditKeys,
    Checkpoint,
    Event,
    checkpoint_hash,
    checkpoint_payload,
    content_bytes,
    content_hash,
    link,
    verify,
)
from vault.service import parse_export

ACTIONS = ("lease.grant", "lease.release", "session.ingest", "lease.renew")


def build(n: int, keys: AuditKeys, every: int = 1000) -> tuple[list[Event], list[Checkpoint]]:
    events: list[Event] = []
    checkpoints: list[Checkpoint] = []
    head, cp_prev = GENESIS, GENESIS
    base_us = 1_790_000_000_000_000
    key_id = keys.public_key.key_id
    for i in range(1, n + 1):
        event = Event(
            id=i,
            at_us=base_us + i * 1000,
            action=ACTIONS[i % 4],
            outcome="ok",
            actor_token_id="0123456789abcdef",  # noqa: S106 - a token id, not a secret
            actor_name="signer-1",
            user_id=f"user-{i % 1000:04d}-5b2e-4a51-9d0c-8a3f2b7c1e90",
            session_id="5f0e4c1a-2b3d-4e5f-8a9b-0c1d2e3f4a5b",
            lease_id="9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
            fencing_token=i,
            purpose="sign",
            request_id="req-0001",
            source="10.0.0.7",
        )
        head = link(head, i, i, content_hash(event))
        events.append(dataclasses.replace(event, seq=i, hash=head, mac=keys.mac(content_bytes(event))))
        if i % every == 0 or i == n:
            cid = len(checkpoints) + 1
            at = base_us + i * 1000 + 1
            payload = checkpoint_payload(id=cid, at_us=at, seq=i, head=head, prev=cp_prev, key_id=key_id)
            cp = Checkpoint(
                id=cid, at_us=at, seq=i, head=head, prev=cp_prev, key_id=key_id, signature=keys.sign(payload)
            )
            checkpoints.append(cp)
            cp_prev = checkpoint_hash(cp)
    return events, checkpoints


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", default="bench/results/audit_verify.md")
    args = parser.parse_args()
    keys = AuditKeys.generate()
    with timed() as building:
        events, checkpoints = build(args.events, keys)
    with tempfile.TemporaryDirectory() as tmp:
        export = Path(tmp) / "export.jsonl"
        with export.open("w") as fh:
            fh.write(
                json.dumps(
                    {"type": "public_key", "key_id": keys.public_key.key_id, "pem": keys.public_key.pem()}
                )
                + "\n"
            )
            for event in events:
                fh.write(json.dumps({"type": "event", **event.to_json()}, sort_keys=True) + "\n")
            for cp in checkpoints:
                fh.write(json.dumps({"type": "checkpoint", **cp.to_json()}, sort_keys=True) + "\n")
        size_mb = export.stat().st_size / 1e6
        runs: list[tuple[str, Callable[[], object], Callable[[object], None] | None]] = [
            ("verify (in memory)", lambda: verify(events, checkpoints, keys.public_key), _verified),
            ("parse export + verify (CLI path)", lambda: _from_file(export, keys), _verified),
            (
                "baseline: SHA-256 of each event's canonical bytes",
                lambda: [hashlib.sha256(content_bytes(e)).digest() for e in events],
                None,
            ),
        ]
        times = [(label, median_time(run, args.reps, check)) for label, run, check in runs]
    base = args.events / times[-1][1]
    table = markdown_table(
        ["what", "seconds", "events/s", "vs SHA-256 baseline"],
        [
            [label, f"{secs:.2f}", f"{args.events / secs:,.0f}", f"{args.events / secs / base:.2f}"]
            for label, secs in times
        ],
    )
    text = f"""# audit verify benchmark ({utc_now()})

{args.events:,} events, {len(checkpoints):,} signed checkpoints (one per 1,000 events), \
export {size_mb:.0f} MB; {machine_line()}; median of {args.reps}; building the log took \
{building.seconds:.1f} s.

{table}

Reproduce: `.venv/bin/python -m bench.audit_verify`
"""
    write_report(text, Path(args.out))


def _verified(result: object) -> None:
    assert getattr(result, "ok", False), result


def _from_file(export: Path, keys: AuditKeys) -> object:
    with export.open() as fh:
        events, checkpoints, _ = parse_export(fh)
    return verify(events, checkpoints, keys.public_key)


if __name__ == "__main__":
    main()
