"""Parts of bench/rewrap.py: OpenBao; many users' data keys written straight to the database instead of
ingesting a session per user over HTTP (set-up, never timed); the lease runs of part (b).

* :func:`openbao`: ``bao server`` on raft storage (tests/_openbao.py's :class:`DurableBao`: initialized,
  unsealed, Transit mounted) with a **file audit device** (every request and response is logged, as a
  production server would), stopped on the way out.
* :func:`wrap_local` / :func:`wrap_transit`: one fresh DEK per user, wrapped under the KEK's version 1
  with the user's ``dek_aad(user, 1)``: by the provider's own ``wrap`` (local keyring), or by Transit
  ``encrypt`` with ``batch_input`` over the HTTP API (what ``TransitProvider.wrap`` sends, 200 items a
  request) so that 100,000 wraps take seconds, not minutes.
* :func:`insert_keys`: a ``users`` row and an active ``user_keys`` row (DEK version 1) per user, in bulk
  (PostgreSQL ``COPY``, SQLite ``executemany``): the rows an ingest of each user's first session writes.
* :func:`bench_leases`: part (b), grant + release cycles on two vault processes (DEK cache cold and warm),
  with CPU per cycle and the Transit ``decrypt`` calls counted in OpenBao's audit log; :func:`lease_table`.
"""

from __future__ import annotations

import asyncio
import base64
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench._harness import Cpu, Percentiles, Probe, markdown_table, process_cpu_seconds, say
from bench._http1 import Http1
from bench._lease_load import Tally, drive, vault_cycle
from bench._setup import VaultProcess, database_copy, maintenance_url, migrate, with_database
from tests._openbao import DurableBao
from vault.crypto import dek_aad
from vault.keys import KekProvider

__all__ = [
    "Db",
    "LeasePlan",
    "LeaseResults",
    "bao_pid",
    "bench_leases",
    "insert_keys",
    "lease_table",
    "median_rate",
    "new_db",
    "openbao",
    "probe",
    "wrap_local",
    "wrap_transit",
]

_ENCRYPT_CHUNK = 200  # OpenBao refuses a request of more than ~1000 JSON strings; an item is 4
_PARALLEL = 8


@dataclass(frozen=True)
class Db:
    vault_url: str  # postgresql+asyncpg://... or sqlite+aiosqlite:///...
    plain: str  # postgresql://... or the SQLite file path
    name: str  # the PostgreSQL database (its backends' CPU is counted); "" for SQLite


def new_db(stack: ExitStack, database_url: str, template: str, suffix: str, tmp: Path) -> Db:
    """A migrated database: a copy of the PostgreSQL ``template``, or (no template) a new SQLite file."""
    if not template:
        path = tmp / f"{suffix}.db"
        url = f"sqlite+aiosqlite:///{path}"
        asyncio.run(migrate(url))
        return Db(url, str(path), "")
    maintenance = maintenance_url(database_url)
    name = stack.enter_context(database_copy(maintenance, template, f"{template}_{suffix}"))
    return Db(
        with_database(maintenance, name, driver="postgresql+asyncpg"), with_database(maintenance, name), name
    )


def probe(admin: psycopg.Connection[Any] | None, db: Db, pids: Sequence[int]) -> Probe:
    return Probe(admin if db.name else None, db.name, pids)


@contextmanager
def openbao(home: Path) -> Iterator[DurableBao]:
    """A raft-backed OpenBao on loopback with Transit and a file audit device (``home/audit.log``)."""
    server = DurableBao(home=home)
    with server.config.open("a") as config:  # OpenBao 2.x takes audit devices from its config file only
        config.write(
            f'audit "file" "bench" {{\n  options {{\n    file_path = "{audit_log(server)}"\n  }}\n}}\n'
        )
    try:
        server.setup()
        yield server
    finally:
        server.close()


def audit_log(server: DurableBao) -> Path:
    return server.home / "audit.log"


def bao_pid(server: DurableBao) -> int:
    process = server._process
    assert process is not None, "OpenBao is not running"
    return process.pid


