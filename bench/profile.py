"""Where a vault process spends its CPU under load: py-spy samples of ``session-vault serve``.

``--what lease``: ``--concurrency`` workers run lease-and-release cycles over ``--users`` users (as
bench/lease.py does) against one vault process; ``--what ingest``: they POST new sessions (~7.7 KB, a new
user each) to ``/api/import-session`` (as bench/ingest.py does). After a warm-up, ``py-spy record`` samples
the process (non-blocking, without idle samples: on-CPU time of the Python threads) for ``--seconds``.

Writes ``bench/results/profile-<what>.md`` (where the samples fall: by stage of the request, by layer, by
function, self and cumulative) and, in the temp directory, ``sv-profile-<what>.folded`` (the collapsed
stacks, ~1.5 MB, for flamegraph.pl or speedscope.app).
Needs py-spy (``pip install -e '.[bench]'``) and the right to ptrace the vault (root, or
CAP_SYS_PTRACE). Run from the repository root::

    .venv/bin/python -m bench.profile --what lease --concurrency 16 --seconds 20
    .venv/bin/python -m bench.profile --what ingest --concurrency 16 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from itertools import count
from pathlib import Path

import psycopg
import uvloop

from bench._harness import Probe, load_average, markdown_table, say, utc_now, write_report
from bench._http1 import Http1
from bench._lease_load import TOKEN_NAME, Cycle, Tally, drive, ingest_users, prepare, vault_cycle
from bench._openbao_vault import dev_process
from bench._setup import (
    DEFAULT_DATABASE_URL,
    VaultProcess,
    is_local,
    maintenance_url,
    vault_cli,
    vault_env,
    vault_process,
    with_database,
)
from tests.sessiongen import make_session

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*)\)$")
_ROOT = "_run_module_as_main"  # the outermost frame of a complete stack of the main thread

# py-spy names files relative to their sys.path entry: ``sqlalchemy/engine/base.py``, ``asyncio/events.py``.
PACKAGES = {
    "uvicorn": "uvicorn",
    "httptools": "httptools",
    "h11": "h11",
    "starlette": "starlette",
    "fastapi": "fastapi",
    "pydantic": "pydantic",
    "pydantic_core": "pydantic",
    "pydantic_settings": "pydantic",
    "sqlalchemy": "sqlalchemy",
    "asyncpg": "asyncpg",
    "cryptography": "cryptography",
    "uvloop": "uvloop",
    "anyio": "anyio",
    "greenlet": "greenlet",
}


ENTRY = "vault (cli, _server)"


def layer(file: str) -> str:
    """The layer of a frame's file: ``vault.<package>``, a third-party package, ``stdlib <module>``."""
    parts = file.split("/")
    top = parts[0].removesuffix(".py")
    if top == "vault":
        return "vault." + parts[1].removesuffix(".py") if len(parts) > 2 else ENTRY
    if top in PACKAGES:
        return PACKAGES[top]
    if file.startswith("<"):  # <frozen runpy>, <string> (code that dataclasses generate)
        return "stdlib (generated/frozen)"
    if top in sys.stdlib_module_names:
        return f"stdlib {top}"
    return f"other: {top}"


def is_stdlib(name: str) -> bool:
    """Standard library, or the vault's entry point (vault/cli.py, vault/_server.py: every stack's root)."""
    return name.startswith("stdlib") or name == ENTRY


@dataclass(frozen=True)
class Frame:
    func: str
    file: str

    @property
    def label(self) -> str:
        return f"{self.func} ({self.file})"

    @property
    def layer(self) -> str:
        return layer(self.file)


def parse_folded(lines: Iterable[str]) -> list[tuple[list[Frame], int]]:
    """py-spy's raw output: ``frame;frame;...;leaf COUNT``, root first (process and thread entries, if
    any, are dropped)."""
    stacks: list[tuple[list[Frame], int]] = []
    for line in lines:
        stack, _, n = line.rstrip("\n").rpartition(" ")
        frames = []
        for part in stack.split(";"):
            match = _FRAME.match(part)
            if match is not None and not part.startswith(("process ", "thread ")):
                frames.append(Frame(match["func"], match["file"]))
        if frames:
            stacks.append((frames, int(n)))
    return stacks


