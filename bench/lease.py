"""Lease-and-release cycles: the real vault over HTTP (one and two processes) against bare asyncpg, same run.

What it measures, per concurrency level ``c`` (``c`` workers, each looping for ``--seconds``):

* ``vault, 1 proc`` / ``vault, 2 procs``: a cycle is ``POST /v1/users/{u}/lease``
  ``{"purpose": "bench", "ttl_seconds": 30}`` then ``POST /v1/leases/{id}/release`` ``{"fencing_token"}``
  with a signer token, for a user ``u`` drawn at random from ``--users`` (1,000: contention is rare), to
  real ``session-vault serve`` processes (uvicorn, FastAPI, SQLAlchemy + asyncpg, AES-GCM decrypt of the
  ~7.7 KB session, audit events, PostgreSQL). With two processes every worker has a connection to each
  and alternates: cycle k leases on process k mod 2 and releases on the other. The client is a minimal
  HTTP/1.1 client (:class:`Http1`) on uvloop: httpx would take a third of a core from the vault.
* ``baseline asyncpg``: the same cycles straight through an asyncpg pool (size ``min(c, 20)``, the
  vault's own per-process limit of 10 + 10 overflow): the token lookup (its own transaction, as the vault
  does for every request), the grant transaction (peek, lock the session row, look up the open lease,
  insert the lease with max(fencing_token)+1, insert the audit event), another token lookup, and the
  release transaction (lock the session row via the lease, read the lease, end it, insert the audit
  event). The SQL is the text SQLAlchemy compiles from ``vault/store`` (checked at start-up: a difference
  is printed and written into the report). No HTTP, no crypto (random bytes for the audit MAC).

A ``409 lease_held`` is counted apart and the worker moves on to another user; any other non-2xx is
counted as an error (a run with no cycle at all, or with more than 1,000 errors, aborts). Grant latency
is the grant request's round trip (vault) or token lookup + grant transaction (baseline). CPU ms per
cycle: of the path's vault processes, of the PostgreSQL backends serving the path's database, of this
process (the client; for the baseline it is the driver doing the work), their sum (what the path costs,
whatever else runs on the machine), and of the whole machine (``/proc/stat``, non-idle).

``--audit-sealing on,off`` runs every vault path twice, with ``VAULT_AUDIT_SEAL_INTERVAL_SECONDS`` set to
1 and to "off" in the processes' environment (issue 4: the audit chain's sealing step). "Off" is 0 where
``serve`` accepts 0, else 1000000 (the sealer seals once at start-up, then sleeps through the run). Until
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
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeAlias
from urllib.parse import urlsplit

import asyncpg
import psycopg
import uvloop

from bench.ingest import (
    admin_execute,
    free_port,
    log_tail,
    machine_busy_seconds,
    process_cpu_seconds,
    scratch_database,
    secret_files,
    server_version,
    stop,
    vault_cli,
    vault_env,
    wait_healthy,
    with_database,
)
from bench.whatif import parse as parse_whatif
from tests.sessiongen import make_session
from vault.errors import ConfigError
from vault.settings import Settings

AsyncpgPool: TypeAlias = Any  # asyncpg ships no type hints

BASELINE = "baseline asyncpg"
PURPOSE = "bench"
TTL_SECONDS = 30
LEASE_BODY = json.dumps({"purpose": PURPOSE, "ttl_seconds": TTL_SECONDS}).encode()
TOKEN_NAME = "bench-signer"  # noqa: S105 (a name, not a secret)
SEAL_ENV = "VAULT_AUDIT_SEAL_INTERVAL_SECONDS"
SEAL_SETTING = "audit_seal_interval_seconds"
SEAL_MODES = ("on", "off")
SEAL_ON = "1"
SEAL_NEVER = "1000000"  # seconds: "off" where serve refuses 0
MAX_ERRORS = 1000
MAC_BYTES = 32  # HMAC-SHA256
VAULT_POOL = 20  # a vault process's database connections at most: pool 10 + overflow 10 (the defaults)


# --- the SQL the vault issues, as SQLAlchemy compiles it for asyncpg (vault/store) ---------------------

_NOW = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)"
_LEASE_COLUMNS = (
    "leases.id, leases.session_id, leases.user_id, leases.session_version, leases.fencing_token,"
    " leases.holder_token_id, leases.purpose, leases.ttl_seconds, leases.granted_us, leases.expires_us,"
    " leases.ended_us, leases.end_reason"
)
SQL = {
    # Tx.token: every request authenticates its bearer token in a transaction of its own.
    "token": (
        "SELECT service_tokens.id, service_tokens.name, service_tokens.role, service_tokens.secret_hash,"
        " service_tokens.purposes, service_tokens.max_ttl_seconds, service_tokens.created_at,"
        " service_tokens.expires_at, service_tokens.revoked_at FROM service_tokens"
        " WHERE service_tokens.id = $1::VARCHAR"
    ),
    # grant: peek_session(user_id=...), lock_session, open_lease, insert_lease, insert_audit
    "peek": (
        "SELECT sessions.id, sessions.user_id, sessions.status, sessions.expires_at,"
        f" leases.expires_us AS lease_expires_us, {_NOW} AS now_us"
        " FROM sessions LEFT OUTER JOIN leases ON leases.session_id = sessions.id AND leases.ended_us IS NULL"
        " WHERE sessions.user_id = $1::VARCHAR ORDER BY sessions.status = $2::VARCHAR DESC,"
        " sessions.created_at DESC LIMIT $3::INTEGER"
    ),
    "lock_session": (
        "SELECT sessions.id, sessions.user_id, sessions.version, sessions.dek_version, sessions.status,"
        f" sessions.expires_at, sessions.ciphertext, {_NOW} AS now_us"
        " FROM sessions WHERE sessions.id = $1::VARCHAR FOR UPDATE"
    ),
    "open_lease": (
        f"SELECT {_LEASE_COLUMNS} FROM leases"
        " WHERE leases.session_id = $1::VARCHAR AND leases.ended_us IS NULL"
    ),
    "insert_lease": (
        "INSERT INTO leases (id, session_id, user_id, session_version, fencing_token, holder_token_id,"
        " purpose, ttl_seconds, granted_us, expires_us) SELECT $1::VARCHAR AS anon_1, $2::VARCHAR AS anon_2,"
        " $3::VARCHAR AS anon_3, $4::INTEGER AS anon_4, (SELECT coalesce(max(leases.fencing_token),"
        " $5::INTEGER) + $6::BIGINT AS anon_6 FROM leases WHERE leases.session_id = $7::VARCHAR) AS anon_5,"
        " $8::VARCHAR AS anon_7, $9::VARCHAR AS anon_8, $10::INTEGER AS anon_9, $11::BIGINT AS anon_10,"
        " $12::BIGINT AS anon_11 RETURNING leases.fencing_token"
    ),
    "insert_audit": (
        "INSERT INTO audit_events (at_us, action, outcome, actor_token_id, actor_name, user_id, session_id,"
        " lease_id, fencing_token, purpose, detail, request_id, source, subjects, mac, uid)"
        " VALUES ($1::BIGINT,"
        " $2::VARCHAR, $3::VARCHAR, $4::VARCHAR, $5::VARCHAR, $6::VARCHAR, $7::VARCHAR, $8::VARCHAR,"
        " $9::BIGINT, $10::VARCHAR, $11::VARCHAR, $12::VARCHAR, $13::VARCHAR, $14::VARCHAR, $15::BYTEA,"
        " $16::VARCHAR)"
        " RETURNING audit_events.id"
    ),
    # release: lock_lease (two statements), end_lease, insert_audit
    "lock_lease_session": (
        f"SELECT sessions.status, sessions.version, sessions.dek_version, {_NOW} AS now_us"
        " FROM sessions WHERE sessions.id = (SELECT leases.session_id FROM leases"
        " WHERE leases.id = $1::VARCHAR) FOR UPDATE"
    ),
    "lease_by_id": f"SELECT {_LEASE_COLUMNS} FROM leases WHERE leases.id = $1::VARCHAR",
    "end_lease": (
        "UPDATE leases SET ended_us=$1::BIGINT, end_reason=$2::VARCHAR WHERE leases.id = $3::VARCHAR"
    ),
}


class _Result:
    """What the recorder answers: a row of NULLs for a SELECT, 1 for a scalar."""

    def __init__(self, statement: Any) -> None:
        self.statement = statement

    def mappings(self) -> _Result:
        return self

    def first(self) -> dict[str, None]:
        return dict.fromkeys(self.statement.selected_columns.keys())

    def scalar_one(self) -> int:
        return 1


def _record_vault_sql() -> dict[str, str]:
    """The SQL the vault sends to PostgreSQL for each statement of a lease cycle (vault/store/_exec.py)."""
    from sqlalchemy import BigInteger, literal_column

    from vault.store import _audit, _exec, _leases, _store

    now = literal_column(_exec._NOW_SQL["postgresql"], BigInteger)
    builders = {
        "token": _store._token, "peek": _leases._peek_by_user, "lock_session": _leases._lock_session,
        "open_lease": _leases._open_lease_and_clock, "insert_lease": _leases._insert_lease,
        "insert_audit": _audit._insert_event,
        "lock_lease_session": _leases._lock_lease_session, "lease_by_id": _leases._lease_and_clock,
        "end_lease": _leases._end_lease,
    }  # fmt: skip
    return {
        name: " ".join(_exec._prepare(build(now), "postgresql").sql.split())
        for name, build in builders.items()
    }


def baseline_sql_drift() -> list[str]:
    """How the baseline's SQL differs from what ``vault/store`` compiles today (empty: it does not)."""
    try:
        recorded = _record_vault_sql()
    except Exception as exc:  # the store's methods changed shape: say so, do not stop the benchmark
        return [f"could not record the vault's SQL ({type(exc).__name__}: {exc})"]
    return [
        f"{name}: the vault now issues `{recorded[name]}`"
        for name, sql in SQL.items()
        if " ".join(sql.split()) != recorded[name]
    ]


