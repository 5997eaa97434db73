"""Clocks tests control: the vault's wall clock (its injected ``clock``) and the client's waiting clock.

Neither reaches a lease decision: grants, renewals and expiry read the database's clock, on purpose (every
replica must agree), so a test that needs a lease to expire still waits for it.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta


class SettableClock:
    """A wall clock for the vault under test: real time until a test moves it.

    ``freeze`` pins it (at a moment, default the current one) so expiries computed from it are exact;
    ``advance`` moves it forward, frozen or not. Safe to call while the vault's thread reads it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._offset = timedelta(0)
        self._frozen: datetime | None = None

    def __call__(self) -> datetime:
        with self._lock:
            return self._now()

    def _now(self) -> datetime:
        return self._frozen if self._frozen is not None else datetime.now(UTC) + self._offset

    def freeze(self, at: datetime | None = None) -> datetime:
        """Stop the clock at ``at`` (an aware datetime; default: now). Returns the moment it shows."""
        if at is not None and at.tzinfo is None:
            raise ValueError("freeze at an aware datetime")
        with self._lock:
            self._frozen = self._now() if at is None else at
            return self._frozen

    def advance(self, seconds: float) -> datetime:
        """Move the clock ``seconds`` forward. Returns the moment it shows."""
        if seconds < 0:
            raise ValueError("the vault's clock only moves forward here")
        step = timedelta(seconds=seconds)
        with self._lock:
            if self._frozen is not None:
                self._frozen += step
            else:
                self._offset += step
            return self._now()


class FakeMonotonic:
    """A monotonic clock that only sleeping moves, for a client's ``clock`` and ``sleep`` (``asleep``).

    Records every sleep. The deadline a client computes is ``start + wait``: compare ``now`` with that (exact;
    a sum of the sleeps is only close, in floats).
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.start = self.now = start
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0, seconds
        self.sleeps.append(seconds)
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)
