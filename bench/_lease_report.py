"""The report of bench/lease.py: its markdown tables and the text around them."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench._harness import Cpu, machine_line, markdown_table, median_of, utc_now
from bench._lease_baseline import BASELINE, POOL
from bench._lease_load import Plan, Results, Run

__all__ = ["SEAL_ENV", "SEAL_ON", "SEAL_SETTING", "ReportInfo", "report"]

SEAL_ENV = "VAULT_AUDIT_SEAL_INTERVAL_SECONDS"
SEAL_SETTING = "audit_seal_interval_seconds"
SEAL_ON = "1"


def sealing_label(mode: str, supported: bool) -> str:
    if not mode:
        return "-"
    return mode if supported else "n/a (no setting yet)"


def ms_per_cycle(runs: Sequence[Run], part: Callable[[Cpu], float]) -> float:
    return median_of(runs, lambda r: r.cpu_ms(part(r.cpu)))


def table(results: Results, plan: Plan, supported: bool) -> str:
    headers = [
        "path", "audit sealing", "concurrency", "cycles/s", "grant p50 ms", "grant p99 ms",
        "rate vs. baseline", "CPU ms/cycle: vault processes", "PostgreSQL", "bench client",
        "sum of the three", "CPU vs. baseline", "whole machine", "409 lease_held", "other non-2xx",
    ]  # fmt: skip
    rows = []
    for c in plan.levels:
        baseline = results[(BASELINE, "", c)]
        base_rate = median_of(baseline, lambda r: r.rate)
        base_cpu = ms_per_cycle(baseline, lambda cpu: cpu.ours)
        for name, sealing in [(name, sealing) for name, sealing, level in results if level == c]:
            runs = results[(name, sealing, c)]
            rate, ours = median_of(runs, lambda r: r.rate), ms_per_cycle(runs, lambda cpu: cpu.ours)
            is_base = name == BASELINE
            rows.append([
                name, sealing_label(sealing, supported), c, f"{rate:,.0f}",
                f"{median_of(runs, lambda r: r.percentile_ms(50)):.1f}",
                f"{median_of(runs, lambda r: r.percentile_ms(99)):.1f}",
                "-" if is_base else f"{rate / base_rate:.2f}",
                "-" if is_base else f"{ms_per_cycle(runs, lambda cpu: cpu.vault):.2f}",
                f"{ms_per_cycle(runs, lambda cpu: cpu.postgres):.2f}",
                f"{ms_per_cycle(runs, lambda cpu: cpu.client):.2f}",
                f"{ours:.2f}", "-" if is_base else f"{ours / base_cpu:.1f}x",
                f"{ms_per_cycle(runs, lambda cpu: cpu.machine):.2f}",
                sum(r.tally.held for r in runs), sum(sum(r.tally.errors.values()) for r in runs),
            ])  # fmt: skip
    return markdown_table(headers, rows, "ll" + "r" * (len(headers) - 2))


def sealing_table(results: Results, plan: Plan) -> str:
    """Sealing on against off, per vault path and level (only when both ran)."""
    if set(plan.sealing) != {"on", "off"}:
        return ""
    headers = [
        "path", "concurrency", "cycles/s on", "cycles/s off", "on / off", "CPU ms/cycle, vault processes: on",
        "off", "CPU ms/cycle, vault + PostgreSQL + client: on", "off",
    ]  # fmt: skip
    rows = []
    for c in plan.levels:
        for name in [name for name, sealing, level in results if level == c and sealing == "on"]:
            on, off = results[(name, "on", c)], results[(name, "off", c)]
            rate_on, rate_off = median_of(on, lambda r: r.rate), median_of(off, lambda r: r.rate)
            cpu = [
                f"{ms_per_cycle(runs, part):.2f}"
                for part in (lambda cpu: cpu.vault, lambda cpu: cpu.ours)
                for runs in (on, off)
            ]
            rows.append([name, c, f"{rate_on:,.0f}", f"{rate_off:,.0f}", f"{rate_on / rate_off:.2f}", *cpu])
    return "\n\n## Audit sealing on vs. off\n\n" + markdown_table(headers, rows)


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
    db_checks: list[str]


def _sealing_text(ctx: ReportInfo) -> str:
    if not ctx.supported:
        return (
            f"audit sealing: the vault has no `{SEAL_SETTING}` setting yet, so `{SEAL_ENV}` is not set "
            "(`--audit-sealing off` becomes possible once it exists)"
        )
    off = ctx.seal_env.get("off", "0")
    off_note = (
        ""
        if off == "0"
        else f" (`serve` refuses 0, so off is {off} s: the sealer seals once as the process starts and "
        "then sleeps through the run)"
    )
    return (
        f"audit sealing: `{SEAL_ENV}` = {SEAL_ON} (on) / {off} (off) in the vault processes' "
        f"environment{off_note}; the sealer of a process seals every event committed since its last step, "
        "and signs a checkpoint when one is due (default every 60 s)"
    )


def report(plan: Plan, results: Results, ctx: ReportInfo) -> str:
    cpus = os.cpu_count()
    whatif = (
        "\n- `[changes]`: the vault with those experimental changes patched in by bench/whatif.py (vault/ "
        "itself unchanged; see that module)"
        if any(plan.whatif)
        else ""
    )
    return f"""# Lease benchmark: lease-and-release cycles, vault over HTTP vs. its own store statements

- date: {utc_now()}
- machine: {machine_line(ctx.pg_version, ctx.load)}
- per run: `concurrency` workers, each looping lease + release on a user drawn at random from \
{plan.users:,} (one ingested ~7.7 KB session each) for {plan.seconds:g} s after a {plan.warmup:g} s \
warm-up; each cell is the median of {plan.reps} runs; within a level all paths' runs alternate
- vault: `POST /v1/users/{{u}}/lease` `{{"purpose":"bench","ttl_seconds":30}}` then \
`POST /v1/leases/{{id}}/release` `{{"fencing_token"}}` with a signer token, to `session-vault serve` \
processes (default settings: DB pool 10 each); with 2 processes each worker alternates \
between them (cycle k: grant on k mod 2, release on the other); client: one keep-alive connection per \
worker and process, a minimal HTTP/1.1 client on uvloop
- baseline: the vault's own statements, called in this process through `vault.store` (`Store` with its \
asyncpg pool of min(concurrency, {POOL}), `Tx` methods), per cycle: token lookup, grant transaction \
(peek, lock the session row, open lease, insert the lease, audit insert; the session decrypted with \
the cached DEK), token lookup, release transaction (lock via the lease, end it, audit insert); no HTTP, \
no FastAPI, no audit MAC (random bytes); see bench/_lease_baseline.py
- grant latency: the grant request's round trip (vault), token lookup + grant transaction (baseline)
- {_sealing_text(ctx)}
- CPU ms/cycle: CPU per finished cycle of the path's vault processes (both, for "1 proc": the second \
is idle apart from background work), of the PostgreSQL backends serving the path's database, of the \
bench process (the client; for the baseline it is the store doing the work), the sum of these three \
(what the path costs, whatever else runs), and of the whole machine (non-idle, /proc/stat: includes \
anything else running, e.g. other sessions' tests); everything shares the {cpus} cores, so rates move \
with foreign load while CPU per cycle is the steadier figure
- each path has its own copy of the prepared database; at the end: {"; ".join(ctx.db_checks)}{whatif}

{table(results, plan, ctx.supported)}{sealing_table(results, plan)}

{failures_text(results)}

Command: `{ctx.command}`
"""