# Stages of a request, by the innermost of these frames on a complete stack: (stage, function, file).
STAGES = (
    ("request body: read_json (json.loads + strict model_validate)", "read_json", "vault/api/_deps.py"),
    ("token authentication (own transaction)", "authenticate", "vault/service/_tokens.py"),
    ("token authentication (own transaction)", "Vault.authenticate", "vault/service/_vault.py"),
    ("audit record: canonical JSON + HMAC", "Auditor.record", "vault/service/_audit.py"),
    ("session decrypt (DEK cache, AES-GCM)", "open_session", "vault/service/_ingest.py"),
    ("lease grant transaction", "LeaseService.grant", "vault/service/_leases.py"),
    ("lease release transaction", "LeaseService.release", "vault/service/_leases.py"),
    ("lease grant batch (one transaction for the batch)", "grant_batch", "vault/service/_lease_batch.py"),
    ("lease release batch (one transaction for the batch)", "release_batch", "vault/service/_lease_batch.py"),
    ("token lookup batch", "TokenService._lookup_batch", "vault/service/_tokens.py"),
    ("token authentication (own transaction)", "TokenService.authenticate", "vault/service/_tokens.py"),
    ("batcher: queueing and waking callers", "Batcher", "vault/service/_batch.py"),
    ("session parse + validation", "parse_session", "vault/sessions/_parse.py"),
    ("ingest transaction", "ingest", "vault/service/_ingest.py"),
    ("audit sealer (background)", "Vault._seal_forever", "vault/service/_vault.py"),
    ("FastAPI: response model validation + serialization", "serialize_response", "fastapi/routing.py"),
    ("FastAPI: dependency solving (other)", "solve_dependencies", "fastapi/dependencies/utils.py"),
    ("endpoint function (other)", "run_endpoint_function", "fastapi/routing.py"),
    ("lean path: lease routes (vault/api/_lane.py, other)", "LeaseLane", "vault/api/_lane.py"),
    ("lean path: lease routes (vault/api/_lane.py, other)", "_answer", "vault/api/_lane.py"),
    ("ASGI app: FastAPI/Starlette routing, middleware", "RequestResponseCycle.run_asgi", "uvicorn/"),
    ("uvicorn: HTTP parsing, response writing, access log", "HttpToolsProtocol", "uvicorn/"),
    ("uvicorn: HTTP parsing, response writing, access log", "RequestResponseCycle.send", "uvicorn/"),
)
GREENLET = "SQLAlchemy/asyncpg inside a greenlet (caller not on the stack)"
OTHER_PARTIAL = "other stacks without their root (resumed coroutines, threads)"
LOOP = "event loop and transports (no request frame on the stack)"
ASYNCPG_LOOP = "asyncpg protocol: results arriving (an event-loop callback, no request frame)"


def stage_of(frames: Sequence[Frame]) -> str:
    if frames[0].func != _ROOT:
        return GREENLET if frames[0].layer in {"sqlalchemy", "asyncpg"} else OTHER_PARTIAL
    for frame in reversed(frames):
        for name, func, file in STAGES:
            if frame.file.startswith(file) and (frame.func == func or frame.func.startswith(func + ".")):
                return name
    if any(frame.layer == "asyncpg" for frame in frames):
        return ASYNCPG_LOOP
    return LOOP


# What SQLAlchemy is doing, for samples with a SQLAlchemy frame: the first rule whose needle is in any
# frame's file (or, for "statement construction", the stack's shape) names it.
SQLALCHEMY_PARTS = (
    ("cache key generation", ("sqlalchemy/sql/cache_key.py",)),
    ("asyncpg, called through SQLAlchemy", ("asyncpg/",)),
    ("compiler (statements are cached; bind parameter processing)", ("sqlalchemy/sql/compiler.py",)),
)
_EXECUTION = ("sqlalchemy/engine/base.py", "sqlalchemy/ext/asyncio/engine.py", "sqlalchemy/pool/")


