"""KEK rewrap throughput (local keyring vs. Transit), and lease rate with the DEK cache cold vs. warm.

(a) **Rewrap**: ``--users`` users (100,000) each get one DEK row wrapped under the KEK's version 1
(bench/_rewrap_prep.py: the local keyring's own ``wrap``, or Transit ``encrypt`` with ``batch_input``;
bulk-inserted, not ingested). Then, per provider, the vault's own code is timed: ``Vault.from_settings``
(what ``session-vault keys ...`` opens), ``key_admin.rotate_kek`` (untimed), then
``key_admin.rewrap(batch=--batch)``, i.e. ``KeyAdmin.rewrap`` of vault/service/_key_admin.py: read a batch,
rewrap it (local: in process; Transit: ``rewrap`` requests of 100 items), store each result by
compare-and-set and audit the batch. Batch time: between its progress callbacks. CPU: this process (it
runs KeyAdmin), OpenBao, the PostgreSQL backends of the database. Afterwards every row must be under the
new version, and 200 random DEKs must unwrap to the bytes they were made from. The local keyring is the
baseline. ``--reps`` rotates and rewraps again (version 2 to 3, ...); providers alternate.

(b) **Lease rate, DEK cache cold vs. warm, Transit**: two ``session-vault serve`` processes on one
database, ``VAULT_DEK_CACHE_TTL_SECONDS=0`` (every grant unwraps its DEK through Transit) and ``3600``;
``--lease-users`` users ingested over HTTP, each leased once on the warm process (the cache now holds
every DEK), then per concurrency level ``--reps`` timed runs of grant + release cycles on random users
for ``--seconds`` each (after ``--warmup``), the two processes alternating. Transit ``decrypt`` calls
per cycle are counted in OpenBao's audit log.

OpenBao: ``bao server`` (``.venv/bin/bao``) on raft storage in a temp dir with a file audit device,
on loopback, root token; started here and stopped at the end. Run from the repository root::

    .venv/bin/python -m bench.rewrap --out bench/results/rewrap.md
    .venv/bin/python -m bench.rewrap --users 2000 --lease-users 100 --seconds 2 --reps 1   # quick
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import uvloop
from pydantic import SecretStr

from bench._harness import (
    Cpu,
    Percentiles,
    load_average,
    machine_line,
    markdown_table,
    say,
    timed,
    utc_now,
    write_report,
)
from bench._lease_load import ingest_users
from bench._rewrap_parts import (
    Db,
    LeasePlan,
    LeaseResults,
    bao_pid,
    bench_leases,
    insert_keys,
    lease_table,
    median_rate,
    new_db,
    openbao,
    probe,
    wrap_local,
    wrap_transit,
)
from bench._setup import (
    DEFAULT_DATABASE_URL,
    is_local,
    maintenance_url,
    migrate,
    scratch_database,
    secret_files,
    server_version,
    vault_cli,
    vault_env,
    vault_process,
    with_database,
)
from tests._openbao import DurableBao, bao_binary
from vault.crypto import dek_aad, generate_key
from vault.keys import WrappedKey, create_audit_keys_file, create_keyring_file, write_private
from vault.service import Context, Vault
from vault.settings import Settings

CTX = Context(source="cli")


# --- (a) rewrap ----------------------------------------------------------------------------------------


@dataclass
class Rewrap:
    provider: str
    vault: Vault
    db: Db
    users: list[str]
    deks: list[bytes]
    pids: tuple[int, ...]  # OpenBao's, for Transit
    prepared: float  # seconds to wrap and insert the rows
    runs: list[tuple[float, Cpu, list[float]]]  # (seconds, CPU, batch seconds) per rep

    @property
    def median(self) -> tuple[float, Cpu, list[float]]:
        return sorted(self.runs, key=lambda run: run[0])[len(self.runs) // 2]

    @property
    def rate(self) -> float:
        return len(self.users) / self.median[0]


async def prepare(provider: str, settings: Settings, db: Db, n: int, server: DurableBao) -> Rewrap:
    vault = Vault.from_settings(settings, actor_name="bench")
    users = [f"bench-{i:07d}" for i in range(n)]
    deks = [generate_key() for _ in users]
    with timed() as took:
        if provider == "local":
            blobs = await wrap_local(vault.kek, users, deks)
        else:
            blobs = await wrap_transit(server, settings.transit_key or "", users, deks)
        await asyncio.to_thread(insert_keys, db.plain, vault.kek.kek_id, users, blobs)
    pids = (bao_pid(server),) if provider == "transit" else ()
    return Rewrap(provider, vault, db, users, deks, pids, took.seconds, [])


async def rewrap_once(r: Rewrap, admin: psycopg.Connection[Any] | None, batch: int) -> None:
    kek = await r.vault.key_admin.rotate_kek(CTX)
    stamps: list[float] = []
    meter = probe(admin, r.db, r.pids)
    before = meter.snapshot()
    with timed() as took:
        run = await r.vault.key_admin.rewrap(
            CTX, batch=batch, progress=lambda _: stamps.append(time.perf_counter())
        )
    cpu = meter.snapshot() - before
    status = await r.vault.key_admin.status()
    if run.rewrapped != len(r.users) or run.failed or status.stale:
        raise RuntimeError(f"{r.provider}: rewrapped {run.rewrapped} of {len(r.users)}, {run.failed} failed")
    async with r.vault.store.transaction() as tx:  # 200 random DEKs open under the new version
        for i in random.sample(range(len(r.users)), min(200, len(r.users))):
            row = (await tx.user_keys(r.users[i]))[0]
            assert row.kek_version == kek.kek.active_version
            wrapped = WrappedKey(row.kek_id, row.kek_version, row.wrapped_dek)
            assert await r.vault.kek.unwrap(wrapped, aad=dek_aad(r.users[i], 1)) == r.deks[i]
    r.runs.append((took.seconds, cpu, [b - a for a, b in itertools.pairwise(stamps)]))
    rate = len(r.users) / took.seconds
    say(f"  {r.provider}: {len(r.users)} DEKs rewrapped in {took.seconds:.1f} s ({rate:,.0f}/s)")


async def bench_rewrap(
    rewraps: list[Rewrap], admin: psycopg.Connection[Any] | None, args: argparse.Namespace
) -> None:
    for rep in range(args.reps):
        for r in rewraps[rep % 2 :] + rewraps[: rep % 2]:
            await rewrap_once(r, admin, args.batch)


def rewrap_table(rewraps: list[Rewrap]) -> str:
    rows = []
    for r in rewraps:
        (seconds, cpu, batches), base = r.median, rewraps[0].rate
        p = Percentiles.of(batches)
        label = "local keyring" if r.provider == "local" else "Transit (OpenBao, batched)"
        rows.append([label, f"{len(r.users):,}", f"{seconds:.1f}", f"{r.rate:,.0f}", f"{r.rate / base:.2f}",
                     f"{cpu.client:.1f}", f"{cpu.client / len(r.users) * 1e6:.0f}", f"{cpu.vault:.1f}",
                     f"{cpu.postgres:.1f}", f"{cpu.machine:.1f}", f"{p.p50:.0f}", f"{p.p99:.0f}",
                     f"{r.prepared:.1f}"])  # fmt: skip
    heads = ["provider", "users", "seconds", "DEKs/s", "vs. local", "CPU s: bench process (KeyAdmin)",
             "CPU µs/DEK (process)", "CPU s: OpenBao", "CPU s: PostgreSQL", "CPU s: machine",
             "batch p50 ms", "batch p99 ms", "prep s (untimed)"]  # fmt: skip
    return markdown_table(heads, rows)


# --- main ----------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.rewrap", description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=100_000, help="(a): users, one DEK each")
    parser.add_argument(
        "--batch", type=int, default=500, help="(a): KeyAdmin.rewrap batch (the CLI's default)"
    )
    parser.add_argument("--reps", type=int, default=1, help="runs per cell (the median is reported)")
    parser.add_argument("--backend", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument(
        "--database-url", default=DEFAULT_DATABASE_URL, help="PostgreSQL maintenance database"
    )
    parser.add_argument("--lease-users", type=int, default=500, help="(b): users ingested over HTTP")
    parser.add_argument("--concurrency", default="1,16", help="(b): comma-separated levels")
    parser.add_argument("--seconds", type=float, default=5.0, help="(b): length of each timed run")
    parser.add_argument("--warmup", type=float, default=1.0, help="(b): untimed seconds before each run")
    parser.add_argument("--out", type=Path, default=Path("bench/results/rewrap.md"))
    args = parser.parse_args(argv)
    args.levels = tuple(int(c) for c in args.concurrency.split(",") if c.strip())
    if min(args.users, args.batch, args.reps, args.lease_users, *args.levels) < 1 or args.seconds <= 0:
        parser.error("counts, levels and --seconds must be positive")
    return args


def run(args: argparse.Namespace, command: str) -> str:
    load, maintenance = load_average(), maintenance_url(args.database_url)
    with ExitStack() as stack, timed() as total:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sv_rewrap_")))
        template, pg = "", None
        if args.backend == "postgresql":
            template = stack.enter_context(scratch_database(maintenance))
            asyncio.run(migrate(with_database(maintenance, template, driver="postgresql+asyncpg")))
            pg = server_version(with_database(maintenance, template))
        (tmp / "bao").mkdir()
        server = stack.enter_context(openbao(tmp / "bao"))
        bao_version = subprocess.run([bao_binary(), "version"], capture_output=True, text=True).stdout.strip()
        audit_keys, keyring = tmp / "audit-keys.json", tmp / "keyring.json"
        create_audit_keys_file(audit_keys)
        create_keyring_file(keyring)
        admin = (
            stack.enter_context(psycopg.connect(maintenance, autocommit=True))
            if pg and is_local(maintenance)
            else None
        )

        say(f"(a) preparing {args.users:,} DEK rows per provider")
        rewraps: list[Rewrap] = []
        configs: list[tuple[str, Settings, Db]] = []
        for provider in ("local", "transit"):
            db = new_db(stack, args.database_url, template, provider, tmp)
            values: dict[str, Any] = {"database_url": SecretStr(db.vault_url), "audit_keys_file": audit_keys,
                                      "keyring_file": keyring}  # fmt: skip
            if provider == "transit":
                values |= {"kek_provider": "transit", "transit_addr": server.addr, "transit_key": server.key,
                           "transit_token": SecretStr(server.root_token)}  # fmt: skip
            configs.append((provider, Settings.model_validate(values), db))

        async def part_a() -> None:
            try:
                for provider, settings, db in configs:
                    rewraps.append(await prepare(provider, settings, db, args.users, server))
                await bench_rewrap(rewraps, admin, args)
            finally:
                for r in rewraps:
                    await r.vault.close()

        asyncio.run(part_a())

        say(f"(b) lease rate: ingesting {args.lease_users} users")
        db = new_db(stack, args.database_url, template, "lease", tmp)
        token_file = tmp / "transit-token"
        write_private(token_file, server.root_token.encode())
        secrets = secret_files(tmp / "lease") | {
            "VAULT_KEK_PROVIDER": "transit", "VAULT_TRANSIT_ADDR": server.addr,
            "VAULT_TRANSIT_KEY": server.create_key(), "VAULT_TRANSIT_TOKEN_FILE": str(token_file),
        }  # fmt: skip
        signer = vault_cli(["token", "create", "--role", "signer", "--name", "bench-signer"],
                           vault_env(db.vault_url, secrets)).strip()  # fmt: skip
        procs = {name: stack.enter_context(vault_process(db.vault_url, secrets, tmp / f"{name}.log",
                                                         {"VAULT_DEK_CACHE_TTL_SECONDS": ttl}))
                 for name, ttl in (("cold", "0"), ("warm", "3600"))}  # fmt: skip
        users = uvloop.run(ingest_users(procs["warm"], args.lease_users))
        meters = {name: probe(admin, db, (proc.pid,)) for name, proc in procs.items()}
        plan = LeasePlan(args.seconds, args.warmup, args.levels, args.reps)
        leases = uvloop.run(bench_leases(procs, signer, users, plan, meters, server))
    say(f"total {total.seconds:.0f} s")
    return report(args, command, rewraps, leases, machine_line(pg, load), bao_version, total.seconds)


def report(args: argparse.Namespace, command: str, rewraps: list[Rewrap],
           leases: LeaseResults, machine: str, bao: str, total: float) -> str:  # fmt: skip
    local, transit = rewraps
    ratios = ", ".join(f"{median_rate(leases, 'warm', c) / median_rate(leases, 'cold', c):.2f}"
                       f" at concurrency {c}" for c in args.levels)  # fmt: skip
    return "\n".join([
        "# KEK rewrap throughput, and lease rate with the DEK cache cold vs. warm (Transit)", "",
        f"- date: {utc_now()}", f"- command: `{command}`", f"- machine: {machine}",
        f"- database: {args.backend}; OpenBao: {bao}, `bao server` on raft storage with a file audit device,"
        " on loopback (http), root token; started and stopped by the benchmark",
        f"- total wall time {total:.0f} s", "",
        f"## (a) Rewrap of {args.users:,} DEKs after a KEK rotation, `KeyAdmin.rewrap(batch={args.batch})`",
        "",
        "Each user has one DEK row wrapped under KEK version 1, prepared in bulk (local: the provider's own"
        " `wrap`; Transit: `encrypt` with `batch_input`); the KEK is rotated, then the vault's"
        " `KeyAdmin.rewrap` is timed (read a batch, rewrap it — Transit: requests of 100 items — store each"
        " key by compare-and-set, audit the batch). Checked afterwards: every row under the new version,"
        f" 200 random DEKs unwrap to their original bytes. Median of {args.reps} run(s) per provider."
        " CPU: this process (it runs KeyAdmin: the vault's code), OpenBao, the PostgreSQL backends of the"
        " database, and the whole machine (non-idle, includes anything else running).", "",
        rewrap_table(rewraps), "",
        f"Transit / local keyring = {transit.rate / local.rate:.2f} ({transit.rate:,.0f} vs."
        f" {local.rate:,.0f} DEKs/s).", "",
        f"## (b) Lease rate against Transit: DEK cache cold vs. warm ({args.lease_users} users)", "",
        "Two `session-vault serve` processes on one database: `VAULT_DEK_CACHE_TTL_SECONDS=0` (cold: every"
        " grant unwraps the user's DEK through Transit `decrypt`) and `3600` (warm: every user leased once"
        f" before the runs). A cycle is grant + release of a random user; {args.seconds:g} s runs after"
        f" {args.warmup:g} s warm-up, median of {args.reps}, the two alternating. Transit decrypts per cycle"
        " are counted in OpenBao's audit log.", "",
        lease_table(leases), "",
        f"Warm / cold cycles/s: {ratios}.", "",
    ])  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    write_report(run(args, " ".join([".venv/bin/python -m bench.rewrap", *argv])), args.out)


if __name__ == "__main__":
    main()
