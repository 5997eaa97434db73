"""The report of bench/vs_openbao.py: one timed run's numbers, the goals, the markdown tables."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench._harness import Cpu, Percentiles, markdown_table, median_of

__all__ = ["BAO", "CASES", "DEV", "GOAL_RSS_MB", "PG", "VAULT", "Rss", "Sample", "other_cpu", "tables"]

VAULT, BAO = "vault", "OpenBao"
PG, DEV = "serve + PostgreSQL", "dev + SQLite"
CASES = ("lease", "ingest")
GOAL_RSS_MB = 150.0


@dataclass(frozen=True)
class Sample:
    """One timed run of one side. ``ops``: cycles (vault lease) or requests; ``latency``: every
    request's round trip (a vault lease cycle's grant and release both); ``cpu.vault``: the probed
    server processes (the vault's, or OpenBao's)."""

    backend: str
    case: str
    system: str
    run: int
    seconds: float
    ops: int
    requests: int
    latency: Percentiles
    cpu: Cpu
    held: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def rate(self) -> float:
        return self.ops / self.seconds

    def per_op_ms(self, seconds: float) -> float:
        return seconds / self.ops * 1000


def other_cpu(cpu: Cpu) -> float:
    """The machine's CPU that was neither the client's, the server processes' nor PostgreSQL's."""
    return max(cpu.machine - cpu.ours, 0.0)


@dataclass(frozen=True)
class Rss:
    backend: str
    pid: int
    what: str  # the process's command line, shortened
    peak_kb: int | None


@dataclass(frozen=True)
class Medians:
    rate: float
    p50: float
    p99: float
    machine: float  # CPU ms/op
    server: float  # CPU ms/op of the server processes (vault's or OpenBao's)
    postgres: float

    @classmethod
    def of(cls, runs: Sequence[Sample]) -> Medians:
        def med(value: Callable[[Sample], float]) -> float:
            return median_of(runs, value)

        return cls(
            med(lambda s: s.rate), med(lambda s: s.latency.p50), med(lambda s: s.latency.p99),
            med(lambda s: s.per_op_ms(s.cpu.machine)), med(lambda s: s.per_op_ms(s.cpu.vault)),
            med(lambda s: s.per_op_ms(s.cpu.postgres)),
        )  # fmt: skip


Check = Callable[[Medians, Medians], tuple[bool, str]]  # (vault, OpenBao) -> (met, what was measured)


def _ratio_at_least(goal: float) -> Check:
    def check(vault: Medians, bao: Medians) -> tuple[bool, str]:
        ratio = vault.rate / bao.rate
        return ratio >= goal, f"{ratio:.2f}"

    return check


def _p99_below(vault: Medians, bao: Medians) -> tuple[bool, str]:
    return vault.p99 < bao.p99, f"{vault.p99:.1f} vs {bao.p99:.1f} ms"


GOALS: dict[tuple[str, str], list[tuple[str, Check]]] = {
    (PG, "lease"): [("ratio >= 0.5", _ratio_at_least(0.5)), ("p99 < OpenBao's", _p99_below)],
    (PG, "ingest"): [("ratio >= 1.5", _ratio_at_least(1.5))],
    (DEV, "lease"): [("ratio >= 0.13", _ratio_at_least(0.13))],
    (DEV, "ingest"): [("ratio >= 0.69", _ratio_at_least(0.69))],
}


def _case_label(backend: str, case: str) -> str:
    peer = "KV v2 GET" if case == "lease" else "KV v2 PUT"
    return f"{case} ({backend}) vs. {peer}"


def _groups(samples: Sequence[Sample]) -> list[tuple[str, str, list[Sample], list[Sample]]]:
    keys = list(dict.fromkeys((s.backend, s.case) for s in samples))
    return [
        (
            backend,
            case,
            [s for s in samples if (s.backend, s.case, s.system) == (backend, case, VAULT)],
            [s for s in samples if (s.backend, s.case, s.system) == (backend, case, BAO)],
        )
        for backend, case in keys
    ]


def summary_table(samples: Sequence[Sample]) -> str:
    headers = [
        "case", "vault /s", "OpenBao /s", "vault / OpenBao", "vault p50 / p99 ms", "OpenBao p50 / p99 ms",
        "CPU ms/op, machine: vault", "machine: OpenBao", "vault processes", "PostgreSQL", "OpenBao process",
        "goal", "met",
    ]  # fmt: skip
    rows = []
    for backend, case, vault_runs, bao_runs in _groups(samples):
        if not vault_runs or not bao_runs:
            continue
        vault, bao = Medians.of(vault_runs), Medians.of(bao_runs)
        checks = [(label, *check(vault, bao)) for label, check in GOALS.get((backend, case), [])]
        rows.append([
            _case_label(backend, case), f"{vault.rate:,.0f}", f"{bao.rate:,.0f}",
            f"{vault.rate / bao.rate:.2f}",
            f"{vault.p50:.1f} / {vault.p99:.1f}", f"{bao.p50:.1f} / {bao.p99:.1f}",
            f"{vault.machine:.2f}", f"{bao.machine:.2f}", f"{vault.server:.2f}",
            f"{vault.postgres:.2f}" if backend == PG else "-", f"{bao.server:.2f}",
            "; ".join(label for label, _, _ in checks) or "-",
            "; ".join(f"{'yes' if met else 'NO'} ({value})" for _, met, value in checks) or "-",
        ])  # fmt: skip
    return markdown_table(headers, rows, "l" + "r" * 10 + "ll")


def runs_table(samples: Sequence[Sample]) -> str:
    headers = [
        "case", "run", "side", "ops/s", "ops", "requests", "p50 ms", "p99 ms", "CPU ms/op: machine",
        "server processes", "PostgreSQL", "bench client", "other", "409 lease_held", "other failures",
    ]  # fmt: skip
    rows = []
    for s in samples:
        postgres = f"{s.per_op_ms(s.cpu.postgres):.2f}" if s.cpu.postgres else "-"
        rows.append([
            _case_label(s.backend, s.case), s.run, s.system, f"{s.rate:,.0f}", f"{s.ops:,}",
            f"{s.requests:,}",
            f"{s.latency.p50:.2f}", f"{s.latency.p99:.2f}", f"{s.per_op_ms(s.cpu.machine):.2f}",
            f"{s.per_op_ms(s.cpu.vault):.2f}", postgres, f"{s.per_op_ms(s.cpu.client):.2f}",
            f"{s.per_op_ms(other_cpu(s.cpu)):.2f}", s.held, sum(s.errors.values()),
        ])  # fmt: skip
    return markdown_table(headers, rows, "lrl" + "r" * 12)


def rss_table(rss: Sequence[Rss]) -> str:
    headers = ["vault", "pid", "process", "peak RSS (VmHWM) MB", f"goal < {GOAL_RSS_MB:g} MB"]
    rows = []
    for entry in rss:
        mb = None if entry.peak_kb is None else entry.peak_kb / 1024
        rows.append([
            entry.backend, entry.pid, f"`{entry.what}`", "?" if mb is None else f"{mb:.1f}",
            "?" if mb is None else ("yes" if mb < GOAL_RSS_MB else "NO"),
        ])  # fmt: skip
    return markdown_table(headers, rows, "lrlrl")


def failures_text(samples: Sequence[Sample]) -> str:
    errors: Counter[str] = Counter()
    for s in samples:
        errors.update({f"{s.system} {s.case} ({s.backend}): {k}": v for k, v in s.errors.items()})
    if not errors:
        return "No request failed in a timed run (409 lease_held, counted above, is not a failure)."
    return (
        "Failed requests in the timed runs: " + ", ".join(f"{k} x{v}" for k, v in errors.most_common()) + "."
    )


def tables(samples: Sequence[Sample], rss: Sequence[Rss]) -> str:
    return (
        "## Medians of the runs\n\n"
        + summary_table(samples)
        + "\n\n## Peak RSS of the vault processes (at the end of their phase)\n\n"
        + rss_table(rss)
        + "\n\n## Every run, in the order run\n\n"
        + runs_table(samples)
        + "\n\n"
        + failures_text(samples)
    )
