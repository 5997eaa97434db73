"""Session Vault against OpenBao (the peer) in one run: same machine, same load generator, same connections.

What it measures. Every run drives ``--connections`` workers (one keep-alive connection each; the load
generator of bench/_lease_load.py, the HTTP/1.1 client of bench/_http1.py on uvloop for both sides) for
``--seconds`` after an untimed ``--warmup``; a vault run and an OpenBao run alternate, ``--runs`` of each:

* ``lease``: vault ``POST /v1/users/{u}/lease`` then ``POST /v1/leases/{id}/release`` with a signer token
  (bench/_lease_load.py's cycle; a ``409 lease_held`` moves to another user; the rate counts cycles) on a
  user drawn from ``--users`` (1,000, one ingested ~7.7 KB session each), against OpenBao KV v2
  ``GET /v1/secret/data/k{n}`` (``X-Vault-Token``) of one of 1,000 secrets of the same size
  (``{"session": <a 7.7 KB session>}``);
* ``ingest``: vault ``POST /api/import-session`` of a new ~7.7 KB session (a new user each; made before
  the run), against OpenBao KV v2 ``POST /v1/secret/data/p{n}`` with a body of the same size (a new key
  each).

Both cases run on ``session-vault serve`` + PostgreSQL (a scratch database ``sv_bench_<pid>``, migrated,
a signer and an ingest token, 1,000 users ingested through the public endpoint), then on
``session-vault dev`` + SQLite (its data directory in a temp directory, the same provisioning); the
OpenBao runs are repeated for each. Only one vault runs at a time (serve is stopped before dev starts);
OpenBao runs throughout. OpenBao is durable: ``bao server -config`` on raft storage, a file audit device
and kv-v2, initialized and unsealed (bench/_openbao.py). Per run: the rate, p50 and p99 of every request
(a lease cycle's grant and release both), CPU ms per operation of the whole machine (``/proc/stat``
non-idle), of the vault processes (the process and its descendants: workers), of PostgreSQL's backends
for the scratch database and of the OpenBao process; at the end of each phase the peak RSS (``VmHWM``) of
every vault process, and the leases granted. ``--vault-env KEY=VALUE`` (repeatable) goes into both vault
processes' environment; the vault's ``workers`` setting, if it has one, is left at its default (or to
``--vault-env``) and reported. Everything it starts (processes, the database, temp directories) is
removed at exit, also on Ctrl-C or an error. Run from the repository root (~5 minutes on 2 cores)::

    .venv/bin/python -m bench.vs_openbao --connections 32 --seconds 10 --runs 3 \\
        --database-url postgresql://postgres@127.0.0.1:5432/postgres --out bench/results/vs-openbao.md
"""

from __future__ import annotations

import argparse
import signal
import sqlite3
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg
import uvloop

from bench._harness import (
    Percentiles,
    Probe,
    load_average,
    machine_line,
    say,
    timed,
    utc_now,
    write_report,
)
from bench._http1 import error_code
from bench._lease_load import TOKEN_NAME, Cycle, Tally, drive, ingest_users, vault_cycle
from bench._openbao import BenchBao, Conn, bao_version, kv_body, peak_rss_kb, write_secrets
from bench._openbao_report import BAO, CASES, DEV, PG, VAULT, Rss, Sample, other_cpu, tables
from bench._openbao_vault import Sessions, command_of, dev_process, kill_leftovers, process_tree
from bench._setup import (
    DEFAULT_DATABASE_URL,
    is_local,
    maintenance_url,
    scratch_database,
    secret_files,
    server_version,
    vault_cli,
    vault_env,
    vault_process,
    with_database,
)
from tests.sessiongen import make_session
from vault.settings import Settings

INGEST_TOKEN_NAME = "bench-ingest"  # noqa: S105 (a name, not a secret)
OFFLINE_SETTING = "allow_offline_verifier"


# --- what each side runs -------------------------------------------------------------------------------


