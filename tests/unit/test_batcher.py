"""The group-commit batcher: who runs together, bounds, failures, cancelled callers (no database)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import pytest

from vault.service._batch import Batcher


def in_loop(test: Callable[[], Awaitable[None]]) -> Callable[[], None]:
    """Run an async test body in a fresh event loop (the suite has no async test plugin)."""

    def run() -> None:
        asyncio.run(test())  # type: ignore[arg-type]

    run.__name__ = test.__name__
    return run


class Gate:
    """A batch runner that records each batch and waits for the test to let it finish."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.finished: list[list[int]] = []  # batches that ran to their end (not cancelled)
        self.open = asyncio.Event()

    async def run(self, jobs: Sequence[int]) -> list[int | BaseException]:
        self.batches.append(list(jobs))
        await self.open.wait()
        self.finished.append(list(jobs))
        return [ValueError(f"job {j}") if j < 0 else j * 10 for j in jobs]


async def _never_sleep(_seconds: float) -> None:
    raise AssertionError("a batch waited although max_wait is 0")


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


@in_loop
async def test_a_lone_job_starts_at_once_without_waiting() -> None:
    gate = Gate()
    gate.open.set()
    batcher = Batcher(gate.run, max_size=8, max_inflight=1, sleep=_never_sleep)
    assert await batcher.submit(3) == 30
    assert gate.batches == [[3]]


@in_loop
async def test_jobs_that_arrive_while_a_batch_runs_go_together() -> None:
    gate = Gate()
    batcher = Batcher(gate.run, max_size=8, max_inflight=1, sleep=_never_sleep)
    first = asyncio.create_task(batcher.submit(1))
    await _settle()
    assert gate.batches == [[1]]  # started alone, at once
    rest = [asyncio.create_task(batcher.submit(j)) for j in (2, 3, 4, 5)]
    await _settle()
    assert gate.batches == [[1]]  # the one slot is busy: they queue
    gate.open.set()
    assert await asyncio.gather(first, *rest) == [10, 20, 30, 40, 50]
    assert gate.batches == [[1], [2, 3, 4, 5]]
    assert (batcher.stats.batches, batcher.stats.jobs, batcher.stats.largest) == (2, 5, 4)


@in_loop
async def test_a_batch_holds_at_most_max_size_jobs() -> None:
    gate = Gate()
    batcher = Batcher(gate.run, max_size=3, max_inflight=1, sleep=_never_sleep)
    tasks = [asyncio.create_task(batcher.submit(j)) for j in range(8)]  # queued before any batch runs
    await _settle()
    gate.open.set()
    assert await asyncio.gather(*tasks) == [j * 10 for j in range(8)]
    assert gate.batches == [[0, 1, 2], [3, 4, 5], [6, 7]]


@in_loop
async def test_batches_run_side_by_side_up_to_max_inflight() -> None:
    gate = Gate()
    batcher = Batcher(gate.run, max_size=8, max_inflight=2, sleep=_never_sleep)
    tasks = [asyncio.create_task(batcher.submit(0))]
    await _settle()
    tasks += [asyncio.create_task(batcher.submit(j)) for j in range(1, 4)]
    await _settle()
    assert gate.batches == [[0], [1, 2, 3]]  # two slots: the second batch took everything waiting
    gate.open.set()
    await asyncio.gather(*tasks)


@in_loop
async def test_one_jobs_error_is_its_own() -> None:
    gate = Gate()
    gate.open.set()
    batcher = Batcher(gate.run, max_size=8, max_inflight=1)
    tasks = [asyncio.create_task(batcher.submit(j)) for j in (1, -1, 2)]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results[0] == 10 and results[2] == 20
    assert isinstance(results[1], ValueError) and str(results[1]) == "job -1"


@in_loop
async def test_a_failed_batch_fails_its_jobs_only() -> None:
    calls: list[list[int]] = []

    async def run(jobs: Sequence[int]) -> list[int | BaseException]:
        calls.append(list(jobs))
        if 99 in jobs:
            raise RuntimeError("the transaction failed")
        return list(jobs)

    batcher = Batcher(run, max_size=8, max_inflight=1)
    first = asyncio.create_task(batcher.submit(99))
    await asyncio.sleep(0)
    second = [asyncio.create_task(batcher.submit(j)) for j in (1, 2)]
    results = await asyncio.gather(first, *second, return_exceptions=True)
    assert isinstance(results[0], RuntimeError)
    assert results[1:] == [1, 2]
    assert calls == [[99], [1, 2]]


@in_loop
async def test_a_wrong_number_of_results_fails_the_batch() -> None:
    async def run(jobs: Sequence[int]) -> list[int | BaseException]:
        return [1]

    batcher = Batcher(run, max_size=8, max_inflight=1)
    gathered = await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in gathered)


@in_loop
async def test_a_caller_that_left_before_its_batch_started_is_not_run() -> None:
    gate = Gate()
    batcher = Batcher(gate.run, max_size=8, max_inflight=1, sleep=_never_sleep)
    first = asyncio.create_task(batcher.submit(1))
    await _settle()
    gone = asyncio.create_task(batcher.submit(2))
    kept = asyncio.create_task(batcher.submit(3))
    await _settle()
    gone.cancel()
    await _settle()
    gate.open.set()
    assert await first == 10 and await kept == 30
    assert gate.batches == [[1], [3]]


@in_loop
async def test_a_caller_that_leaves_mid_batch_does_not_cancel_the_batch() -> None:
    gate = Gate()
    batcher = Batcher(gate.run, max_size=8, max_inflight=1)
    gone = asyncio.create_task(batcher.submit(1))
    await _settle()
    stay = asyncio.create_task(batcher.submit(2))
    gone.cancel()
    await _settle()
    gate.open.set()
    assert await stay == 20
    await batcher.drain()
    assert gate.finished == [[1], [2]]  # the batch of the caller that left ran to its end


@in_loop
async def test_max_wait_gathers_company_before_starting() -> None:
    waits: list[float] = []
    gate = Gate()
    gate.open.set()

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        await asyncio.sleep(0)

    batcher = Batcher(gate.run, max_size=8, max_wait=0.002, max_inflight=1, sleep=sleep)
    assert await asyncio.gather(*(batcher.submit(j) for j in range(3))) == [0, 10, 20]
    assert waits == [0.002]
    assert gate.batches == [[0, 1, 2]]


def test_bounds_are_checked() -> None:
    async def run(jobs: Sequence[int]) -> list[int | BaseException]:
        return list(jobs)

    for bad in ({"max_size": 0}, {"max_size": 1, "max_inflight": 0}, {"max_size": 1, "max_wait": -1.0}):
        with pytest.raises(ValueError, match="at least one"):
            Batcher(run, **bad)
