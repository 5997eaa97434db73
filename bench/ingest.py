"""Ingest throughput and latency: the real vault over HTTP against bare asyncpg inserts, same run.

What it measures, per concurrency level ``c``:

* ``vault HTTP``: ``POST /api/import-session`` with ``{"session": s}`` (realistic ~7.7 KB Para sessions,
  two wallets with signers, a new user each) to a real ``session-vault serve`` running as a separate
  process (uvicorn, FastAPI, validation, envelope encryption, the store on asyncpg, PostgreSQL). The
  client runs in this process: ``c`` workers pulling from one queue, each with its own single-connection
  ``httpx.AsyncClient`` (``--shared-client``: one client for all; see :func:`http_clients` for why that
  under-drives the vault).
* ``baseline asyncpg``: the same number of new users at the same concurrency, straight through an
  asyncpg pool of size ``c``: per session one transaction with the SQL ingest issues (upsert and lock
  the user, look up and insert the user's wrapped key, look up active sessions, insert the session with
  random bytes as long as the vault's ciphertext). No HTTP, no crypto, no validation.

Every run starts on empty tables, warms up with ``max(--warmup, c)`` requests (not counted), times
``--n``, and then checks that it left exactly one user, key and active session per request; any non-201
aborts. Each cell is the median of ``--reps`` runs; vault and baseline runs alternate. CPU ms/op per
session: non-idle CPU of the whole machine (``/proc/stat``), of the vault process, of this process.

It creates and finally drops a scratch database ``sv_bench_<pid>`` on the server of ``--database-url``
and writes a throwaway keyring (and audit keys) into a temp directory. Run from the repository root
(~2.5 minutes on 2 cores with the defaults)::

    .venv/bin/python -m bench.ingest --n 2000 --concurrency 1,16,64 \\
        --database-url postgresql://postgres@127.0.0.1:5432/postgres --out bench/results/ingest.md

Timing, CPU accounting, percentiles and the table come from bench/_harness.py, the scratch database
and the vault process from bench/_setup.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import asyncpg
import httpx
import psycopg

from bench._harness import (
    Cpu,
    Percentiles,
    Probe,
    load_average,
    machine_line,
    markdown_table,
    median_of,
    percentile_ms,
    say,
    timed,
    utc_now,
    write_report,
)
from bench._setup import (
    DEFAULT_DATABASE_URL,
    maintenance_url,
    migrate,
    scratch_database,
    secret_files,
    server_version,
    vault_process,
    with_database,
)
from tests.sessiongen import make_session

T = TypeVar("T")
AsyncpgPool: TypeAlias = Any  # asyncpg ships no type hints

VAULT = "vault HTTP"
BASELINE = "baseline asyncpg"
# What the vault stores per session and per key: AEAD format byte + 4-byte key version + 12-byte nonce
# before the ciphertext, a 16-byte tag after it; a wrapped DEK is that around a 32-byte key.
SEAL_OVERHEAD = 1 + 4 + 12 + 16
WRAPPED_DEK_BYTES = 32 + SEAL_OVERHEAD
JSON_HEADERS = {"content-type": "application/json"}
_seeds = count(1)


# --- database checks ---------------------------------------------------------------------------------


def truncate(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("TRUNCATE users CASCADE")  # and everything that hangs off users


def check_counts(db_url: str, expected: int, what: str) -> None:
    """Each run must leave exactly one user, one key and one active session per request."""
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM user_keys),"
            " (SELECT count(*) FROM sessions WHERE status = 'active')"
        ).fetchone()
    if row is None or tuple(row) != (expected,) * 3:
        raise RuntimeError(f"{what}: expected {expected} users/keys/sessions, found {row}")


# --- measuring -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    vault_base: str  # public base URL of the vault process
    vault_pid: int
    db_url: str  # plain postgresql:// URL of the scratch database


@dataclass(frozen=True)
class Plan:
    n: int
    levels: tuple[int, ...]
    reps: int
    warmup: int
    shared_client: bool


@dataclass(frozen=True)
class Run:
    n: int
    seconds: float
    latencies: list[float]
    cpu: Cpu

    @property
    def rate(self) -> float:
        return self.n / self.seconds

    def percentile_ms(self, p: int) -> float:
        return percentile_ms(self.latencies, p)


Send: TypeAlias = Callable[[T], Awaitable[str | None]]  # None on success, else what went wrong


async def drive(items: Sequence[T], senders: Sequence[Send[T]]) -> tuple[list[float], Counter[str]]:
    """Send every item with one worker per sender, all pulling from one queue; latencies and failures.

    With at least as many items as workers, every worker sends at least once (each takes an item before
    it first awaits), so a warm-up of that size opens every worker's connection.
    """
    queue: asyncio.Queue[T] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)
    latencies: list[float] = []
    failures: Counter[str] = Counter()

    async def worker(send: Send[T]) -> None:
        while not queue.empty():
            item = queue.get_nowait()
            started = time.perf_counter()
            try:
                problem = await send(item)
            except Exception as exc:
                problem = f"{type(exc).__name__}({exc})"
            latencies.append(time.perf_counter() - started)
            if problem is not None:
                failures[problem] += 1

    await asyncio.gather(*(worker(send) for send in senders))
    return latencies, failures


def check(failures: Counter[str], what: str) -> None:
    if failures:
        summary = ", ".join(f"{k} x{v}" for k, v in failures.most_common())
        raise RuntimeError(f"{what}: {sum(failures.values())} failed request(s): {summary}")


async def measure(items: Sequence[T], senders: Sequence[Send[T]], vault_pid: int, what: str) -> Run:
    """Send ``items``, timed; CPU of the machine, this process and the vault process around it."""
    probe = Probe(vault_pids=[vault_pid])
    before = probe.snapshot()
    with timed() as timer:
        latencies, failures = await drive(items, senders)
    cpu = probe.snapshot() - before
    check(failures, what)
    return Run(len(items), timer.seconds, latencies, cpu)


# --- the two paths -------------------------------------------------------------------------------------


def new_sessions(n: int) -> list[str]:
    """``n`` realistic sessions of ``n`` users never seen before in this run."""
    return [make_session(next(_seeds))[0] for _ in range(n)]


def http_bodies(n: int) -> list[bytes]:
    return [json.dumps({"session": s}).encode() for s in new_sessions(n)]


def poster(client: httpx.AsyncClient) -> Send[bytes]:
    async def send(body: bytes) -> str | None:
        response = await client.post("/api/import-session", content=body, headers=JSON_HEADERS)
        return None if response.status_code == 201 else f"HTTP {response.status_code}"

    return send


async def http_clients(
    stack: AsyncExitStack, base_url: str, concurrency: int, shared: bool
) -> list[httpx.AsyncClient]:
    """``concurrency`` clients with one connection each, or (``shared``) one client with that many.

    One shared client under-drives the server: httpcore 1.0.9's pool hands every request queued in one
    pass the same idle connection (it stays "available" until the first of them starts on it), the
    others are re-queued, and at c=64 only ~5-10 connections carry requests while the rest sit idle
    until the vault's 5 s keep-alive closes them, racing a request now and then (ReadError).
    """
    count_ = 1 if shared else concurrency
    per_client = concurrency if shared else 1
    limits = httpx.Limits(max_connections=per_client, max_keepalive_connections=per_client)
    clients = [
        await stack.enter_async_context(httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60.0))
        for _ in range(count_)
    ]
    return clients * concurrency if shared else clients


async def vault_run(target: Target, plan: Plan, concurrency: int) -> Run:
    warm, bodies = http_bodies(max(plan.warmup, concurrency)), http_bodies(plan.n)
    async with AsyncExitStack() as stack:
        clients = await http_clients(stack, target.vault_base, concurrency, plan.shared_client)
        senders = [poster(client) for client in clients]
        check((await drive(warm, senders))[1], f"{VAULT} warm-up")
        return await measure(bodies, senders, target.vault_pid, f"{VAULT} c={concurrency}")


@dataclass(frozen=True)
class Row:
    """What the baseline writes for one session: the same sizes the vault writes."""

    user_id: str
    session_id: str
    wrapped_dek: bytes
    ciphertext: bytes
    expires_at: datetime


def baseline_rows(n: int) -> list[Row]:
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    return [
        Row(
            user_id=str(uuid.uuid4()),
            session_id=str(uuid.uuid4()),
            wrapped_dek=os.urandom(WRAPPED_DEK_BYTES),
            ciphertext=os.urandom(len(s) + SEAL_OVERHEAD),
            expires_at=expires,
        )
        for s in new_sessions(n)
    ]


_INSERT_USER = "INSERT INTO users (id, created_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING"
_LOCK_USER = "SELECT id FROM users WHERE id = $1 FOR UPDATE"
_ACTIVE_KEY = (
    "SELECT user_id, dek_version, wrapped_dek, kek_id, kek_version, status, created_at"
    " FROM user_keys WHERE user_id = $1 AND status = 'active'"
)
_INSERT_KEY = (
    "INSERT INTO user_keys (user_id, dek_version, wrapped_dek, kek_id, kek_version, status, created_at)"
    " VALUES ($1, 1, $2, 'local', 1, 'active', $3)"
)
_ACTIVE_SESSIONS = "SELECT id FROM sessions WHERE user_id = $1 AND status = 'active'"
_SUPERSEDE = "UPDATE sessions SET status = 'superseded', updated_at = $2 WHERE id = ANY($1::varchar[])"
_INSERT_SESSION = (
    "INSERT INTO sessions (id, user_id, version, dek_version, format, has_signers, status, created_at,"
    " updated_at, expires_at, ciphertext) VALUES ($1, $2, 1, 1, 'para', true, 'active', $3, $3, $4, $5)"
)


async def baseline_insert(pool: AsyncpgPool, row: Row) -> None:
    """One ingest's SQL, in one transaction, as ``vault.service.ingest`` issues it for a new user."""
    now = datetime.now(UTC)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(_INSERT_USER, row.user_id, now)
        await conn.fetchval(_LOCK_USER, row.user_id)
        if await conn.fetchrow(_ACTIVE_KEY, row.user_id) is None:
            await conn.execute(_INSERT_KEY, row.user_id, row.wrapped_dek, now)
        active = [r["id"] for r in await conn.fetch(_ACTIVE_SESSIONS, row.user_id)]
        if active:
            await conn.execute(_SUPERSEDE, active, now)
        await conn.execute(_INSERT_SESSION, row.session_id, row.user_id, now, row.expires_at, row.ciphertext)