# --- scratch databases, users, vault processes ---------------------------------------------------------


@contextmanager
def database_copy(maintenance_url: str, template: str, name: str) -> Iterator[str]:
    """``CREATE DATABASE name TEMPLATE template``; yield ``name``; drop it (forcibly) on the way out."""
    admin_execute(maintenance_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin_execute(maintenance_url, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield name
    finally:
        admin_execute(maintenance_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass(frozen=True)
class VaultProcess:
    host: str
    public_port: int  # ingest
    port: int  # the internal listener: leases
    pid: int


@contextmanager
def vault_process(
    vault_url: str, secrets: dict[str, str], log: Path, extra_env: dict[str, str], whatif: str = ""
) -> Iterator[VaultProcess]:
    """One ``session-vault serve`` on free ports, healthy; stopped on the way out. ``whatif``: run it
    with those experimental changes (bench/whatif.py)."""
    public_port, internal_port = free_port(), free_port()
    env = vault_env(vault_url, secrets, public_port, internal_port) | extra_env
    module = "vault.cli"
    if whatif:
        module, env["SV_WHATIF"] = "bench.whatif", whatif
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, "serve"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_healthy(proc, f"http://127.0.0.1:{internal_port}/healthz", log)
        yield VaultProcess("127.0.0.1", public_port, internal_port, proc.pid)
    except Exception:
        stop(proc)
        print(f"--- last lines of {log} ---\n{log_tail(log)}", file=sys.stderr)
        raise
    finally:
        stop(proc)


async def ingest_users(proc: VaultProcess, users: int) -> list[str]:
    """POST a new session for each of ``users`` users to the vault's public ingest; their user ids."""
    seeds = iter(range(1, users + 1))
    user_ids: list[str] = []

    async def worker() -> None:
        conn = Http1(proc.host, proc.public_port)
        try:
            for seed in seeds:
                body = json.dumps({"session": make_session(seed)[0]}).encode()
                status, answer = await conn.post("/api/import-session", body)
                if status != 201:
                    raise RuntimeError(f"ingest: HTTP {status} {_error_code(answer)}")
                user_ids.append(json.loads(answer)["user_id"])
        finally:
            await conn.close()

    await asyncio.gather(*(worker() for _ in range(8)))
    if len(set(user_ids)) != users:
        raise RuntimeError("the generated sessions do not belong to distinct users")
    return user_ids


def sealing_supported() -> bool:
    """Whether this vault knows the audit sealing interval setting yet (issue 4)."""
    return SEAL_SETTING in Settings.model_fields


def off_value(secrets: dict[str, str]) -> str:
    """``0`` if ``serve`` accepts it; else an interval longer than any run (the sealer seals once when the
    process starts, then sleeps through the benchmark)."""
    values: dict[str, object] = {k.removeprefix("VAULT_").lower(): v for k, v in secrets.items()}
    values |= {"database_url": "postgresql+asyncpg://bench@127.0.0.1/bench", SEAL_SETTING: 0}
    try:
        Settings.model_validate(values).check_production()
    except (ConfigError, ValueError) as exc:
        if SEAL_ENV in str(exc) or SEAL_SETTING in str(exc):
            return SEAL_NEVER
        raise
    return "0"


# --- a lean HTTP/1.1 client ----------------------------------------------------------------------------


class Http1:
    """One keep-alive HTTP/1.1 connection that POSTs JSON with a bearer token.

    The client shares the machine's cores with the vault and PostgreSQL, so it must cost little: httpx
    spends ~0.7 ms of CPU per request (bench/ingest.py), this ~0.05 ms. It handles exactly what uvicorn
    answers here: a status line, headers with ``content-length``, a body; it reconnects after
    ``connection: close``.
    """

    def __init__(self, host: str, port: int, token: str | None = None) -> None:
        self.host, self.port = host, port
        auth = "" if token is None else f"authorization: Bearer {token}\r\n"
        self._head = f"host: {host}:{port}\r\n{auth}content-type: application/json\r\n".encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._reader, self._writer
        writer.write(
            b"POST %s HTTP/1.1\r\n%scontent-length: %d\r\n\r\n%s"
            % (path.encode(), self._head, len(body), body)
        )
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length, close = 0, False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
                elif name == b"transfer-encoding":
                    raise RuntimeError("unexpected transfer-encoding in the vault's response")
            data = await reader.readexactly(length)
        except BaseException:
            await self.close()
            raise
        if close:
            await self.close()
        return status, data

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass


# --- measuring -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cpu:
    """CPU seconds: whole machine, this (client) process, the path's vault processes, the PostgreSQL
    processes serving the path's database."""

    machine: float
    client: float
    vault: float
    postgres: float

    @property
    def ours(self) -> float:
        """What the path cost, whatever else runs on the machine: client + vault + PostgreSQL."""
        return self.client + self.vault + self.postgres


def _cpu_of(pids: Sequence[int]) -> dict[int, float]:
    seconds: dict[int, float] = {}
    for pid in pids:
        try:
            seconds[pid] = process_cpu_seconds(pid)
        except (FileNotFoundError, ProcessLookupError):
            pass  # it just ended
    return seconds


@dataclass(frozen=True)
class Snapshot:
    machine: float
    client: float
    vault: float
    postgres: dict[int, float]  # backend pid -> CPU seconds

    def __sub__(self, before: Snapshot) -> Cpu:
        # A backend that started in the window counts whole; one that ended in it is lost (rare: the
        # pools keep their connections; the vault's overflow connections come and go).
        postgres = sum(cpu - before.postgres.get(pid, 0.0) for pid, cpu in self.postgres.items())
        return Cpu(
            self.machine - before.machine, self.client - before.client, self.vault - before.vault, postgres
        )


class Probe:
    """Reads the CPU counters of this process, the machine, some vault processes and the PostgreSQL
    backends of one database (found in ``pg_stat_activity``; only when the server runs on this host)."""

    def __init__(
        self, admin: psycopg.Connection[Any] | None, db_name: str, vault_pids: Sequence[int]
    ) -> None:
        self.admin, self.db_name, self.vault_pids = admin, db_name, vault_pids

    def snapshot(self) -> Snapshot:
        backends: list[int] = []
        if self.admin is not None:
            rows = self.admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (self.db_name,))
            backends = [int(row[0]) for row in rows]
        return Snapshot(
            machine_busy_seconds(),
            time.process_time(),
            sum(_cpu_of(self.vault_pids).values()),
            _cpu_of(backends),
        )


@dataclass
class Tally:
    """What one phase of a run did: finished cycles with their grant latencies, 409s, other failures."""

    cycles: int = 0
    held: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    def done(self, grant_seconds: float) -> None:
        self.cycles += 1
        self.latencies.append(grant_seconds)

    def failed(self, what: str) -> None:
        self.errors[what] += 1
        if sum(self.errors.values()) > MAX_ERRORS:
            summary = ", ".join(f"{k} x{v}" for k, v in self.errors.most_common())
            raise RuntimeError(f"more than {MAX_ERRORS} failed requests: {summary}")


Cycle: TypeAlias = Callable[[str, Tally], Awaitable[None]]  # one lease-and-release of one user


@dataclass(frozen=True)
class Run:
    seconds: float
    tally: Tally
    cpu: Cpu
    warmup: Tally

    @property
    def rate(self) -> float:
        return self.tally.cycles / self.seconds

    def percentile_ms(self, p: int) -> float:
        latencies = self.tally.latencies
        if len(latencies) < 2:
            return latencies[0] * 1000
        return statistics.quantiles(latencies, n=100, method="inclusive")[p - 1] * 1000

    def cpu_ms(self, seconds: float) -> float:
        return seconds / self.tally.cycles * 1000


async def drive(cycles: Sequence[Cycle], users: Sequence[str], seconds: float, tally: Tally) -> float:
    """Every cycle function as one worker, each starting cycles on random users until ``seconds`` are up;
    return the elapsed time until the last worker finished its last cycle."""
    started = time.perf_counter()
    deadline = started + seconds

    async def worker(cycle: Cycle, rng: random.Random) -> None:
        while time.perf_counter() < deadline:
            try:
                await cycle(rng.choice(users), tally)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                tally.failed(type(exc).__name__)

    await asyncio.gather(*(worker(cycle, random.Random()) for cycle in cycles))
    return time.perf_counter() - started


async def measure(cycles: Sequence[Cycle], users: Sequence[str], plan: Plan, probe: Probe, what: str) -> Run:
    warm = Tally()
    await drive(cycles, users, plan.warmup, warm)
    tally = Tally()
    before = probe.snapshot()
    seconds = await drive(cycles, users, plan.seconds, tally)
    cpu = probe.snapshot() - before
    if tally.cycles == 0:
        raise RuntimeError(f"{what}: no cycle finished; failures: {dict(tally.errors)}")
    return Run(seconds, tally, cpu, warm)


# --- the paths -----------------------------------------------------------------------------------------


def _error_code(body: bytes) -> str:
    try:
        return str(json.loads(body).get("error"))
    except (ValueError, AttributeError):
        return "?"


def vault_cycle(conns: Sequence[Http1]) -> Cycle:
    """Cycle k grants through ``conns[k % n]`` and releases through ``conns[(k + 1) % n]``."""
    turn = 0

    async def cycle(user_id: str, tally: Tally) -> None:
        nonlocal turn
        grant_conn, release_conn = conns[turn % len(conns)], conns[(turn + 1) % len(conns)]
        turn += 1
        started = time.perf_counter()
        status, body = await grant_conn.post(f"/v1/users/{user_id}/lease", LEASE_BODY)
        grant_seconds = time.perf_counter() - started
        if status != 201:
            code = _error_code(body)
            if status == 409 and code == "lease_held":
                tally.held += 1
            else:
                tally.failed(f"grant {status} {code}")
            return
        grant = json.loads(body)
        release = json.dumps({"fencing_token": grant["fencing_token"]}).encode()
        status, body = await release_conn.post(f"/v1/leases/{grant['lease_id']}/release", release)
        if status != 200:
            tally.failed(f"release {status} {_error_code(body)}")
            return
        tally.done(grant_seconds)

    return cycle


@dataclass(frozen=True)
class Caller:
    """What the vault knows about the caller and the request: the values its audit rows carry."""

    token_id: str
    name: str = TOKEN_NAME
    source: str = "127.0.0.1"


async def _audit(
    conn: Any, caller: Caller, action: str, outcome: str, at_us: int, **ids: str | int | None
) -> None:
    """An audit row as the vault writes it (at the database's clock), with random bytes for its MAC."""
    await conn.fetchval(
        SQL["insert_audit"], at_us, action, outcome, caller.token_id, caller.name, ids.get("user_id"),
        ids.get("session_id"), ids.get("lease_id"), ids.get("fencing_token"), PURPOSE, ids.get("detail"),
        str(uuid.uuid4()), caller.source, None, os.urandom(MAC_BYTES), os.urandom(16).hex(),
    )  # fmt: skip


async def _authenticate(pool: AsyncpgPool, caller: Caller) -> None:
    async with pool.acquire() as conn, conn.transaction():
        if await conn.fetchrow(SQL["token"], caller.token_id) is None:
            raise RuntimeError("the signer token is missing from the baseline's database")


async def _grant(pool: AsyncpgPool, caller: Caller, user_id: str) -> tuple[str, int] | None:
    """The grant transaction of ``LeaseService._grant_in`` for a user; None if the lease is held."""
    async with pool.acquire() as conn, conn.transaction():
        peek = await conn.fetchrow(SQL["peek"], user_id, "active", 1)
        if peek is None or peek["status"] != "active":
            raise RuntimeError(f"user {user_id} has no active session in the baseline's database")
        if peek["lease_expires_us"] is not None and peek["lease_expires_us"] > peek["now_us"]:
            ids = {"user_id": user_id, "session_id": peek["id"]}
            await _audit(conn, caller, "lease.grant", "denied", peek["now_us"], detail="lease_held", **ids)
            return None
        locked = await conn.fetchrow(SQL["lock_session"], peek["id"])
        ids = {"user_id": locked["user_id"], "session_id": locked["id"]}
        now_us = locked["now_us"]
        current = await conn.fetchrow(SQL["open_lease"], locked["id"])
        if current is not None:
            if current["expires_us"] > now_us:
                await _audit(conn, caller, "lease.grant", "denied", now_us, detail="lease_held", **ids)
                return None
            await conn.execute(SQL["end_lease"], now_us, "expired", current["id"])
            await _audit(
                conn, caller, "lease.takeover", "ok", now_us, lease_id=current["id"],
                fencing_token=current["fencing_token"], **ids,
            )  # fmt: skip
        lease_id = str(uuid.uuid4())
        fence: int = await conn.fetchval(
            SQL["insert_lease"], lease_id, locked["id"], locked["user_id"], locked["version"], 0, 1,
            locked["id"], caller.token_id, PURPOSE, TTL_SECONDS, now_us, now_us + TTL_SECONDS * 1_000_000,
        )  # fmt: skip
        await _audit(conn, caller, "lease.grant", "ok", now_us, lease_id=lease_id, fencing_token=fence, **ids)
    return lease_id, fence


async def _release(pool: AsyncpgPool, caller: Caller, lease_id: str, fencing_token: int) -> None:
    """The release transaction of ``LeaseService.release`` without write-back."""
    async with pool.acquire() as conn, conn.transaction():
        session = await conn.fetchrow(SQL["lock_lease_session"], lease_id)
        lease = await conn.fetchrow(SQL["lease_by_id"], lease_id)
        if session is None or lease is None:
            raise RuntimeError(f"lease {lease_id} vanished")
        if (
            lease["holder_token_id"] != caller.token_id
            or lease["ended_us"] is not None
            or lease["expires_us"] <= session["now_us"]
            or lease["fencing_token"] != fencing_token
        ):
            raise RuntimeError(f"lease {lease_id} was lost")
        await conn.execute(SQL["end_lease"], session["now_us"], "released", lease_id)
        await _audit(
            conn, caller, "lease.release", "ok", session["now_us"], lease_id=lease_id,
            fencing_token=fencing_token, user_id=lease["user_id"], session_id=lease["session_id"],
        )  # fmt: skip


def baseline_cycle(pool: AsyncpgPool, caller: Caller) -> Cycle:
    async def cycle(user_id: str, tally: Tally) -> None:
        started = time.perf_counter()
        await _authenticate(pool, caller)
        granted = await _grant(pool, caller, user_id)
        grant_seconds = time.perf_counter() - started
        if granted is None:
            tally.held += 1
            return
        await _authenticate(pool, caller)
        await _release(pool, caller, *granted)
        tally.done(grant_seconds)

    return cycle


# --- orchestration -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    seconds: float
    warmup: float
    reps: int
    levels: tuple[int, ...]
    procs: tuple[int, ...]
    sealing: tuple[str, ...]  # "on" / "off"
    users: int
    whatif: tuple[str, ...] = ("",)  # bench/whatif.py change sets; "" is the vault as it is


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


async def one_run(path: BenchPath, setup: Setup, plan: Plan, c: int) -> Run:
    what = f"{path.name} [{path.sealing}] c={c}"
    probe = Probe(setup.admin, urlsplit(path.db_url).path.lstrip("/"), path.all_pids)
    if not path.procs:
        size = min(c, VAULT_POOL)
        pool = await asyncpg.create_pool(path.db_url, min_size=size, max_size=size)
        try:
            cycles = [baseline_cycle(pool, setup.caller) for _ in range(c)]
            return await measure(cycles, setup.users, plan, probe, what)
        finally:
            await pool.close()
    async with AsyncExitStack() as stack:
        cycles = []
        for i in range(c):
            conns = [Http1(p.host, p.port, setup.token) for p in path.procs]
            for conn in conns:
                stack.push_async_callback(conn.close)
            cycles.append(vault_cycle(conns[i % len(conns) :] + conns[: i % len(conns)]))
        return await measure(cycles, setup.users, plan, probe, what)


Results: TypeAlias = dict[tuple[str, str, int], list[Run]]


def progress(path: BenchPath, c: int, rep: int, run: Run) -> None:
    extra = f"  409 x{run.tally.held}" if run.tally.held else ""
    if run.tally.errors:
        extra += f"  errors {dict(run.tally.errors)}"
    print(
        f"  {path.name:<17} {path.sealing or '-':<3} c={c:<3} rep {rep}: {run.rate:7.0f}/s"
        f"  grant p50 {run.percentile_ms(50):6.1f} ms  p99 {run.percentile_ms(99):6.1f} ms"
        f"  CPU ms/cycle vault {run.cpu_ms(run.cpu.vault):5.2f} pg {run.cpu_ms(run.cpu.postgres):5.2f}"
        f" client {run.cpu_ms(run.cpu.client):5.2f} machine {run.cpu_ms(run.cpu.machine):5.2f}{extra}",
        file=sys.stderr,
        flush=True,
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


# --- report --------------------------------------------------------------------------------------------


def median_of(runs: Sequence[Run], value: Callable[[Run], float]) -> float:
    return statistics.median(value(r) for r in runs)


def sealing_label(mode: str, supported: bool) -> str:
    if not mode:
        return "-"
    return mode if supported else "n/a (no setting yet)"


def ms_per_cycle(runs: Sequence[Run], part: Callable[[Cpu], float]) -> float:
    return median_of(runs, lambda r: r.cpu_ms(part(r.cpu)))


def table(results: Results, plan: Plan, supported: bool) -> str:
    lines = [
        "| path | audit sealing | concurrency | cycles/s | grant p50 ms | grant p99 ms | rate vs. baseline"
        " | CPU ms/cycle: vault processes | PostgreSQL | bench client | sum of the three | CPU vs. baseline"
        " | whole machine | 409 lease_held | other non-2xx |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in plan.levels:
        baseline = results[(BASELINE, "", c)]
        base_rate = median_of(baseline, lambda r: r.rate)
        base_cpu = ms_per_cycle(baseline, lambda cpu: cpu.ours)
        for name, sealing in [(name, sealing) for name, sealing, level in results if level == c]:
            runs = results[(name, sealing, c)]
            rate, ours = median_of(runs, lambda r: r.rate), ms_per_cycle(runs, lambda cpu: cpu.ours)
            is_base = name == BASELINE
            lines.append(
                f"| {name} | {sealing_label(sealing, supported)} | {c} | {rate:,.0f}"
                f" | {median_of(runs, lambda r: r.percentile_ms(50)):.1f}"
                f" | {median_of(runs, lambda r: r.percentile_ms(99)):.1f}"
                f" | {'-' if is_base else f'{rate / base_rate:.2f}'}"
                f" | {'-' if is_base else f'{ms_per_cycle(runs, lambda cpu: cpu.vault):.2f}'}"
                f" | {ms_per_cycle(runs, lambda cpu: cpu.postgres):.2f}"
                f" | {ms_per_cycle(runs, lambda cpu: cpu.client):.2f}"
                f" | {ours:.2f} | {'-' if is_base else f'{ours / base_cpu:.1f}x'}"
                f" | {ms_per_cycle(runs, lambda cpu: cpu.machine):.2f}"
                f" | {sum(r.tally.held for r in runs)} | {sum(sum(r.tally.errors.values()) for r in runs)} |"
            )
    return "\n".join(lines)


def sealing_table(results: Results, plan: Plan) -> str:
    """Sealing on against off, per vault path and level (only when both ran)."""
    if set(plan.sealing) != {"on", "off"}:
        return ""
    lines = [
        "| path | concurrency | cycles/s on | cycles/s off | on / off | CPU ms/cycle, vault processes: on"
        " | off | CPU ms/cycle, vault + PostgreSQL + client: on | off |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in plan.levels:
        for name in [name for name, sealing, level in results if level == c and sealing == "on"]:
            on, off = results[(name, "on", c)], results[(name, "off", c)]
            rate_on, rate_off = median_of(on, lambda r: r.rate), median_of(off, lambda r: r.rate)
            lines.append(
                f"| {name} | {c} | {rate_on:,.0f} | {rate_off:,.0f} | {rate_on / rate_off:.2f}"
                + "".join(
                    f" | {ms_per_cycle(runs, part):.2f}"
                    for part in (lambda cpu: cpu.vault, lambda cpu: cpu.ours)
                    for runs in (on, off)
                )
                + " |"
            )
    return "\n\n## Audit sealing on vs. off\n\n" + "\n".join(lines)


def failures_text(results: Results) -> str:
    errors: Counter[str] = Counter()
    warm: Counter[str] = Counter()
    for runs in results.values():
        for run in runs:
            errors.update(run.tally.errors)
            warm.update(run.warmup.errors)
    if not errors and not warm:
        return "No request failed (other than the 409s counted above)."
    parts = [f"{k} x{v}" for k, v in errors.most_common()]
    parts += [f"(warm-up) {k} x{v}" for k, v in warm.most_common()]
    return "Failed requests: " + ", ".join(parts) + "."


@dataclass(frozen=True)
class ReportInfo:
    command: str
    pg_version: str
    load: str
    supported: bool
    seal_env: dict[str, str]  # mode -> VAULT_AUDIT_SEAL_INTERVAL_SECONDS
    drift: list[str]
    db_checks: list[str]


def report(plan: Plan, results: Results, ctx: ReportInfo) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    cpus = os.cpu_count()
    drift = (
        "the baseline's SQL is the SQL `vault/store` compiles now (checked at start-up)"
        if not ctx.drift
        else "**WARNING: the baseline's SQL differs from what `vault/store` issues now:** "
        + "; ".join(ctx.drift)
    )
    off = ctx.seal_env.get("off", "0")
    off_note = (
        ""
        if off == "0"
        else f" (`serve` refuses 0, so off is {off} s: the sealer seals once as the process starts and "
        "then sleeps through the run)"
    )
    sealing = (
        f"audit sealing: `{SEAL_ENV}` = {SEAL_ON} (on) / {off} (off) in the vault processes' "
        f"environment{off_note}; the sealer of a process seals every event committed since its last step, "
        "and signs a checkpoint when one is due (default every 60 s)"
        if ctx.supported
        else f"audit sealing: the vault has no `{SEAL_SETTING}` setting yet, so `{SEAL_ENV}` is not set "
        "(`--audit-sealing off` becomes possible once it exists)"
    )
    whatif = (
        "\n- `[changes]`: the vault with those experimental changes patched in by bench/whatif.py (vault/ "
        "itself unchanged; see that module)"
        if any(plan.whatif)
        else ""
    )
    return f"""# Lease benchmark: lease-and-release cycles, vault over HTTP vs. bare asyncpg

- date: {now}
- machine: nproc {cpus}, Python {platform.python_version()}, {platform.system()} {platform.release()}, \
PostgreSQL {ctx.pg_version}; load average at start: {ctx.load}
- per run: `concurrency` workers, each looping lease + release on a user drawn at random from \
{plan.users:,} (one ingested ~7.7 KB session each) for {plan.seconds:g} s after a {plan.warmup:g} s \
warm-up; each cell is the median of {plan.reps} runs; within a level all paths' runs alternate
- vault: `POST /v1/users/{{u}}/lease` `{{"purpose":"bench","ttl_seconds":30}}` then \
`POST /v1/leases/{{id}}/release` `{{"fencing_token"}}` with a signer token, to `session-vault serve` \
processes (default settings: DB pool 10 + 10 overflow each); with 2 processes each worker alternates \
between them (cycle k: grant on k mod 2, release on the other); client: one keep-alive connection per \
worker and process, a minimal HTTP/1.1 client on uvloop
- baseline: asyncpg pool of min(concurrency, 20), per cycle: token lookup, grant transaction (peek, \
SELECT ... FOR UPDATE, open lease, INSERT ... SELECT max+1, audit insert), token lookup, release \
transaction (lock via the lease, read the lease, end it, audit insert); no HTTP, no crypto; {drift}
- grant latency: the grant request's round trip (vault), token lookup + grant transaction (baseline)
- {sealing}
- CPU ms/cycle: CPU per finished cycle of the path's vault processes (both, for "1 proc": the second \
is idle apart from background work), of the PostgreSQL backends serving the path's database, of the \
bench process (the client; for the baseline it is the driver doing the work), the sum of these three \
(what the path costs, whatever else runs), and of the whole machine (non-idle, /proc/stat: includes \
anything else running, e.g. other sessions' tests); everything shares the {cpus} cores, so rates move \
with foreign load while CPU per cycle is the steadier figure
- each path has its own copy of the prepared database; at the end: {"; ".join(ctx.db_checks)}{whatif}

{table(results, plan, ctx.supported)}{sealing_table(results, plan)}

{failures_text(results)}

Command: `{ctx.command}`
"""


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
        default="postgresql://postgres@127.0.0.1:5432/postgres",
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


@dataclass(frozen=True)
class Prepared:
    db_name: str
    tmp: Path
    secrets: dict[str, str]  # VAULT_KEYRING_FILE etc.
    users: list[str]
    token: str  # a signer token


def prepare(stack: ExitStack, maintenance: str, users: int) -> Prepared:
    """A scratch database, migrated, with ``users`` users of one ingested session each (through a
    vault's public endpoint) and a signer token (``session-vault token create``); throwaway keys in a
    temporary directory. Both go when ``stack`` closes."""
    name = stack.enter_context(scratch_database(maintenance))
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sv_bench_")))
    secrets = secret_files(tmp)
    vault_url = with_database(maintenance, name, driver="postgresql+asyncpg")
    env = vault_env(vault_url, secrets)
    vault_cli(["db", "upgrade"], env)
    token = vault_cli(["token", "create", "--role", "signer", "--name", TOKEN_NAME], env).strip()
    with vault_process(vault_url, secrets, tmp / "vault-setup.log", {}) as proc:
        user_ids = uvloop.run(ingest_users(proc, users))
    return Prepared(name, tmp, secrets, user_ids, token)


def run_benchmark(plan: Plan, database_url: str, command: str) -> str:
    maintenance = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    supported = sealing_supported()
    drift = baseline_sql_drift()
    for line in drift:
        print(f"WARNING: baseline SQL drift: {line}", file=sys.stderr)
    started = time.perf_counter()
    with ExitStack() as stack:
        prepared = prepare(stack, maintenance, plan.users)
        template, tmp, secrets = prepared.db_name, prepared.tmp, prepared.secrets
        users, token = prepared.users, prepared.token
        pg_version = server_version(with_database(maintenance, template))
        print(f"{plan.users} users ingested in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        seal_env = {"on": SEAL_ON, "off": off_value(secrets)} if supported else {}

        def copy(suffix: str) -> str:
            return stack.enter_context(database_copy(maintenance, template, f"{template}_{suffix}"))

        paths = [BenchPath(BASELINE, "", with_database(maintenance, copy("baseline")))]
        for mode in plan.sealing:
            for v, whatif in enumerate(plan.whatif):
                name = copy(f"seal_{mode}_{v}")
                env = {SEAL_ENV: seal_env[mode]} if supported else {}
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
        print(f"vault processes up; {len(paths)} paths", file=sys.stderr, flush=True)
        admin = None
        if urlsplit(maintenance).hostname in {None, "", "127.0.0.1", "localhost", "::1"}:
            admin = stack.enter_context(psycopg.connect(maintenance, autocommit=True))
        setup = Setup(users, token, Caller(token_id=token.split("_")[1]), admin)
        results = uvloop.run(bench_all(paths, setup, plan))
        checks: dict[str, tuple[int, int, int]] = {}
        for path in paths:
            label = "baseline" if not path.procs else f"vault (sealing {path.sealing}) {path.whatif}"
            checks.setdefault(label.strip(), db_check(path.db_url))
    db_checks = [
        f"{name}: {granted:,} leases granted, {open_} open, {events:,} audit events"
        for name, (granted, open_, events) in checks.items()
    ]
    info = ReportInfo(command, pg_version, load, supported, seal_env, drift, db_checks)
    print(f"total {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return report(plan, results, info)


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    plan = Plan(
        args.seconds, args.warmup, args.reps, args.levels, args.proc_counts, args.sealing, args.users,
        args.variants,
    )  # fmt: skip
    text = run_benchmark(plan, args.database_url, " ".join([".venv/bin/python -m bench.lease", *argv]))
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
