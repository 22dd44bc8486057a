"""Time for the orchestrator: the real event-loop clock, or a virtual one for tests and benches.

Everything that waits on time (star timeouts, heartbeats, retry delays) goes through a
`Clock`, so a test can jump a virtual clock forward by an hour in microseconds.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on this clock's own scale (monotonic)."""

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Run `callback` once, `delay` seconds from now, unless the timer is cancelled."""


class RealClock:
    """The running asyncio loop's monotonic clock."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_later(max(0.0, delay), callback)


@dataclass(slots=True)
class _VirtualTimer:
    when: float
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class VirtualClock:
    """A clock that moves only when told to; timers fire in time order, synchronously.

    `advance(dt)` fires every timer due within `dt`; `run_until_idle()` jumps from timer
    to timer until none is left, the way a simulation runs.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._timers: list[tuple[float, int, _VirtualTimer]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = _VirtualTimer(self._now + max(0.0, delay), callback)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    @property
    def pending(self) -> int:
        """Timers scheduled and not cancelled."""
        return sum(1 for _, _, timer in self._timers if not timer.cancelled)

    def next_deadline(self) -> float | None:
        self._drop_cancelled()
        return self._timers[0][0] if self._timers else None

    def advance(self, seconds: float) -> int:
        """Move time forward by `seconds`, firing due timers; returns how many fired."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        return self.advance_to(self._now + seconds)

    def advance_to(self, deadline: float) -> int:
        fired = 0
        while True:
            self._drop_cancelled()
            if not self._timers or self._timers[0][0] > deadline:
                break
            timer = heapq.heappop(self._timers)[2]
            self._now = max(self._now, timer.when)
            timer.callback()
            fired += 1
        self._now = max(self._now, deadline)
        return fired

    def run_until_idle(self, max_timers: int = 10_000_000) -> int:
        """Fire timers in order, jumping time, until none is left (or `max_timers` fired)."""
        fired = 0
        while fired < max_timers:
            self._drop_cancelled()
            if not self._timers:
                break
            timer = heapq.heappop(self._timers)[2]
            self._now = max(self._now, timer.when)
            timer.callback()
            fired += 1
        return fired

    def _drop_cancelled(self) -> None:
        timers = self._timers
        while timers and timers[0][2].cancelled:
            heapq.heappop(timers)