async def baseline_run(target: Target, plan: Plan, concurrency: int) -> Run:
    warm, rows = baseline_rows(max(plan.warmup, concurrency)), baseline_rows(plan.n)
    pool = await asyncpg.create_pool(target.db_url, min_size=concurrency, max_size=concurrency)
    try:

        async def send(row: Row) -> str | None:
            await baseline_insert(pool, row)
            return None

        senders = [send] * concurrency
        check((await drive(warm, senders))[1], f"{BASELINE} warm-up")
        return await measure(rows, senders, target.vault_pid, f"{BASELINE} c={concurrency}")
    finally:
        await pool.close()


# --- orchestration and report --------------------------------------------------------------------------


Results: TypeAlias = dict[tuple[str, int], list[Run]]


def progress(path: str, concurrency: int, rep: int, run: Run) -> None:
    latency = Percentiles.of(run.latencies)
    say(
        f"  {path:<17} c={concurrency:<3} rep {rep}: {run.rate:7.0f}/s"
        f"  p50 {latency.p50:6.1f} p90 {latency.p90:6.1f} p99 {latency.p99:6.1f} ms"
    )


async def one_run(target: Target, plan: Plan, path: str, concurrency: int) -> Run:
    """One timed run on empty tables, checked afterwards: every request left its user, key and session."""
    truncate(target.db_url)
    runner = vault_run if path == VAULT else baseline_run
    run = await runner(target, plan, concurrency)
    check_counts(target.db_url, max(plan.warmup, concurrency) + plan.n, f"{path} c={concurrency}")
    return run