@dataclass
class Side:
    """One server under load in a phase: where it listens, what it needs, which processes are its."""

    system: str
    backend: str
    host: str
    port: int  # vault: internal (leases); OpenBao: its listener
    root_pid: int
    token: str
    keys: list[str]  # what a lease-case cycle draws from: user ids, or secret names
    public_port: int = 0  # vault: the public ingest listener
    db_name: str = ""  # vault on PostgreSQL: its scratch database (its backends' CPU is counted)
    take_body: Callable[[], bytes] | None = None  # vault: the next new session to ingest
    pids: list[int] = field(default_factory=list)  # its descendants seen (killed if left at the end)
    grants: int = 0  # lease cycles the bench completed (warm-up included)


_put_keys = count()


def cycles_for(side: Side, case: str, conns: Sequence[Conn]) -> list[Cycle]:
    """One cycle function per connection: what ``case`` sends to ``side``."""
    if side.system == VAULT and case == "lease":
        return [vault_cycle([conn]) for conn in conns]
    send: Callable[[Conn, str], Awaitable[tuple[int, bytes]]]
    if side.system == VAULT:
        take = side.take_body
        assert take is not None
        send, ok, what = (lambda c, _: c.post("/api/import-session", take())), 201, "ingest"
    elif case == "ingest":
        body = kv_body(make_session(0)[0])
        send, ok, what = (lambda c, _: c.post(f"/v1/secret/data/p{next(_put_keys)}", body)), 200, "PUT"
    else:
        send, ok, what = (lambda c, name: c.get(f"/v1/secret/data/{name}")), 200, "GET"

    def checked(conn: Conn) -> Cycle:
        async def cycle(key: str, tally: Tally) -> None:
            status, answer = await send(conn, key)
            if status != ok:
                tally.failed(f"{what} {status} {error_code(answer)}")
                return
            tally.done(conn.sink[-1])

        return cycle

    return [checked(conn) for conn in conns]


async def one_run(side: Side, case: str, run: int, args: argparse.Namespace, admin: Any) -> Sample:
    """Warm up, then one timed run of ``case`` on ``side``; CPU counters read around the timed part."""
    tree = process_tree(side.root_pid)
    side.pids.extend(pid for pid in tree[1:] if pid not in side.pids)
    probe = Probe(admin if side.db_name else None, side.db_name, tree)
    sink: list[float] = []
    vault_lease = side.system == VAULT and case == "lease"
    port = side.public_port if side.system == VAULT and case == "ingest" else side.port
    token = None if side.system == BAO or case == "ingest" else side.token
    bao_token = side.token if side.system == BAO else ""
    keys = side.keys if case == "lease" else [""]
    async with AsyncExitStack() as stack:
        conns = [Conn(side.host, port, sink, token, bao_token=bao_token) for _ in range(args.connections)]
        for conn in conns:
            stack.push_async_callback(conn.close)
        cycles = cycles_for(side, case, conns)
        warm, tally = Tally(), Tally()
        await drive(cycles, keys, args.warmup, warm)
        sink.clear()
        before = probe.snapshot()
        seconds = await drive(cycles, keys, args.seconds, tally)
        cpu = probe.snapshot() - before
    if tally.cycles == 0:
        raise RuntimeError(f"{side.system} {case} ({side.backend}): nothing finished: {dict(tally.errors)}")
    if vault_lease:
        side.grants += warm.cycles + tally.cycles
    return Sample(
        side.backend, case, side.system, run, seconds, tally.cycles, len(sink), Percentiles.of(sink), cpu,
        tally.held, tally.errors,
    )  # fmt: skip


def progress(s: Sample) -> None:
    held = f"  409 x{s.held}" if s.held else ""
    errors = f"  failures {dict(s.errors)}" if s.errors else ""
    say(
        f"  {s.case:<6} {s.backend:<18} run {s.run} {s.system:<7} {s.rate:7.0f}/s"
        f"  p50 {s.latency.p50:6.2f} p99 {s.latency.p99:6.2f} ms  CPU ms/op machine"
        f" {s.per_op_ms(s.cpu.machine):5.2f} server {s.per_op_ms(s.cpu.vault):5.2f}"
        f" pg {s.per_op_ms(s.cpu.postgres):5.2f} other {s.per_op_ms(other_cpu(s.cpu)):5.2f}{held}{errors}"
    )


