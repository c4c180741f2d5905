"""The harness's clock: ``time.perf_counter`` by default, injectable for tests.

Wall-clock time on purpose: ``process_time`` would miss the work done in
worker processes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]

perf_clock: Clock = time.perf_counter


class FakeClock:
    """A deterministic clock for tests: time moves only when told to.

    Each call returns the current time, then moves it on by ``step`` seconds
    (0 by default); ``advance(dt)`` moves it forward by ``dt``.
    """

    def __init__(self, start: float = 0.0, *, step: float = 0.0) -> None:
        self.now = start
        self.step = step

    def __call__(self) -> float:
        value = self.now
        self.now += self.step
        return value

    def advance(self, seconds: float) -> None:
        self.now += seconds