async def bench_all(target: Target, plan: Plan) -> Results:
    """Every (path, level) ``plan.reps`` times; per level, vault and baseline runs alternate."""
    results: Results = {}
    for c in plan.levels:
        for rep in range(1, plan.reps + 1):
            for path in (VAULT, BASELINE):
                run = await one_run(target, plan, path, c)
                progress(path, c, rep, run)
                results.setdefault((path, c), []).append(run)
    return results


def table_row(path: str, c: int, runs: Sequence[Run], ratio: str) -> list[object]:
    def per_op(part: Callable[[Cpu], float]) -> str:
        return f"{median_of(runs, lambda r: part(r.cpu) / r.n * 1000):.2f}"

    return [
        path, c, f"{median_of(runs, lambda r: r.rate):,.0f}",
        f"{median_of(runs, lambda r: r.percentile_ms(50)):.1f}",
        f"{median_of(runs, lambda r: r.percentile_ms(99)):.1f}", ratio,
        per_op(lambda cpu: cpu.machine), per_op(lambda cpu: cpu.vault), per_op(lambda cpu: cpu.client),
    ]  # fmt: skip


def table(results: Results, levels: Sequence[int]) -> str:
    headers = [
        "path", "concurrency", "sessions/s", "p50 ms", "p99 ms", "vault / baseline", "CPU ms/op, machine",
        "CPU ms/op, vault process", "CPU ms/op, bench client",
    ]  # fmt: skip
    rows = []
    for c in levels:
        vault, baseline = results[(VAULT, c)], results[(BASELINE, c)]
        ratio = median_of(vault, lambda r: r.rate) / median_of(baseline, lambda r: r.rate)
        rows += [table_row(VAULT, c, vault, f"{ratio:.2f}"), table_row(BASELINE, c, baseline, "-")]
    return markdown_table(headers, rows)