async def phase(
    vault: Side, bao: Side, sessions: Sessions, args: argparse.Namespace, admin: Any
) -> list[Sample]:
    """Both cases on one vault: per case, ``--runs`` vault runs and OpenBao runs, alternating."""
    samples: list[Sample] = []
    for case in args.cases:
        for run in range(1, args.runs + 1):
            for side in (vault, bao):
                if side.take_body is not None and case == "ingest":
                    sessions.ensure_for(run, args.seconds + args.warmup, args.connections)
                sample = await one_run(side, case, run, args, admin if side.system == VAULT else None)
                progress(sample)
                samples.append(sample)
                if side.take_body is not None and case == "ingest":
                    sessions.fastest = max(sessions.fastest, sample.rate)
    return samples


# --- set-up of each side -------------------------------------------------------------------------------


def tokens(cli_args: list[str], env: dict[str, str]) -> str:
    """A signer token (returned) and an ingest token (created as a deployment would; public ingest
    needs none)."""
    signer = vault_cli(["token", "create", *cli_args, "--role", "signer", "--name", TOKEN_NAME], env)
    vault_cli(["token", "create", *cli_args, "--role", "ingest", "--name", INGEST_TOKEN_NAME], env)
    return signer.strip()


def start_serve(stack: ExitStack, maintenance: str, tmp: Path, args: argparse.Namespace) -> Side:
    name = stack.enter_context(scratch_database(maintenance))
    secrets = secret_files(tmp)
    vault_url = with_database(maintenance, name, driver="postgresql+asyncpg")
    env = vault_env(vault_url, secrets)
    vault_cli(["db", "upgrade"], env)
    token = tokens([], env)
    side = Side(VAULT, PG, "", 0, 0, token, [], 0, name)
    stack.callback(kill_leftovers, side.pids)  # runs after the vault's stop()
    proc = stack.enter_context(vault_process(vault_url, secrets, tmp / "serve.log", args.serve_env))
    side.host, side.port, side.public_port, side.root_pid = proc.host, proc.port, proc.public_port, proc.pid
    side.keys = uvloop.run(ingest_users(proc, args.users))
    return side


def start_dev(stack: ExitStack, tmp: Path, args: argparse.Namespace) -> Side:
    data_dir = tmp / "dev"
    data_dir.mkdir(mode=0o700)
    cli = ["--data-dir", str(data_dir)]
    vault_cli(["db", "upgrade", *cli], vault_env("", {}))
    token = tokens(cli, vault_env("", {}))
    side = Side(VAULT, DEV, "", 0, 0, token, [])
    stack.callback(kill_leftovers, side.pids)
    proc = stack.enter_context(dev_process(data_dir, tmp / "dev.log", args.vault_env))
    side.host, side.port, side.public_port, side.root_pid = proc.host, proc.port, proc.public_port, proc.pid
    side.keys = uvloop.run(ingest_users(proc, args.users))
    return side


def leases_in(backend: str, maintenance: str, db_name: str, tmp: Path) -> str:
    """Lease rows in the vault's database (every grant leaves one), or why not."""
    try:
        if backend == PG:
            with psycopg.connect(with_database(maintenance, db_name)) as conn:
                row = conn.execute("SELECT count(*) FROM leases").fetchone()
        else:
            with sqlite3.connect(f"file:{tmp / 'dev' / 'vault.db'}?mode=ro", uri=True) as lite:
                row = lite.execute("SELECT count(*) FROM leases").fetchone()
    except (psycopg.Error, sqlite3.Error) as exc:
        return f"? ({type(exc).__name__})"
    return f"{int(row[0]):,}" if row else "?"


@dataclass
class Notes:
    """What the report says besides the tables."""

    rss: list[Rss] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


def end_of_phase(side: Side, notes: Notes, maintenance: str, tmp: Path) -> None:
    tree = process_tree(side.root_pid)
    side.pids.extend(pid for pid in tree[1:] if pid not in side.pids)
    for pid in tree:
        notes.rss.append(Rss(side.backend, pid, command_of(pid), peak_rss_kb(pid)))
    rows = leases_in(side.backend, maintenance, side.db_name, tmp)
    workers = sum("--multiprocessing-fork" in command_of(pid) for pid in tree)
    notes.lines.append(
        f"{side.backend}: {len(tree)} vault process(es) (the one started and its descendants, of which "
        f"{workers} worker(s); see the RSS table); {side.grants:,} leases granted by the bench (completed "
        f"lease cycles, warm-ups included), {rows} lease rows in its database"
    )


