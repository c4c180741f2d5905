"""Consumers: what the harness does with each batch inside the timed region.

On CPU the plain :class:`CpuConsumer` touches nothing, so a case measures what
the loader alone delivers; :class:`StepConsumer` adds a simulated training step
(a GIL-releasing sleep, like a step that waits on an accelerator).  The CUDA
consumer (:class:`loaderbench.cuda.consumer.CudaConsumer`) follows the same protocol.
A runner decides how the timed rounds are driven.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol


class Consumer(Protocol):
    """What the harness does with each batch (on CPU: nothing; on CUDA: copy + compute)."""

    def consume(self, batch: Any) -> None:
        """Called for every batch, inside the timed region."""
        ...

    def sync(self) -> None:
        """Called inside the timed region after a round's last batch (a CUDA consumer synchronizes here)."""
        ...

    def round_metrics(self, samples: int, seconds: float) -> Mapping[str, float]:
        """Called after the round's clock stopped: extra per-round metrics (raw values kept)."""
        ...

    def finish(self) -> Mapping[str, Any]:
        """Case-level metrics for ``extra_info`` (called once, after the last round)."""
        ...

    def close(self) -> None:
        """Release what the consumer holds (GPU memory); called once, also after a failure."""
        ...


class CpuConsumer:
    """Iterates and touches nothing: measures what the loader alone delivers."""

    def consume(self, batch: Any) -> None:
        return None

    def sync(self) -> None:
        return None

    def round_metrics(self, samples: int, seconds: float) -> Mapping[str, float]:
        return {}

    def finish(self) -> Mapping[str, Any]:
        return {}

    def close(self) -> None:
        return None


class StepConsumer(CpuConsumer):
    """A CPU consumer with a simulated training step: sleeps ``step_ms`` per batch (releasing the GIL,
    as a step waiting on an accelerator does), so the loader's work overlaps it."""

    def __init__(self, step_ms: float) -> None:
        self.step_s = step_ms / 1e3
        self.id = f"cpustep{step_ms:g}ms"

    def consume(self, batch: Any) -> None:
        time.sleep(self.step_s)

    def finish(self) -> Mapping[str, Any]:
        return {"step_ms": self.step_s * 1e3}


#: ``runner(round_fn, rounds, between)`` runs ``round_fn`` ``rounds`` times, calling
#: ``between`` (untimed) before each.  The pytest plugin passes pytest-benchmark's pedantic.
Runner = Callable[[Callable[[], None], int, Callable[[], None]], None]


def default_runner(round_fn: Callable[[], None], rounds: int, between: Callable[[], None]) -> None:
    for _ in range(rounds):
        between()
        round_fn()


def back_to_back(round_fn: Callable[[], None], rounds: int, between: Callable[[], None]) -> None:
    """Rounds with nothing between them: ``between`` runs once, before the first, so workers cannot
    refill their prefetch queues outside the timed region and make the next round look faster."""
    between()
    for _ in range(rounds):
        round_fn()
