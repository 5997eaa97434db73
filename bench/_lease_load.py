"""Lease load (bench/lease.py, bench/profile.py): the prepared database, cycles, workers, one timed run.

A cycle is one lease-and-release of one user; :func:`drive` runs one worker per cycle function for a
given time, each on users drawn at random; :func:`measure` warms up, then times a run and reads the CPU
counters (:class:`bench._harness.Probe`) around it.
"""

from __future__ import annotations

import asyncio
import json
import random
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

import uvloop

from bench._harness import Cpu, Percentiles, Probe, percentile_ms
from bench._http1 import Http1, error_code
from bench._setup import (
    VaultProcess,
    scratch_database,
    secret_files,
    vault_cli,
    vault_env,
    vault_process,
    with_database,
)
from tests.sessiongen import make_session

__all__ = [
    "LEASE_BODY",
    "MAX_ERRORS",
    "PURPOSE",
    "TOKEN_NAME",
    "TTL_SECONDS",
    "Cycle",
    "Plan",
    "Prepared",
    "Results",
    "Run",
    "Tally",
    "drive",
    "ingest_users",
    "measure",
    "prepare",
    "vault_cycle",
]

PURPOSE = "bench"
TTL_SECONDS = 30
LEASE_BODY = json.dumps({"purpose": PURPOSE, "ttl_seconds": TTL_SECONDS}).encode()
TOKEN_NAME = "bench-signer"  # noqa: S105 (a name, not a secret)
MAX_ERRORS = 1000


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


# --- the prepared database -----------------------------------------------------------------------------


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
                    raise RuntimeError(f"ingest: HTTP {status} {error_code(answer)}")
                user_ids.append(json.loads(answer)["user_id"])
        finally:
            await conn.close()

    await asyncio.gather(*(worker() for _ in range(8)))
    if len(set(user_ids)) != users:
        raise RuntimeError("the generated sessions do not belong to distinct users")
    return user_ids


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


# --- cycles and runs -----------------------------------------------------------------------------------


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
        return percentile_ms(self.tally.latencies, p)

    @property
    def percentiles(self) -> Percentiles:
        return Percentiles.of(self.tally.latencies)

    def cpu_ms(self, seconds: float) -> float:
        return seconds / self.tally.cycles * 1000


Results: TypeAlias = dict[tuple[str, str, int], list[Run]]  # (path, sealing, concurrency) -> runs


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


def vault_cycle(conns: Sequence[Http1]) -> Cycle:
    """Over HTTP: cycle k grants through ``conns[k % n]`` and releases through ``conns[(k + 1) % n]``."""
    turn = 0

    async def cycle(user_id: str, tally: Tally) -> None:
        nonlocal turn
        grant_conn, release_conn = conns[turn % len(conns)], conns[(turn + 1) % len(conns)]
        turn += 1
        started = time.perf_counter()
        status, body = await grant_conn.post(f"/v1/users/{user_id}/lease", LEASE_BODY)
        grant_seconds = time.perf_counter() - started
        if status != 201:
            code = error_code(body)
            if status == 409 and code == "lease_held":
                tally.held += 1
            else:
                tally.failed(f"grant {status} {code}")
            return
        grant = json.loads(body)
        release = json.dumps({"fencing_token": grant["fencing_token"]}).encode()
        status, body = await release_conn.post(f"/v1/leases/{grant['lease_id']}/release", release)
        if status != 200:
            tally.failed(f"release {status} {error_code(body)}")
            return
        tally.done(grant_seconds)

    return cycle