# --- main ----------------------------------------------------------------------------------------------


def workers_text(extra_env: dict[str, str]) -> str:
    info = Settings.model_fields.get("workers")
    if info is None:
        return "the vault's Settings has no `workers` field yet"
    if "VAULT_WORKERS" in extra_env:
        return f"`workers` = {extra_env['VAULT_WORKERS']} (set with --vault-env)"
    return f"`workers` = {info.get_default(call_default_factory=True)!r} (its default; not set)"


def header(args: argparse.Namespace, pg: str, load: str, bao: BenchBao, notes: Notes, minutes: float) -> str:
    offline = (
        "`VAULT_ALLOW_OFFLINE_VERIFIER=true` for serve"
        if "VAULT_ALLOW_OFFLINE_VERIFIER" in args.serve_env
        else f"no `{OFFLINE_SETTING}` setting in this vault, so `VAULT_ALLOW_OFFLINE_VERIFIER` is not set"
    )
    extra = ", ".join(f"`{k}={v}`" for k, v in args.vault_env.items()) or "none"
    lines = "\n".join(f"- {line}" for line in notes.lines)
    return f"""# Session Vault vs. OpenBao: lease vs. KV GET, ingest vs. KV PUT

- date: {utc_now()}; whole run {minutes:.1f} min; load average at the end: {load_average()}
- machine: {machine_line(pg, load)}; {args.pg_durability}; {bao_version()}
- per run: {args.connections} connections (one worker and keep-alive connection each; bench/_http1.py's \
client on uvloop for both sides), {args.seconds:g} s timed after a {args.warmup:g} s warm-up; \
{args.runs} runs per side and case, vault and OpenBao runs alternating; the tables show medians
- lease: vault grant + release cycles of a signer token on one of {args.users:,} users (ops = cycles, \
latency = both requests) vs. OpenBao KV v2 GET of one of {args.users:,} secrets of ~7.7 KB; ingest: vault \
public `POST /api/import-session` of a new ~7.7 KB session vs. OpenBao KV v2 PUT of a new key, same size
- vault: `session-vault serve` on a scratch PostgreSQL database, then `session-vault dev` on SQLite (one \
at a time); {workers_text(args.vault_env)}; {offline}; --vault-env: {extra}
- OpenBao: `bao server -config`, raft storage in a temp directory, tcp listener on 127.0.0.1 \
(tls_disable), disable_mlock; init (1 key share), unsealed; a file audit device (declared in the config: \
OpenBao 2.x refuses to enable one through the API; {bao.audit_lines():,} audit log lines at the end), \
kv-v2 at `secret/`; the load's token has a policy of create/read/update on `secret/data/*`
- CPU ms/op: per cycle or request; machine = non-idle CPU of the whole machine (/proc/stat: client, \
server, PostgreSQL and anything else); vault processes = the vault and its descendants; PostgreSQL = \
the backends of the scratch database; OpenBao process = the bao server; other = machine minus \
client, server processes and PostgreSQL backends (anything else running: other sessions' tests push it up)
{lines}
- ingest sessions made during a timed run (should be 0): {args.sessions_late}
"""


