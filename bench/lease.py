"""Lease-and-release cycles: the real vault over HTTP (one and two processes) against its own statements.

What it measures, per concurrency level ``c`` (``c`` workers, each looping for ``--seconds``):

* ``vault, 1 proc`` / ``vault, 2 procs``: a cycle is ``POST /v1/users/{u}/lease``
  ``{"purpose": "bench", "ttl_seconds": 30}`` then ``POST /v1/leases/{id}/release`` ``{"fencing_token"}``
  with a signer token, for a user ``u`` drawn at random from ``--users`` (1,000: contention is rare), to
  real ``session-vault serve`` processes (uvicorn, FastAPI, the vault's store on asyncpg, AES-GCM
  decrypt of the ~7.7 KB session, audit events, PostgreSQL). With two processes every worker has a
  connection to each and alternates: cycle k leases on process k mod 2 and releases on the other. The
  client is a minimal HTTP/1.1 client (bench/_http1.py) on uvloop: httpx would take a third of a core
  from the vault.
* ``baseline asyncpg``: the floor under the same cycles, in this process with no HTTP: the vault's own
  statements through ``vault.store`` (a ``Store`` with its asyncpg pool of ``min(c, 20)``, the default
  pools of two vault processes, and the ``Tx`` methods the lease service calls): the token lookup (its
  own transaction, as the vault does for every request), the grant transaction (peek, lock the session
  row, insert the lease, insert the audit event, decrypt the session), another token lookup, and the
  release transaction (lock the lease, end it, insert the audit event). Being the vault's statements,
  the baseline cannot drift from the vault's SQL. See bench/_lease_baseline.py for exactly what it
  does and leaves out (the token's hash and MAC checks, the audit MAC).

A ``409 lease_held`` is counted apart and the worker moves on to another user; any other non-2xx is
counted as an error (a run with no cycle at all, or with more than 1,000 errors, aborts). Grant latency
is the grant request's round trip (vault) or token lookup + grant transaction (baseline). CPU ms per
cycle: of the path's vault processes, of the PostgreSQL backends serving the path's database, of this
process (the client; for the baseline it is the store doing the work), their sum (what the path costs,
whatever else runs on the machine), and of the whole machine (``/proc/stat``, non-idle).

``--audit-sealing on,off`` runs every vault path twice, with ``VAULT_AUDIT_SEAL_INTERVAL_SECONDS`` set to
1 and to "off" in the processes' environment (issue 4: the audit chain's sealing step). "Off" is 0 where
``serve`` accepts 0, else the longest interval the setting accepts (3600 s: the sealer seals once at
start-up, then sleeps through the run, which must be shorter). Until
the vault has that setting (``Settings.model_fields``) only ``on`` is possible and the variable is not
set (the vault forbids unknown ``VAULT_*`` variables). ``--whatif`` runs every vault path once per
variant of bench/whatif.py (experimental changes patched in, to measure what they would gain).

Set-up (not timed): a scratch database, migrated (``session-vault db upgrade``), a signer token
(``session-vault token create``, i.e. ``vault.service.create_token`` against the store), and 1,000 users
with one session each, ingested through the public endpoint of a vault process. Every path then gets its
own copy of that database (``CREATE DATABASE ... TEMPLATE``) and its own processes, started once and kept
for the whole run, so the runs of all paths alternate and no path's background work (a sealer) touches
another's rows. With ``1 proc`` the path's second process stays up but idle (apart from background work;
its CPU is counted). The databases ``sv_bench_<pid>*`` are dropped at the end. Run from the repository
root (~2 minutes on 2 cores with sealing on only, ~3.7 with on and off)::

    .venv/bin/python -m bench.lease --concurrency 1,16,64 \\
        --database-url postgresql://postgres@127.0.0.1:5432/postgres --out bench/results/lease.md

The shared timing, CPU and table code is bench/_harness.py; the load is bench/_lease_load.py, the
report bench/_lease_report.py.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import uvloop

from bench._harness import Probe, load_average, say, timed, write_report
from bench._http1 import Http1
from bench._lease_baseline import BASELINE, POOL, Baseline, Caller, baseline_cycle, dek_cache
from bench._lease_load import Cycle, Plan, Results, Run, measure, prepare, vault_cycle
from bench._lease_report import SEAL_ENV, SEAL_ON, SEAL_SETTING, ReportInfo, report
from bench._setup import (
    DEFAULT_DATABASE_URL,
    VaultProcess,
    database_copy,
    is_local,
    maintenance_url,
    server_version,
    vault_process,
    with_database,
)
from bench.whatif import parse as parse_whatif
from vault.errors import ConfigError
from vault.keys import DekCache
from vault.settings import Settings

SEAL_MODES = ("on", "off")


def sealing_supported() -> bool:
    """Whether this vault knows the audit sealing interval setting yet (issue 4)."""
    return SEAL_SETTING in Settings.model_fields


def never_interval() -> str:
    """The longest sealing interval the setting accepts (its ``le`` bound: 3600 s), else 1000000 s."""
    for rule in Settings.model_fields[SEAL_SETTING].metadata:
        bound = getattr(rule, "le", None)
        if isinstance(bound, int | float):
            return f"{bound:g}"
    return "1000000"


def off_value(secrets: dict[str, str]) -> str:
    """``0`` if ``serve`` accepts it; else the longest interval it accepts, longer than a run (the sealer
    seals once when the process starts, then sleeps through the benchmark)."""
    values: dict[str, object] = {k.removeprefix("VAULT_").lower(): v for k, v in secrets.items()}
    values |= {"database_url": "postgresql+asyncpg://bench@127.0.0.1/bench", SEAL_SETTING: 0}
    try:
        Settings.model_validate(values).check_production()
    except (ConfigError, ValueError) as exc:
        if SEAL_ENV in str(exc) or SEAL_SETTING in str(exc):
            return never_interval()
        raise
    return "0"


# --- paths and runs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchPath:
    """One way of running cycles: a vault (sealing mode, processes used) or the baseline."""

    name: str
    sealing: str  # "on", "off", or "" for the baseline
    db_url: str  # plain postgresql:// URL of the path's own database
    procs: tuple[VaultProcess, ...] = ()  # the processes requests go to
    all_pids: tuple[int, ...] = ()  # every vault process of the path's database (CPU is theirs)
    whatif: str = ""  # experimental changes (bench/whatif.py)


@dataclass(frozen=True)
class Setup:
    users: list[str]
    token: str
    caller: Caller
    admin: psycopg.Connection[Any] | None  # to the maintenance database, if the server is on this host
    keyring: Path  # the vault's keyring file (the baseline unwraps the DEKs with it)
    cache: DekCache  # the baseline's DEK cache, kept across its runs as a vault process keeps its own


async def one_run(path: BenchPath, setup: Setup, plan: Plan, c: int) -> Run:
    what = f"{path.name} [{path.sealing}] c={c}"
    probe = Probe(setup.admin, urlsplit(path.db_url).path.lstrip("/"), path.all_pids)
    if not path.procs:
        store_url = path.db_url.replace("postgresql://", "postgresql+asyncpg://", 1)
        baseline = Baseline.connect(store_url, min(c, POOL), setup.keyring, setup.cache, setup.caller)
        try:
            return await measure([baseline_cycle(baseline)] * c, setup.users, plan, probe, what)
        finally:
            await baseline.close()
    async with AsyncExitStack() as stack:
        cycles: list[Cycle] = []
        for i in range(c):
            conns = [Http1(p.host, p.port, setup.token) for p in path.procs]
            for conn in conns:
                stack.push_async_callback(conn.close)
            cycles.append(vault_cycle(conns[i % len(conns) :] + conns[: i % len(conns)]))
        return await measure(cycles, setup.users, plan, probe, what)


def progress(path: BenchPath, c: int, rep: int, run: Run) -> None:
    extra = f"  409 x{run.tally.held}" if run.tally.held else ""
    if run.tally.errors:
        extra += f"  errors {dict(run.tally.errors)}"
    grant = run.percentiles
    say(
        f"  {path.name:<17} {path.sealing or '-':<3} c={c:<3} rep {rep}: {run.rate:7.0f}/s"
        f"  grant p50 {grant.p50:6.1f} p90 {grant.p90:6.1f} p99 {grant.p99:6.1f} ms"
        f"  CPU ms/cycle vault {run.cpu_ms(run.cpu.vault):5.2f} pg {run.cpu_ms(run.cpu.postgres):5.2f}"
        f" client {run.cpu_ms(run.cpu.client):5.2f} machine {run.cpu_ms(run.cpu.machine):5.2f}{extra}"
    )


async def bench_all(paths: Sequence[BenchPath], setup: Setup, plan: Plan) -> Results:
    """Every (path, level) ``plan.reps`` times; within a level the paths alternate, in a rotating order."""
    results: Results = {}
    for c in plan.levels:
        for rep in range(plan.reps):
            shift = rep % len(paths)
            for path in [*paths[shift:], *paths[:shift]]:
                run = await one_run(path, setup, plan, c)
                progress(path, c, rep + 1, run)
                results.setdefault((path.name, path.sealing, c), []).append(run)
    return results


def vault_path_name(n: int, whatif: str = "") -> str:
    return f"vault, {n} proc{'s' if n > 1 else ''}" + (f" [{whatif}]" if whatif else "")


def db_check(db_url: str) -> tuple[int, int, int]:
    """(leases granted, leases still open, audit events) in a path's database."""
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM leases), (SELECT count(*) FROM leases WHERE ended_us IS NULL),"
            " (SELECT count(*) FROM audit_events)"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