def audit_lines(server: DurableBao, since: int, needle: str) -> tuple[int, int]:
    """How many audit responses since byte ``since`` name ``needle`` (e.g. ``transit/decrypt/``), and the
    log's size now."""
    with audit_log(server).open("rb") as log:
        log.seek(since)
        data = log.read()
    wanted = needle.encode()
    hits = sum(1 for line in data.splitlines() if b'"type":"response"' in line and wanted in line)
    return hits, since + len(data)


async def wrap_local(kek: KekProvider, users: Sequence[str], deks: Sequence[bytes]) -> list[bytes]:
    """Each DEK wrapped by the provider itself (the local keyring: AES-GCM in this process)."""
    return [(await kek.wrap(d, aad=dek_aad(u, 1))).blob for u, d in zip(users, deks, strict=True)]


async def wrap_transit(
    server: DurableBao, key: str, users: Sequence[str], deks: Sequence[bytes]
) -> list[bytes]:
    """Each DEK wrapped by Transit ``encrypt/{key}`` (derived key, context = the DEK's aad), in batches."""
    b64 = base64.b64encode
    out: list[bytes] = [b""] * len(users)
    starts = iter(range(0, len(users), _ENCRYPT_CHUNK))

    async def worker(http: httpx.AsyncClient) -> None:
        for start in starts:
            batch = [
                {"plaintext": b64(d).decode(), "context": b64(dek_aad(u, 1)).decode()}
                for u, d in zip(
                    users[start : start + _ENCRYPT_CHUNK], deks[start : start + _ENCRYPT_CHUNK], strict=True
                )
            ]
            reply = await http.post(f"/v1/transit/encrypt/{key}", json={"batch_input": batch})
            reply.raise_for_status()
            for i, result in enumerate(reply.json()["data"]["batch_results"]):
                if "ciphertext" not in result or not result["ciphertext"].startswith("vault:v1:"):
                    raise RuntimeError(f"Transit did not wrap item {start + i}: {result.get('error')}")
                out[start + i] = result["ciphertext"].encode("ascii")

    headers = {"X-Vault-Token": server.root_token}
    async with httpx.AsyncClient(base_url=server.addr, headers=headers, timeout=60) as http:
        await asyncio.gather(*(worker(http) for _ in range(_PARALLEL)))
    return out


def insert_keys(db: str, kek_id: str, users: Sequence[str], blobs: Sequence[bytes]) -> None:
    """``db``: a ``postgresql://`` URL or an SQLite file path. One user row and one active DEK row
    (version 1, under KEK version 1) per user."""
    now = datetime.now(UTC)
    if db.startswith("postgresql://"):
        with psycopg.connect(db) as conn, conn.cursor() as cur:
            with cur.copy("COPY users (id, created_at) FROM STDIN") as copy:
                for user in users:
                    copy.write_row((user, now))
            columns = "user_id, dek_version, wrapped_dek, kek_id, kek_version, status, created_at"
            with cur.copy(f"COPY user_keys ({columns}) FROM STDIN") as copy:
                for user, blob in zip(users, blobs, strict=True):
                    copy.write_row((user, 1, blob, kek_id, 1, "active", now))
        return
    stamp = now.strftime("%Y-%m-%d %H:%M:%S.%f")  # how the vault's UtcDateTime stores it on SQLite
    with sqlite3.connect(db) as lite:
        lite.executemany("INSERT INTO users (id, created_at) VALUES (?, ?)", [(u, stamp) for u in users])
        lite.executemany(
            "INSERT INTO user_keys (user_id, dek_version, wrapped_dek, kek_id, kek_version, status,"
            " created_at) VALUES (?, 1, ?, ?, 1, 'active', ?)",
            [(u, b, kek_id, stamp) for u, b in zip(users, blobs, strict=True)],
        )
    lite.close()


# --- (b) lease rate, DEK cache cold vs. warm -----------------------------------------------------------


@dataclass(frozen=True)
class LeasePlan:
    seconds: float
    warmup: float
    levels: tuple[int, ...]
    reps: int


@dataclass
class LeaseRun:
    rate: float
    tally: Tally
    cpu: Cpu
    bao_cpu: float
    decrypts: int


