"""``session-vault keys ...`` and ``session-vault users ...``: key management from the command line.

The commands open the vault's runtime from the same settings as ``serve`` (or a ``--data-dir``) and
call the same service as the admin API, so a rotation made here is what every running replica picks
up: new data keys are wrapped under the new version at once (the local keyring file is re-read when it
changes; Transit always encrypts under its newest version).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from vault.errors import InvalidRequest
from vault.service import Context, KeysStatus, RewrapProgress, Vault
from vault.settings import Settings

__all__ = ["add_key_commands"]

SettingsOf = Callable[[argparse.Namespace], Settings]
WithDataDir = Callable[[argparse.ArgumentParser], argparse.ArgumentParser]


def _status_doc(status: KeysStatus) -> dict[str, Any]:
    kek = status.kek
    return {
        "kek_id": kek.kek_id,
        "active_version": kek.active_version,
        "min_decryption_version": kek.min_decryption_version,
        "versions": list(kek.versions),
        "deks": [{"kek_id": c.kek_id, "kek_version": c.kek_version, "deks": c.deks} for c in status.counts],
        "total": status.total,
        "stale": status.stale,
        "foreign": status.foreign,
    }


def _print_status(status: KeysStatus, as_json: bool) -> None:
    if as_json:
        print(json.dumps(_status_doc(status)))
        return
    kek = status.kek
    print(f"KEK {kek.kek_id}: active version {kek.active_version}, can unwrap {list(kek.versions)}")
    for count in status.counts:
        mark = " (active)" if (count.kek_id, count.kek_version) == (kek.kek_id, kek.active_version) else ""
        print(f"  {count.kek_id} version {count.kek_version}: {count.deks} data keys{mark}")
    done = status.total - status.stale - status.foreign
    share = 100.0 if status.total == 0 else 100.0 * done / status.total
    print(f"rewrap: {done} of {status.total} data keys under the active version ({share:.1f}%)")
    if status.foreign:
        print(f"warning: {status.foreign} data keys are under another KEK id and cannot be rewrapped here")


class _Progress:
    """A progress bar with an ETA on a terminal (tqdm); a plain line per batch otherwise."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._shown = 0
        self._started = time.monotonic()

    def __call__(self, run: RewrapProgress) -> None:
        if sys.stderr.isatty():
            if self._bar is None:
                from tqdm import tqdm

                self._bar = tqdm(total=run.remaining, unit="key", desc="rewrap", file=sys.stderr)
            self._bar.update(run.done - self._shown)
        elif run.batches:
            rate = run.done / max(time.monotonic() - self._started, 1e-9)
            print(f"rewrap: {run.done} of {run.remaining} ({rate:.0f}/s)", file=sys.stderr, flush=True)
        self._shown = run.done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def add_key_commands(
    sub: Any, with_data_dir: WithDataDir, settings_of: SettingsOf, ctx: Context, actor: Callable[[], str]
) -> None:
    """Add the ``keys`` and ``users`` command groups to the CLI's subparsers."""

    def opened(args: argparse.Namespace) -> Vault:
        return Vault.from_settings(settings_of(args), actor_name=actor())

    async def using(args: argparse.Namespace, step: Callable[[Vault], Any]) -> Any:
        vault = opened(args)
        try:
            return await step(vault)
        finally:
            await vault.close()

    def status(args: argparse.Namespace) -> None:
        _print_status(asyncio.run(using(args, lambda v: v.key_admin.status())), args.json)

    def rotate(args: argparse.Namespace) -> None:
        result = asyncio.run(using(args, lambda v: v.key_admin.rotate_kek(ctx)))
        print(f"KEK {result.kek.kek_id}: version {result.kek.active_version} is active", file=sys.stderr)
        if result.stale:
            print(f"{result.stale} data keys are under older versions: run `keys rewrap`", file=sys.stderr)

    def rewrap(args: argparse.Namespace) -> None:
        progress = _Progress()
        try:
            run = asyncio.run(
                using(
                    args, lambda v: v.key_admin.rewrap(ctx, batch=args.batch, dry_run=args.dry_run,
                                                       progress=progress)
                )
            )  # fmt: skip
        finally:
            progress.close()
        verb = "would rewrap" if run.dry_run else "rewrapped"
        count = run.skipped if run.dry_run else run.rewrapped
        print(f"{verb} {count} data keys in {run.batches} batches; {run.failed} failed", file=sys.stderr)
        if run.failed:
            sys.exit(3)

    def retire(args: argparse.Namespace) -> None:
        result = asyncio.run(using(args, lambda v: v.key_admin.retire_kek(ctx, args.version)))
        print(f"KEK {result.kek.kek_id}: versions up to {args.version} retired", file=sys.stderr)

    def rotate_dek(args: argparse.Namespace) -> None:
        done = asyncio.run(using(args, lambda v: v.key_admin.rotate_dek(ctx, args.user_id)))
        print(f"data key version {done.dek_version}: {done.sessions} sessions re-encrypted", file=sys.stderr)

    def shred(args: argparse.Namespace) -> None:
        if not args.yes:
            if not sys.stdin.isatty():
                raise InvalidRequest("shredding cannot be undone: pass --yes when not on a terminal")
            print(f"Shred every data key and stored session of {args.user_id}? This cannot be undone.",
                  file=sys.stderr)  # fmt: skip
            if input("Type the user id to confirm: ").strip() != args.user_id:
                print("not confirmed; nothing was changed", file=sys.stderr)
                sys.exit(1)
        done = asyncio.run(using(args, lambda v: v.key_admin.shred(ctx, args.user_id)))
        print(f"shredded: {done.sessions} sessions, {done.keys} data keys; {done.leases} leases ended",
              file=sys.stderr)  # fmt: skip

    keys = sub.add_parser("keys", help="key-encryption keys: status, rotation, rewrap, retirement")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    p = with_data_dir(keys_sub.add_parser("status", help="data keys per KEK version, rewrap progress"))
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=status)
    with_data_dir(keys_sub.add_parser("rotate-kek", help="make a new KEK version active")).set_defaults(
        func=rotate
    )
    p = with_data_dir(keys_sub.add_parser("rewrap", help="rewrap every data key under an older KEK version"))
    p.add_argument("--batch", type=int, default=500, help="data keys per KMS call (default 500)")
    p.add_argument("--dry-run", action="store_true", help="count what would be rewrapped; change nothing")
    p.set_defaults(func=rewrap)
    p = with_data_dir(
        keys_sub.add_parser("retire-kek", help="stop VERSION and older from unwrapping (refused while used)")
    )
    p.add_argument("version", type=int)
    p.set_defaults(func=retire)

    users = sub.add_parser("users", help="a user's data: DEK rotation, crypto-shredding")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    p = with_data_dir(users_sub.add_parser("rotate-dek", help="re-encrypt a user's sessions under a new DEK"))
    p.add_argument("user_id")
    p.set_defaults(func=rotate_dek)
    p = with_data_dir(users_sub.add_parser("shred", help="destroy a user's data keys and sessions"))
    p.add_argument("user_id")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=shred)
