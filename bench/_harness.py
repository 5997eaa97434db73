"""What every benchmark shares: wall timing, CPU accounting, percentiles, markdown tables, report bits.

- timing: :func:`timed` (a block's wall time, ``time.perf_counter``) and :func:`median_time` (the
  median of repeated runs);
- CPU: :func:`machine_busy_seconds` (non-idle CPU of the whole machine, ``/proc/stat``),
  :func:`process_cpu_seconds` (user + system CPU of one process, ``/proc/<pid>/stat``), and
  :class:`Probe`, whose snapshots subtract to a :class:`Cpu`: the machine, this process (the bench
  client), the vault processes and the PostgreSQL backends serving one database (found in
  ``pg_stat_activity``, only when the server runs on this host). Linux only; no psutil (not a dependency);
- percentiles: :func:`percentile_ms` and :class:`Percentiles` (median, p90, p99 of latencies in seconds,
  reported in milliseconds); :func:`median_of`;
- tables: :func:`markdown_table`;
- reports: :func:`machine_line`, :func:`load_average`, :func:`utc_now`, :func:`write_report`, :func:`say`.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import psycopg

__all__ = [
    "Cpu",
    "Percentiles",
    "Probe",
    "Snapshot",
    "Timer",
    "cpu_of",
    "load_average",
    "machine_busy_seconds",
    "machine_line",
    "markdown_table",
    "median_of",
    "median_time",
    "percentile_ms",
    "process_cpu_seconds",
    "say",
    "timed",
    "utc_now",
    "write_report",
]

T = TypeVar("T")


# --- wall timing ---------------------------------------------------------------------------------------


@dataclass
class Timer:
    """A block's wall time: ``seconds`` so far while it runs, its whole length once it ended."""

    started: float
    ended: float | None = None

    @property
    def seconds(self) -> float:
        return (time.perf_counter() if self.ended is None else self.ended) - self.started


@contextmanager
def timed() -> Iterator[Timer]:
    """``with timed() as t: ...``; then ``t.seconds`` is the block's wall time (``time.perf_counter``)."""
    timer = Timer(time.perf_counter())
    try:
        yield timer
    finally:
        timer.ended = time.perf_counter()


def median_time(run: Callable[[], T], reps: int, check: Callable[[T], None] | None = None) -> float:
    """The median wall time of ``reps`` calls of ``run`` (each result passed to ``check``, untimed)."""
    times = []
    for _ in range(reps):
        with timed() as timer:
            result = run()
        times.append(timer.seconds)
        if check is not None:
            check(result)
    return statistics.median(times)


# --- CPU accounting ------------------------------------------------------------------------------------


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


def cpu_of(pids: Iterable[int]) -> dict[int, float]:
    """CPU seconds of each process of ``pids`` that still runs."""
    seconds: dict[int, float] = {}
    for pid in pids:
        try:
            seconds[pid] = process_cpu_seconds(pid)
        except (FileNotFoundError, ProcessLookupError):
            pass  # it just ended
    return seconds


@dataclass(frozen=True)
class Cpu:
    """CPU seconds spent in a window: whole machine, this (client) process, the vault processes, the
    PostgreSQL backends serving the benchmark's database (0 where not measured)."""

    machine: float
    client: float
    vault: float
    postgres: float = 0.0

    @property
    def ours(self) -> float:
        """What the path cost, whatever else runs on the machine: client + vault + PostgreSQL."""
        return self.client + self.vault + self.postgres


@dataclass(frozen=True)
class Snapshot:
    machine: float
    client: float
    vault: float
    postgres: dict[int, float]  # backend pid -> CPU seconds

    def __sub__(self, before: Snapshot) -> Cpu:
        # A backend that started in the window counts whole; one that ended in it is lost (rare: the
        # pools keep their connections).
        postgres = sum(cpu - before.postgres.get(pid, 0.0) for pid, cpu in self.postgres.items())
        return Cpu(
            self.machine - before.machine, self.client - before.client, self.vault - before.vault, postgres
        )


class Probe:
    """Reads the CPU counters of the machine, this process, some vault processes and (given an admin
    connection to the server, which must run on this host) the PostgreSQL backends of ``db_name``."""

    def __init__(
        self,
        admin: psycopg.Connection[Any] | None = None,
        db_name: str = "",
        vault_pids: Sequence[int] = (),
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
            sum(cpu_of(self.vault_pids).values()),
            cpu_of(backends),
        )


# --- percentiles ---------------------------------------------------------------------------------------


def percentile_ms(latencies: Sequence[float], p: int) -> float:
    """The ``p``-th percentile (1-99, inclusive method) of ``latencies`` (seconds), in milliseconds."""
    if not latencies:
        return float("nan")
    if len(latencies) < 2:
        return latencies[0] * 1000
    return statistics.quantiles(latencies, n=100, method="inclusive")[p - 1] * 1000


@dataclass(frozen=True)
class Percentiles:
    """Median, p90 and p99 of some latencies, in milliseconds."""

    p50: float
    p90: float
    p99: float

    @classmethod
    def of(cls, latencies: Sequence[float]) -> Percentiles:
        if len(latencies) < 2:
            one = percentile_ms(latencies, 50)
            return cls(one, one, one)
        cuts = statistics.quantiles(latencies, n=100, method="inclusive")
        return cls(cuts[49] * 1000, cuts[89] * 1000, cuts[98] * 1000)


def median_of(items: Iterable[T], value: Callable[[T], float]) -> float:
    return statistics.median(value(item) for item in items)


# --- tables and reports --------------------------------------------------------------------------------


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]], align: str = "") -> str:
    """A markdown table; ``align`` has one letter per column, ``l`` or ``r`` (default: first column left,
    the others right)."""
    align = align or "l" + "r" * (len(headers) - 1)
    if len(align) != len(headers):
        raise ValueError("one alignment letter per column")
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "".join("---:|" if a == "r" else "---|" for a in align),
    ]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"a row of {len(row)} cells in a table of {len(headers)} columns")
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return "\n".join(lines)


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def machine_line(pg_version: str | None = None, load: str | None = None) -> str:
    """``nproc N, Python X, Linux R[, PostgreSQL V][; load average at start: L]``."""
    text = f"nproc {os.cpu_count()}, Python {platform.python_version()}"
    text += f", {platform.system()} {platform.release()}"
    if pg_version is not None:
        text += f", PostgreSQL {pg_version}"
    if load is not None:
        text += f"; load average at start: {load}"
    return text


def say(*parts: object) -> None:
    """Progress, on stderr (stdout carries the report)."""
    print(*parts, file=sys.stderr, flush=True)


def write_report(text: str, out: Path) -> None:
    """Print the report and write it to ``out``."""
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