def _cases(text: str) -> list[str]:
    cases = [c.strip() for c in text.split(",") if c.strip()]
    unknown = sorted(set(cases) - set(CASES))
    if unknown or not cases:
        raise argparse.ArgumentTypeError(f"cases are {', '.join(CASES)}; not {', '.join(unknown) or 'none'}")
    return [c for c in CASES if c in cases]


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.vs_openbao", description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=32, help="connections (workers) per run")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each timed run")
    parser.add_argument("--warmup", type=float, default=1.0, help="untimed seconds before each run")
    parser.add_argument("--runs", type=int, default=3, help="runs per side and case (medians reported)")
    parser.add_argument("--users", type=int, default=1000, help="vault users and OpenBao secrets")
    parser.add_argument("--backends", default="serve,dev", help="comma-separated: serve, dev")
    parser.add_argument("--cases", default="lease,ingest", type=_cases, help="comma-separated: lease, ingest")
    parser.add_argument("--vault-env", action="append", default=[], metavar="KEY=VALUE",
                        help="a VAULT_* variable for both vault processes (repeatable)")  # fmt: skip
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL, help="maintenance database")
    parser.add_argument("--out", type=Path, default=Path("bench/results/vs-openbao.md"))
    args = parser.parse_args(argv)
    pairs = [item.partition("=") for item in args.vault_env]
    if any(not key.startswith("VAULT_") or not sep for key, sep, _ in pairs):
        parser.error("--vault-env takes VAULT_NAME=VALUE")
    args.vault_env = {key: value for key, _, value in pairs}
    args.serve_env = dict(args.vault_env)
    if OFFLINE_SETTING in Settings.model_fields:
        args.serve_env.setdefault("VAULT_ALLOW_OFFLINE_VERIFIER", "true")
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not args.backends or not set(args.backends) <= {"serve", "dev"}:
        parser.error("--backends takes serve, dev or serve,dev")
    if min(args.connections, args.runs, args.users) < 1 or args.seconds <= 0 or args.warmup < 0:
        parser.error("--connections, --runs, --users and --seconds must be positive")
    return args


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds the exit stacks: everything is cleaned up


def run_benchmark(args: argparse.Namespace, command: str) -> str:
    maintenance = maintenance_url(args.database_url)
    load = load_average()
    samples: list[Sample] = []
    notes = Notes()
    sessions = Sessions(first_seed=args.users + 1)  # setup ingests seeds 1..users
    with timed() as total, ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sv_bench_")))
        (tmp / "openbao").mkdir()
        bao = BenchBao(home=tmp / "openbao")
        stack.callback(bao.close)
        bao.setup()
        names = [f"k{n}" for n in range(args.users)]
        uvloop.run(write_secrets(bao, names, [make_session(n)[0] for n in range(1, args.users + 1)]))
        bao_side = Side(BAO, "", "127.0.0.1", bao.port, bao.pid, bao.token, names)
        say(f"OpenBao up (pid {bao.pid}, {args.users} secrets) in {total.seconds:.0f} s")
        pg = server_version(maintenance)
        with psycopg.connect(maintenance) as conn:
            values = [conn.execute(f"SHOW {name}").fetchone() for name in ("fsync", "synchronous_commit")]
        fsync, commit = (v[0] if v else "?" for v in values)
        args.pg_durability = f"PostgreSQL fsync {fsync}, synchronous_commit {commit}"
        admin = (
            stack.enter_context(psycopg.connect(maintenance, autocommit=True))
            if is_local(maintenance)
            else None
        )
        for backend in args.backends:
            with ExitStack() as phase_stack:
                if backend == "serve":
                    vault = start_serve(phase_stack, maintenance, tmp, args)
                else:
                    vault = start_dev(phase_stack, tmp, args)
                vault.take_body = sessions.reader()
                bao_side.backend = vault.backend
                say(
                    f"{vault.backend}: vault up (pid {vault.root_pid}), {args.users} users ingested,"
                    f" {total.seconds:.0f} s"
                )
                samples += uvloop.run(phase(vault, bao_side, sessions, args, admin))
                end_of_phase(vault, notes, maintenance, tmp)
        args.sessions_late = sessions.late
        head = header(args, pg, load, bao, notes, total.seconds / 60)
    say(f"total {total.seconds:.0f} s")
    return f"{head}\n{tables(samples, notes.rss)}\n\nCommand: `{command}`\n"


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with SIGINT ignored
    try:
        text = run_benchmark(args, " ".join([".venv/bin/python -m bench.vs_openbao", *argv]))
    except KeyboardInterrupt:
        say("interrupted: OpenBao, the vaults, the scratch database and the temp directory are gone")
        sys.exit(130)
    write_report(text, args.out)


if __name__ == "__main__":
    main()
