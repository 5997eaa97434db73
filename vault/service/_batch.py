"""Group commit: requests that arrive together are run as one batch (one transaction, one commit).

A :class:`Batcher` hands queued jobs to ``run`` in batches of at most ``max_size``, with at most
``max_inflight`` batches running at once. A job that arrives while the batcher is idle starts a batch at
once (a lone request is never delayed, unless ``max_wait`` asks for it); jobs that arrive while every
slot is busy wait for the next free slot, and go together. ``run`` returns one result or exception per
job, in order; an exception raised by ``run`` itself fails every job of that batch.

Each batch runs in a task of its own: a caller that goes away (a client that disconnected) does not
cancel the batch its job is in; the job's result is then dropped (for a grant: the lease was committed
and audited, and its plaintext never left).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["BatchStats", "Batcher"]

J = TypeVar("J")
R = TypeVar("R")


class BatchStats:
    """Counts for tests and benchmarks: batches run and jobs they held."""

    __slots__ = ("batches", "jobs", "largest")

    def __init__(self) -> None:
        self.batches = 0
        self.jobs = 0
        self.largest = 0


class Batcher(Generic[J, R]):
    def __init__(
        self,
        run: Callable[[Sequence[J]], Awaitable[Sequence[R | BaseException]]],
        *,
        max_size: int,
        max_wait: float = 0.0,
        max_inflight: int = 2,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if max_size < 1 or max_inflight < 1 or max_wait < 0:
            raise ValueError("a batch holds at least one job, and at least one batch may run")
        self._run = run
        self.max_size = max_size
        self.max_wait = max_wait
        self.max_inflight = max_inflight
        self._sleep = sleep
        self._queue: list[tuple[J, asyncio.Future[R]]] = []
        self._inflight: set[asyncio.Task[None]] = set()
        self._starting = False  # a batch task exists that has not taken its jobs yet
        self.stats = BatchStats()

    def __repr__(self) -> str:
        return f"Batcher(max_size={self.max_size}, max_wait={self.max_wait}, inflight={self.max_inflight})"

    async def submit(self, job: J) -> R:
        """Queue ``job`` and wait for its result (or its exception, raised here)."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((job, future))
        self._dispatch()
        return await future

    def _dispatch(self) -> None:
        """Start a batch if jobs wait, a slot is free and no started batch is still to take its jobs (it
        will take every job queued by then)."""
        if self._queue and not self._starting and len(self._inflight) < self.max_inflight:
            self._starting = True
            task = asyncio.create_task(self._batch(), name="vault-batch")
            self._inflight.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._dispatch()

    async def _batch(self) -> None:
        if self.max_wait > 0 and len(self._queue) < self.max_size:
            await self._sleep(self.max_wait)
        self._queue = [(job, future) for job, future in self._queue if not future.done()]  # callers gone
        taken, self._queue = self._queue[: self.max_size], self._queue[self.max_size :]
        self._starting = False
        self._dispatch()  # more jobs than one batch holds, and a free slot: the next batch starts now
        if not taken:
            return
        self.stats.batches += 1
        self.stats.jobs += len(taken)
        self.stats.largest = max(self.stats.largest, len(taken))
        jobs = [job for job, _ in taken]
        try:
            results: Sequence[R | BaseException] = await self._run(jobs)
            if len(results) != len(taken):
                raise RuntimeError("a batch returned the wrong number of results")
        except BaseException as exc:  # every job of the batch gets the batch's failure
            results = [exc] * len(taken)
            if not isinstance(exc, Exception):  # cancelled (shutdown): tell the waiters, then stop
                _settle(taken, results)
                raise
        _settle(taken, results)

    async def drain(self) -> None:
        """Wait until every queued and running batch has finished (at shutdown)."""
        while self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)


def _settle(taken: Sequence[tuple[object, asyncio.Future[R]]], results: Sequence[R | BaseException]) -> None:
    for (_, future), result in zip(taken, results, strict=True):
        if future.done():  # the caller went away
            continue
        if isinstance(result, asyncio.CancelledError):
            future.cancel()
        elif isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
