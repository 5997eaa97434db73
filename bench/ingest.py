"""Ingest throughput and latency: the real vault over HTTP against bare asyncpg inserts, same run.

What it measures, per concurrency level ``c``:

* ``vault HTTP``: ``POST /api/import-session`` with ``{"session": s}`` (realistic ~7.7 KB Para sessions,
  two wallets with signers, a new user each) to a real ``session-vault serve`` running as a separate
  process (uvicorn, FastAPI, validation, envelope encryption, SQLAlchemy + asyncpg, PostgreSQL). The
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
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any, TypeAlias, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import psycopg

from tests.sessiongen import make_session
from vault.keys import create_keyring_file
from vault.settings import Settings
from vault.store import Store, upgrade

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


# --- scratch database, keyring, vault process ---------------------------------------------------------


def with_database(url: str, name: str, *, driver: str = "postgresql") -> str:
    """``url`` pointing at database ``name``, with the scheme ``driver``."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme=driver, path="/" + name))


def admin_execute(maintenance_url: str, sql: str) -> None:
    with psycopg.connect(maintenance_url, autocommit=True) as conn:
        conn.execute(sql)


@contextmanager
def scratch_database(maintenance_url: str) -> Iterator[str]:
    """Create ``sv_bench_<pid>``; yield its name; drop it (forcibly) on the way out."""
    name = f"sv_bench_{os.getpid()}"
    admin_execute(maintenance_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin_execute(maintenance_url, f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        admin_execute(maintenance_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def migrate(vault_url: str) -> None:
    store = Store.connect(vault_url, pool_size=1)
    try:
        await upgrade(store.engine)
    finally:
        await store.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def vault_cli(args: Sequence[str], env: dict[str, str]) -> str:
    """Run ``session-vault ARGS`` with ``env``; its stdout. Raises with its stderr if it fails."""
    done = subprocess.run(
        [sys.executable, "-m", "vault.cli", *args], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"session-vault {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def secret_files(workdir: Path) -> dict[str, str]:
    """A throwaway keyring, and audit keys once the vault has them, in ``workdir``: their variables."""
    keyring = workdir / "keyring.json"
    create_keyring_file(keyring)
    env = {"VAULT_KEYRING_FILE": str(keyring)}
    if "audit_keys_file" in Settings.model_fields:
        audit_keys = workdir / "audit-keys.json"
        vault_cli(["audit", "keys", "init", "--file", str(audit_keys)], vault_env("", {}))
        env["VAULT_AUDIT_KEYS_FILE"] = str(audit_keys)
    return env


def vault_env(
    vault_url: str, secrets: dict[str, str], public_port: int = 0, internal_port: int = 0
) -> dict[str, str]:
    """This process's environment without its VAULT_* variables, plus the vault's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    env.update(secrets)
    if vault_url:
        env["VAULT_DATABASE_URL"] = vault_url
    if public_port:
        env["VAULT_PUBLIC_PORT"] = str(public_port)
    if internal_port:
        env["VAULT_INTERNAL_PORT"] = str(internal_port)
    return env


def wait_healthy(proc: subprocess.Popen[bytes], url: str, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            status = proc.returncode
            raise RuntimeError(f"the vault exited with {status} before it was healthy:\n{log_tail(log)}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the vault was not healthy within {timeout:.0f}s (log: {log})")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=15)


@contextmanager
def running_vault(vault_url: str, workdir: Path) -> Iterator[tuple[str, int]]:
    """Start ``session-vault serve`` on free ports; yield its public base URL and pid; stop it at the end."""
    secrets = secret_files(workdir)
    public_port, internal_port = free_port(), free_port()
    log = workdir / "vault.log"
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vault.cli", "serve"],
            env=vault_env(vault_url, secrets, public_port, internal_port),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_healthy(proc, f"http://127.0.0.1:{internal_port}/healthz", log)
        yield f"http://127.0.0.1:{public_port}", proc.pid
    except Exception:
        stop(proc)
        print(f"--- last lines of the vault's log ---\n{log_tail(log)}", file=sys.stderr)
        raise
    finally:
        stop(proc)


def log_tail(log: Path, lines: int = 30) -> str:
    """The vault's log without its per-request access lines (there are thousands), last ``lines``."""
    kept = [line for line in log.read_text(errors="replace").splitlines() if "HTTP/1.1" not in line]
    return "\n".join(kept[-lines:])


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


def machine_busy_seconds() -> float:
    """Non-idle CPU seconds of the whole machine since boot (all cores)."""
    with open("/proc/stat") as fh:
        fields = [int(v) for v in fh.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Cpu:
    """CPU seconds used so far: whole machine, this (client) process, the vault process."""

    machine: float
    client: float
    vault: float

    @classmethod
    def now(cls, vault_pid: int) -> Cpu:
        return cls(machine_busy_seconds(), time.process_time(), process_cpu_seconds(vault_pid))

    def __sub__(self, other: Cpu) -> Cpu:
        return Cpu(self.machine - other.machine, self.client - other.client, self.vault - other.vault)


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
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[p - 1] * 1000


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
    cpu0, started = Cpu.now(vault_pid), time.perf_counter()
    latencies, failures = await drive(items, senders)
    seconds = time.perf_counter() - started
    cpu = Cpu.now(vault_pid) - cpu0
    check(failures, what)
    return Run(len(items), seconds, latencies, cpu)


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
    print(
        f"  {path:<17} c={concurrency:<3} rep {rep}: {run.rate:7.0f}/s  p50 {run.percentile_ms(50):6.1f} ms"
        f"  p99 {run.percentile_ms(99):6.1f} ms",
        file=sys.stderr,
        flush=True,
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


def median_of(runs: Sequence[Run], value: Callable[[Run], float]) -> float:
    return statistics.median(value(r) for r in runs)


def table_row(path: str, c: int, runs: Sequence[Run], ratio: str) -> str:
    return (
        f"| {path} | {c} | {median_of(runs, lambda r: r.rate):,.0f}"
        f" | {median_of(runs, lambda r: r.percentile_ms(50)):.1f}"
        f" | {median_of(runs, lambda r: r.percentile_ms(99)):.1f} | {ratio}"
        f" | {median_of(runs, lambda r: r.cpu.machine / r.n * 1000):.2f}"
        f" | {median_of(runs, lambda r: r.cpu.vault / r.n * 1000):.2f}"
        f" | {median_of(runs, lambda r: r.cpu.client / r.n * 1000):.2f} |"
    )


def table(results: Results, levels: Sequence[int]) -> str:
    lines = [
        "| path | concurrency | sessions/s | p50 ms | p99 ms | vault / baseline"
        " | CPU ms/op, machine | CPU ms/op, vault process | CPU ms/op, bench client |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in levels:
        vault, baseline = results[(VAULT, c)], results[(BASELINE, c)]
        ratio = median_of(vault, lambda r: r.rate) / median_of(baseline, lambda r: r.rate)
        lines.append(table_row(VAULT, c, vault, f"{ratio:.2f}"))
        lines.append(table_row(BASELINE, c, baseline, "-"))
    return "\n".join(lines)


def report(plan: Plan, command: str, pg_version: str, load: str, body: str) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    cpus = os.cpu_count()
    client = (
        "one shared httpx.AsyncClient (connection limit = concurrency)"
        if plan.shared_client
        else "one httpx.AsyncClient with one keep-alive connection per worker"
    )
    return f"""# Ingest benchmark: vault over HTTP vs. bare asyncpg

- date: {now}
- machine: nproc {cpus}, Python {platform.python_version()}, {platform.system()} {platform.release()}, \
PostgreSQL {pg_version}; load average at start: {load}
- per run: {plan.n} sessions (new users, ~7.7 KB, two wallets with signers) after max({plan.warmup}, \
concurrency) warm-up requests, on empty tables; each cell is the median of {plan.reps} runs (vault and \
baseline alternate)
- vault HTTP: `POST /api/import-session` to `session-vault serve` (separate process, default settings: \
DB pool 10 + 10 overflow); client in the bench process: `concurrency` workers, {client}
- baseline: asyncpg pool of size `concurrency`, per session one transaction: upsert user, lock it \
FOR UPDATE, select active key, insert key ({WRAPPED_DEK_BYTES} random bytes), select active sessions, \
insert session (random bytes, len(session)+{SEAL_OVERHEAD}); no HTTP, no crypto, no validation
- CPU ms/op: CPU per session of the whole machine (non-idle, /proc/stat: includes PostgreSQL and \
anything else running), of the vault process, and of the bench process (the client); client, vault and \
PostgreSQL share the {cpus} cores

{body}

Command: `{command}`
"""


def server_version(db_url: str) -> str:
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]).split()[0] if row else "?"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="sessions per timed run")
    parser.add_argument("--concurrency", default="1,16,64", help="comma-separated concurrency levels")
    parser.add_argument("--reps", type=int, default=3, help="runs per cell (the median is reported)")
    parser.add_argument("--warmup", type=int, default=50, help="untimed requests before each run")
    parser.add_argument(
        "--database-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
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
    maintenance = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    with scratch_database(maintenance) as name, tempfile.TemporaryDirectory(prefix="sv_bench_") as tmp:
        db_url = with_database(maintenance, name)
        vault_url = with_database(maintenance, name, driver="postgresql+asyncpg")
        asyncio.run(migrate(vault_url))
        pg_version = server_version(db_url)
        with running_vault(vault_url, Path(tmp)) as (base, pid):
            print(f"vault at {base} (pid {pid}), database {name}", file=sys.stderr, flush=True)
            results = asyncio.run(bench_all(Target(base, pid, db_url), plan))
    return report(plan, command, pg_version, load, table(results, plan.levels))


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    plan = Plan(args.n, args.levels, args.reps, args.warmup, args.shared_client)
    text = run_benchmark(plan, args.database_url, " ".join([".venv/bin/python -m bench.ingest", *argv]))
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