async def lease_run(proc: VaultProcess, token: str, users: list[str], c: int, plan: LeasePlan, meter: Probe,
                    server: DurableBao) -> LeaseRun:  # fmt: skip
    """``c`` workers of grant + release cycles on random users for ``plan.seconds`` (after the warm-up)."""
    conns = [Http1(proc.host, proc.port, token) for _ in range(c)]
    try:
        cycles = [vault_cycle([conn]) for conn in conns]
        await drive(cycles, users, plan.warmup, Tally())
        tally, before, bao0 = Tally(), meter.snapshot(), process_cpu_seconds(bao_pid(server))
        _, offset = audit_lines(server, 0, "")
        seconds = await drive(cycles, users, plan.seconds, tally)
        cpu, bao_cpu = meter.snapshot() - before, process_cpu_seconds(bao_pid(server)) - bao0
        decrypts, _ = audit_lines(server, offset, "transit/decrypt/")
    finally:
        for conn in conns:
            await conn.close()
    if tally.cycles == 0:
        raise RuntimeError(f"no cycle finished: {dict(tally.errors)}")
    return LeaseRun(tally.cycles / seconds, tally, cpu, bao_cpu, decrypts)


LeaseResults = dict[tuple[str, int], list[LeaseRun]]  # (cold | warm, concurrency) -> runs


async def bench_leases(procs: dict[str, VaultProcess], token: str, users: list[str], plan: LeasePlan,
                       meters: dict[str, Probe], server: DurableBao) -> LeaseResults:  # fmt: skip
    """Lease every user once on the warm process, then time both processes, alternating."""
    warmed, conn = Tally(), Http1(procs["warm"].host, procs["warm"].port, token)
    try:
        for user in users:  # one grant per user on the warm process: every DEK is now in its cache
            await vault_cycle([conn])(user, warmed)
    finally:
        await conn.close()
    if warmed.errors or warmed.cycles != len(users):
        raise RuntimeError(f"warming the cache failed: {dict(warmed.errors)}")
    results: LeaseResults = {}
    for c in plan.levels:
        for rep in range(plan.reps):
            for name in ("cold", "warm")[rep % 2 :] + ("cold", "warm")[: rep % 2]:
                run = await lease_run(procs[name], token, users, c, plan, meters[name], server)
                say(f"  {name} c={c} rep {rep + 1}: {run.rate:.0f} cycles/s, {run.decrypts} Transit decrypts")
                results.setdefault((name, c), []).append(run)
    return results


def median_run(results: LeaseResults, name: str, c: int) -> LeaseRun:
    runs = sorted(results[(name, c)], key=lambda r: r.rate)
    return runs[len(runs) // 2]


def median_rate(results: LeaseResults, name: str, c: int) -> float:
    return median_run(results, name, c).rate


def lease_table(results: LeaseResults) -> str:
    rows = []
    for name, c in results:
        run, cold = median_run(results, name, c), median_rate(results, "cold", c)
        n, p = run.tally.cycles, Percentiles.of(run.tally.latencies)
        label = "cold (TTL 0: Transit decrypt per grant)" if name == "cold" else "warm (every DEK cached)"
        rows.append([label, c, f"{run.rate:.0f}", f"{p.p50:.1f}", f"{p.p99:.1f}", f"{run.rate / cold:.2f}",
                     f"{run.cpu.vault / n * 1e3:.2f}", f"{run.bao_cpu / n * 1e3:.2f}",
                     f"{run.cpu.postgres / n * 1e3:.2f}", f"{run.cpu.machine / n * 1e3:.2f}",
                     f"{run.decrypts / n:.2f}", run.tally.held, sum(run.tally.errors.values())])  # fmt: skip
    heads = ["DEK cache", "concurrency", "cycles/s", "grant p50 ms", "grant p99 ms", "vs. cold",
             "CPU ms/cycle: vault", "OpenBao", "PostgreSQL", "machine", "Transit decrypts/cycle",
             "409 lease_held", "other non-2xx"]  # fmt: skip
    return markdown_table(heads, rows)