# --- main ----------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.lease", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each timed run")
    parser.add_argument("--warmup", type=float, default=1.0, help="untimed seconds before each run")
    parser.add_argument("--reps", type=int, default=3, help="runs per cell (the median is reported)")
    parser.add_argument("--concurrency", default="1,16,64", help="comma-separated concurrency levels")
    parser.add_argument("--procs", default="1,2", help="comma-separated vault process counts")
    parser.add_argument("--users", type=int, default=1000, help="users, one session each")
    parser.add_argument(
        "--audit-sealing",
        default=None,
        help="comma-separated on/off (default: on,off once the vault has the setting, else on)",
    )
    parser.add_argument(
        "--database-url",
        default=DEFAULT_DATABASE_URL,
        help="maintenance database; the scratch databases are created next to it",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/lease.md"))
    parser.add_argument(
        "--whatif",
        default="none",
        help="comma-separated vault variants, each none or changes of bench/whatif.py joined by +"
        " (e.g. none,token-cache): every vault path runs once per variant",
    )
    args = parser.parse_args(argv)
    try:
        args.variants = tuple("+".join(parse_whatif(v)) for v in args.whatif.split(",") if v.strip())
    except SystemExit as exc:
        parser.error(str(exc))
    args.levels = tuple(int(c) for c in args.concurrency.split(",") if c.strip())
    args.proc_counts = tuple(int(n) for n in args.procs.split(",") if n.strip())
    supported = sealing_supported()
    given = args.audit_sealing or ("on,off" if supported else "on")
    args.sealing = tuple(dict.fromkeys(m.strip() for m in given.split(",") if m.strip()))
    if not args.sealing or not set(args.sealing) <= set(SEAL_MODES):
        parser.error("--audit-sealing takes on, off or on,off")
    if "off" in args.sealing and not supported:
        parser.error(f"the vault has no {SEAL_SETTING} setting yet: only --audit-sealing on is possible")
    if (
        args.seconds <= 0
        or args.warmup < 0
        or args.reps < 1
        or args.users < 1
        or not args.levels
        or min(args.levels) < 1
        or not args.proc_counts
        or min(args.proc_counts) < 1
    ):
        parser.error("--seconds, --reps, --users, every concurrency level and process count must be positive")
    return args


def run_benchmark(plan: Plan, database_url: str, command: str) -> str:
    maintenance = maintenance_url(database_url)
    load = load_average()
    supported = sealing_supported()
    with timed() as total, ExitStack() as stack:
        prepared = prepare(stack, maintenance, plan.users)
        template, tmp, secrets = prepared.db_name, prepared.tmp, prepared.secrets
        pg_version = server_version(with_database(maintenance, template))
        say(f"{plan.users} users ingested in {total.seconds:.1f} s")
        seal_env = {"on": SEAL_ON, "off": off_value(secrets)} if supported else {}

        def copy(suffix: str) -> str:
            return stack.enter_context(database_copy(maintenance, template, f"{template}_{suffix}"))

        paths = [BenchPath(BASELINE, "", with_database(maintenance, copy("baseline")))]
        for mode in plan.sealing:
            for v, whatif in enumerate(plan.whatif):
                name = copy(f"seal_{mode}_{v}")
                env = {SEAL_ENV: seal_env[mode]} if supported else {}
                env["VAULT_WORKERS"] = "1"  # a "process" here is one serve process, not one per core
                vault_url = with_database(maintenance, name, driver="postgresql+asyncpg")
                procs = tuple(
                    stack.enter_context(
                        vault_process(vault_url, secrets, tmp / f"vault-{mode}-{v}-{i}.log", env, whatif)
                    )
                    for i in range(max(plan.procs))
                )
                pids = tuple(p.pid for p in procs)
                for n in plan.procs:
                    db_url = with_database(maintenance, name)
                    paths.append(BenchPath(vault_path_name(n, whatif), mode, db_url, procs[:n], pids, whatif))
        say(f"vault processes up; {len(paths)} paths")
        admin = (
            stack.enter_context(psycopg.connect(maintenance, autocommit=True))
            if is_local(maintenance)
            else None
        )
        caller = Caller(token_id=prepared.token.split("_")[1])
        keyring = Path(secrets["VAULT_KEYRING_FILE"])
        setup = Setup(prepared.users, prepared.token, caller, admin, keyring, dek_cache())
        results = uvloop.run(bench_all(paths, setup, plan))
        checks: dict[str, tuple[int, int, int]] = {}
        for path in paths:
            label = "baseline" if not path.procs else f"vault (sealing {path.sealing}) {path.whatif}"
            checks.setdefault(label.strip(), db_check(path.db_url))
    db_checks = [
        f"{name}: {granted:,} leases granted, {open_} open, {events:,} audit events"
        for name, (granted, open_, events) in checks.items()
    ]
    info = ReportInfo(command, pg_version, load, supported, seal_env, db_checks)
    say(f"total {total.seconds:.0f} s")
    return report(plan, results, info)


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    plan = Plan(
        args.seconds, args.warmup, args.reps, args.levels, args.proc_counts, args.sealing, args.users,
        args.variants,
    )  # fmt: skip
    text = run_benchmark(plan, args.database_url, " ".join([".venv/bin/python -m bench.lease", *argv]))
    write_report(text, args.out)


if __name__ == "__main__":
    main()