def report(plan: Plan, command: str, pg_version: str, load: str, body: str) -> str:
    cpus = os.cpu_count()
    client = (
        "one shared httpx.AsyncClient (connection limit = concurrency)"
        if plan.shared_client
        else "one httpx.AsyncClient with one keep-alive connection per worker"
    )
    return f"""# Ingest benchmark: vault over HTTP vs. bare asyncpg

- date: {utc_now()}
- machine: {machine_line(pg_version, load)}
- per run: {plan.n} sessions (new users, ~7.7 KB, two wallets with signers) after max({plan.warmup}, \
concurrency) warm-up requests, on empty tables; each cell is the median of {plan.reps} runs (vault and \
baseline alternate)
- vault HTTP: `POST /api/import-session` to `session-vault serve` (separate process, default settings: \
DB pool 10); client in the bench process: `concurrency` workers, {client}
- baseline: asyncpg pool of size `concurrency`, per session one transaction: upsert user, lock it \
FOR UPDATE, select active key, insert key ({WRAPPED_DEK_BYTES} random bytes), select active sessions, \
insert session (random bytes, len(session)+{SEAL_OVERHEAD}); no HTTP, no crypto, no validation
- CPU ms/op: CPU per session of the whole machine (non-idle, /proc/stat: includes PostgreSQL and \
anything else running), of the vault process, and of the bench process (the client); client, vault and \
PostgreSQL share the {cpus} cores

{body}

Command: `{command}`
"""


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="sessions per timed run")
    parser.add_argument("--concurrency", default="1,16,64", help="comma-separated concurrency levels")
    parser.add_argument("--reps", type=int, default=3, help="runs per cell (the median is reported)")
    parser.add_argument("--warmup", type=int, default=50, help="untimed requests before each run")
    parser.add_argument(
        "--database-url",
        default=DEFAULT_DATABASE_URL,
        help="maintenance database; a scratch database is created next to it",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/ingest.md"))
    parser.add_argument(
        "--shared-client",
        action="store_true",
        help="one httpx client for all workers (under-drives the vault at high concurrency)",
    )
    args = parser.parse_args(argv)
    args.levels = tuple(int(c) for c in args.concurrency.split(",") if c.strip())
    if args.n < 1 or args.reps < 1 or args.warmup < 0 or not args.levels or min(args.levels) < 1:
        parser.error("--n, --reps and every concurrency level must be positive")
    return args


def run_benchmark(plan: Plan, database_url: str, command: str) -> str:
    maintenance = maintenance_url(database_url)
    load = load_average()
    with scratch_database(maintenance) as name, tempfile.TemporaryDirectory(prefix="sv_bench_") as tmp:
        db_url = with_database(maintenance, name)
        vault_url = with_database(maintenance, name, driver="postgresql+asyncpg")
        asyncio.run(migrate(vault_url))
        pg_version = server_version(db_url)
        secrets = secret_files(Path(tmp))
        with vault_process(vault_url, secrets, Path(tmp) / "vault.log", {"VAULT_WORKERS": "1"}) as proc:
            say(f"vault at {proc.public_base} (pid {proc.pid}), database {name}")
            results = asyncio.run(bench_all(Target(proc.public_base, proc.pid, db_url), plan))
    return report(plan, command, pg_version, load, table(results, plan.levels))


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    plan = Plan(args.n, args.levels, args.reps, args.warmup, args.shared_client)
    text = run_benchmark(plan, args.database_url, " ".join([".venv/bin/python -m bench.ingest", *argv]))
    write_report(text, args.out)


if __name__ == "__main__":
    main()