def sqlalchemy_part(frames: Sequence[Frame]) -> str | None:
    files = [f.file for f in frames]
    if not any(f.startswith("sqlalchemy/") for f in files):
        return None
    for name, needles in SQLALCHEMY_PARTS:
        if any(n in f for f in files for n in needles):
            return name
    if any(f.startswith(("sqlalchemy/engine/result.py", "sqlalchemy/engine/cursor.py")) for f in files):
        return "result wrapping (rows, mappings)"
    if any(f.startswith("vault/store/") for f in files) and not any(f.startswith(_EXECUTION) for f in files):
        return "statement construction (select/insert/where/values, called from vault.store)"
    if any(f.startswith("sqlalchemy/pool/") for f in files):
        return "connection pool checkout and return"
    if frames[-1].file.startswith(
        ("sqlalchemy/dialects/postgresql/asyncpg.py", "sqlalchemy/util/concurrency.py")
    ):
        return "asyncpg adaptation and greenlet switching"
    if any(f.startswith(("sqlalchemy/engine/default.py", "sqlalchemy/engine/base.py")) for f in files):
        return "execution context, events, parameters"
    return "other SQLAlchemy"


@dataclass
class Profile:
    total: int
    self_by_layer: Counter[str]
    nearest_by_layer: Counter[str]  # the innermost frame outside the standard library
    cumulative_by_layer: Counter[str]
    self_by_func: Counter[str]
    cumulative_by_func: Counter[str]
    by_stage: Counter[tuple[str, str]]  # (stage, nearest layer)
    sqlalchemy: Counter[str]


def analyse(stacks: Sequence[tuple[list[Frame], int]]) -> Profile:
    profile = Profile(0, Counter(), Counter(), Counter(), Counter(), Counter(), Counter(), Counter())
    for frames, n in stacks:
        profile.total += n
        leaf = frames[-1]
        profile.self_by_layer[leaf.layer] += n
        profile.self_by_func[leaf.label] += n
        nearest = next((f.layer for f in reversed(frames) if not is_stdlib(f.layer)), leaf.layer)
        profile.nearest_by_layer[nearest] += n
        profile.by_stage[(stage_of(frames), nearest)] += n
        part = sqlalchemy_part(frames)
        if part is not None:
            profile.sqlalchemy[part] += n
        for name in {f.layer for f in frames}:
            profile.cumulative_by_layer[name] += n
        for label in {f.label for f in frames}:
            profile.cumulative_by_func[label] += n
    return profile


def pct(n: int, total: int) -> str:
    return f"{100 * n / total:.1f}%"


def layer_table(profile: Profile) -> str:
    headers = [
        "layer", "self", "self, stdlib frames charged to the nearest caller outside the stdlib", "cumulative"
    ]  # fmt: skip
    names = sorted(
        profile.cumulative_by_layer, key=lambda k: (-profile.nearest_by_layer[k], -profile.self_by_layer[k])
    )
    rows = [
        [name]
        + [pct(counts[name], profile.total) for counts in
           (profile.self_by_layer, profile.nearest_by_layer, profile.cumulative_by_layer)]
        for name in names
    ]  # fmt: skip
    return markdown_table(headers, rows)


def stage_table(profile: Profile, columns: int = 6) -> str:
    """Stages (rows) by the layer that spends the time (nearest caller outside the stdlib)."""
    stages: Counter[str] = Counter()
    layers: Counter[str] = Counter()
    for (stage, name), n in profile.by_stage.items():
        stages[stage] += n
        layers[name] += n
    shown = [name for name, _ in layers.most_common(columns)]
    rows = []
    for stage, n in stages.most_common():
        cells = [profile.by_stage[(stage, name)] for name in shown]
        rest = n - sum(cells)
        rows.append(
            [stage, pct(n, profile.total), *(pct(c, profile.total) if c else "" for c in [*cells, rest])]
        )
    return markdown_table(["stage", "total", *shown, "other layers"], rows)


def sqlalchemy_table(profile: Profile) -> str:
    total = sum(profile.sqlalchemy.values())
    rows = [[pct(n, profile.total), name] for name, n in profile.sqlalchemy.most_common()]
    return (
        f"{pct(total, profile.total)} of all samples have a SQLAlchemy frame on the stack:\n\n"
        + markdown_table(["share of all samples", "what SQLAlchemy is doing"], rows, "rl")
    )


def func_table(counts: Counter[str], total: int, top: int, heading: str) -> str:
    rows = [[pct(n, total), f"`{label}`"] for label, n in counts.most_common(top)]
    return markdown_table([heading, "function (file)"], rows, "rl")


# --- load ----------------------------------------------------------------------------------------------


def ingest_cycle(conn: Http1, seeds: Iterable[int]) -> Cycle:
    """Each call POSTs one new session (a new user) to the public ingest endpoint."""
    numbers = iter(seeds)

    async def cycle(_user: str, tally: Tally) -> None:
        body = json.dumps({"session": make_session(next(numbers))[0]}).encode()
        started = time.perf_counter()
        status, _ = await conn.post("/api/import-session", body)
        if status != 201:
            tally.failed(f"ingest {status}")
            return
        tally.done(time.perf_counter() - started)

    return cycle


@dataclass(frozen=True)
class Sampled:
    ops: int
    seconds: float
    vault_cpu_ms: float  # per operation, while sampled
    failures: Counter[str]


async def sample_under_load(
    what: str, proc: VaultProcess, users: list[str], token: str, args: argparse.Namespace, probe: Probe
) -> Sampled:
    cycles: list[Cycle]
    if what == "lease":
        cycles = [vault_cycle([Http1(proc.host, proc.port, token)]) for _ in range(args.concurrency)]
    else:
        seeds = count(1_000_000)
        cycles = [ingest_cycle(Http1(proc.host, proc.public_port), seeds) for _ in range(args.concurrency)]
    targets = users or [""]
    await drive(cycles, targets, args.warmup, Tally())
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    command = [
        py_spy, "record", "--pid", str(proc.pid), "--duration", str(args.seconds), "--rate", str(args.rate),
        "--format", "raw", "--nolineno", *(["--gil"] if args.gil else []),
        "--output", str(args.folded),
    ]  # fmt: skip
    spy = await asyncio.create_subprocess_exec(*command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    tally = Tally()
    before = probe.snapshot()
    seconds = await drive(cycles, targets, args.seconds + 1.0, tally)
    cpu = probe.snapshot() - before
    _, err = await spy.communicate()
    if spy.returncode != 0:
        raise RuntimeError(f"py-spy failed ({spy.returncode}): {err.decode(errors='replace').strip()}")
    return Sampled(tally.cycles, seconds, cpu.vault / max(tally.cycles, 1) * 1000, tally.errors)


def report(what: str, args: argparse.Namespace, sampled: Sampled, profile: Profile, command: str) -> str:
    op = "lease-and-release cycle" if what == "lease" else "ingest"
    sampling = "threads holding the GIL only" if args.gil else "idle threads dropped"
    failures = (
        ""
        if not sampled.failures
        else "\n- failed requests: " + ", ".join(f"{k} x{v}" for k, v in sampled.failures.items())
    )
    return f"""# Profile of one `session-vault serve` process: {what}

- date: {utc_now()}; load average at the end: {load_average()}
- load: {args.concurrency} workers, {op}s{" over " + str(args.users) + " users" if what == "lease" else ""}; \
{sampled.ops} in {sampled.seconds:.1f} s ({sampled.ops / sampled.seconds:.0f}/s) while sampled; \
vault process CPU {sampled.vault_cpu_ms:.2f} ms per {op} (py-spy running){failures}
- py-spy {args.rate} Hz for {args.seconds} s, {sampling}: {profile.total:,} samples of Python stacks \
(time in C extensions counts for the Python frame that called them)
- self: the sample's innermost frame is in that layer; the second column charges standard-library frames \
(asyncio, logging, json, ...) to the nearest caller outside the standard library instead; cumulative: the \
layer is anywhere on the stack

## By stage of the request (rows) and layer (columns)

The stage is the innermost of a list of marker functions on the stack (see `STAGES` in bench/profile.py);
the layer is the innermost frame outside the standard library. SQLAlchemy runs its synchronous core in
greenlets, and py-spy sees a greenlet's frames without the coroutine that started it: those samples form
their own row.

{stage_table(profile)}

## Inside SQLAlchemy

{sqlalchemy_table(profile)}

## By layer

{layer_table(profile)}

## Functions by self time

{func_table(profile.self_by_func, profile.total, args.top, "self")}

## Functions by cumulative time

{func_table(profile.cumulative_by_func, profile.total, args.top + 20, "cumulative")}

Collapsed stacks: `{args.folded}`. Command: `{command}`
"""


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--what", choices=("lease", "ingest"), default="lease")
    parser.add_argument(
        "--vault",
        choices=("serve", "dev"),
        default="serve",
        help="serve: one `serve` worker on a scratch PostgreSQL database; dev: `session-vault dev` (SQLite)",
    )
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=20, help="sampling time")
    parser.add_argument("--warmup", type=float, default=3.0, help="load before sampling starts")
    parser.add_argument("--rate", type=int, default=200, help="samples per second")
    parser.add_argument("--users", type=int, default=1000, help="users to lease (lease only)")
    parser.add_argument("--top", type=int, default=30, help="functions to list")
    parser.add_argument(
        "--all-active",
        dest="gil",
        action="store_false",
        help="keep samples of threads that are not idle but do not hold the GIL (default: GIL holders only)",
    )
    parser.add_argument(
        "--database-url",
        default=DEFAULT_DATABASE_URL,
        help="maintenance database; a scratch database is created next to it",
    )
    parser.add_argument("--out-dir", type=Path, default=Path("bench/results"))
    parser.add_argument(
        "--folded", type=Path, default=None, help="collapsed stacks (default: TMPDIR/sv-profile-WHAT.folded)"
    )
    args = parser.parse_args(argv)
    if args.folded is None:
        args.folded = Path(tempfile.gettempdir()) / f"sv-profile-{args.what}.folded"
    if args.concurrency < 1 or args.seconds < 1 or args.rate < 1:
        parser.error("--concurrency, --seconds and --rate must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    maintenance = maintenance_url(args.database_url)
    with ExitStack() as stack:
        if args.vault == "dev":
            proc, users, token = start_dev(stack, args.users if args.what == "lease" else 0)
            probe = Probe(None, "", [proc.pid])
        else:
            prepared = prepare(stack, maintenance, args.users if args.what == "lease" else 0)
            vault_url = with_database(maintenance, prepared.db_name, driver="postgresql+asyncpg")
            log = prepared.tmp / "vault.log"
            # one process (VAULT_WORKERS=1): py-spy samples it alone; `serve` would otherwise run one per core
            proc = stack.enter_context(
                vault_process(vault_url, prepared.secrets, log, {"VAULT_WORKERS": "1"})
            )
            local = is_local(maintenance)
            admin = stack.enter_context(psycopg.connect(maintenance, autocommit=True)) if local else None
            probe = Probe(admin, prepared.db_name, [proc.pid])
            users, token = prepared.users, prepared.token
        say(f"vault pid {proc.pid}: {args.what} load, sampling {args.seconds} s")
        sampled = uvloop.run(sample_under_load(args.what, proc, users, token, args, probe))
    profile = analyse(parse_folded(args.folded.read_text().splitlines()))
    command = " ".join([".venv/bin/python -m bench.profile", *argv])
    text = report(args.what, args, sampled, profile, command)
    suffix = "-dev" if args.vault == "dev" else ""
    write_report(text, args.out_dir / f"profile-{args.what}{suffix}.md")


def start_dev(stack: ExitStack, users: int) -> tuple[VaultProcess, list[str], str]:
    """``session-vault dev`` in a temporary data directory (SQLite), a signer token made with the CLI, and
    ``users`` users ingested through its public endpoint."""
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sv_profile_")))
    data_dir = tmp / "dev"
    data_dir.mkdir(mode=0o700)
    cli = ["--data-dir", str(data_dir)]
    vault_cli(["db", "upgrade", *cli], vault_env("", {}))
    token = vault_cli(["token", "create", *cli, "--role", "signer", "--name", TOKEN_NAME], vault_env("", {}))
    proc = stack.enter_context(dev_process(data_dir, tmp / "dev.log", {}))
    user_ids = uvloop.run(ingest_users(proc, users)) if users else []
    return proc, user_ids, token.strip()


if __name__ == "__main__":
    main()
