"""The synchronous step of a data-parallel job, as a :class:`~loaderbench.engine.consumers.Consumer` wrapper.

In DDP every step ends in an all-reduce of the gradients, so every rank waits for the slowest one.
:class:`SyncConsumer` does the same around the case's own consumer: after each batch's step (the wrapped
consumer: nothing, a simulated step, or the CUDA copy + compute) it all-reduces a small tensor and times the
wait.  Per timed round it records where each rank's time went: ``data_wait_s`` (waiting for the loader's next
batch), ``step_s`` (the step) and ``collective_wait_s`` (waiting at the all-reduce for the other ranks).

The collective runs only while :meth:`SyncConsumer.armed` is on, which :func:`synced_runner` does around the
timed rounds (after one untimed barrier): the rounds have the same batch count on every rank, while the
untimed phases (warm-up, the memory round, the epoch's rest) need not, and a collective that one rank skips
would hang the others.  A collective that fails (another rank died or timed out) becomes a
:class:`~loaderbench.errors.CaseFailed` of kind ``rank-wait``, and :attr:`SyncConsumer.in_collective` says
whether the rank was stuck there when something else (the watchdog) stopped it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist

from loaderbench.clock import Clock, perf_clock
from loaderbench.engine.consumers import Consumer, Runner, default_runner
from loaderbench.errors import CaseFailed, FailureKind

#: The per-round metrics this wrapper adds (seconds summed over the round's batches).
SYNC_METRICS = ("data_wait_s", "step_s", "collective_wait_s")


def all_reduce_step(device: str = "cpu") -> Callable[[], None]:
    """An all-reduce of one small tensor over the default process group, blocking until every rank joined
    (on CUDA, ``.item()`` waits for NCCL's kernel, as a step that reads its loss does)."""
    flag = torch.zeros(1, device=device)  # zeros: summing it every step never overflows

    def reduce() -> None:
        dist.all_reduce(flag)
        if flag.is_cuda:
            flag.item()

    return reduce


class SyncConsumer:
    """Wraps ``inner``: every batch gets the inner step, then (while armed) the collective."""

    def __init__(
        self,
        inner: Consumer,
        *,
        reduce: Callable[[], None],
        case: str = "",
        rank: int = 0,
        ranks: int = 1,
        clock: Clock = perf_clock,
    ) -> None:
        self.inner = inner
        self.id = str(getattr(inner, "id", ""))
        self._reduce = reduce
        self._case = case
        self._rank = rank
        self._ranks = ranks
        self._clock = clock
        self.armed = False
        self.in_collective = False
        self.steps = 0  # collectives completed
        self._last: float | None = None  # when the previous step's collective returned
        self._acc = dict.fromkeys(SYNC_METRICS, 0.0)
        self._round = dict.fromkeys(SYNC_METRICS, 0.0)

    def consume(self, batch: Any) -> None:
        t0 = self._clock()
        if self.armed and self._last is not None:
            self._acc["data_wait_s"] += t0 - self._last
        self.inner.consume(batch)
        if not self.armed:
            return
        t1 = self._clock()
        self._acc["step_s"] += t1 - t0
        self.collective()
        t2 = self._clock()
        self._acc["collective_wait_s"] += t2 - t1

    def collective(self) -> None:
        """One all-reduce; a failure (another rank died, or the group's timeout passed) is a ``CaseFailed``."""
        self.in_collective = True
        try:
            self._reduce()
        except RuntimeError as exc:
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise CaseFailed(
                f"case {self._case} failed: rank {self._rank} of {self._ranks} waited at the per-step all-reduce "
                f"and the collective failed ({first}): another rank stopped stepping (it failed, died or hung). "
                "See that rank's error.",
                case=self._case,
                phase="measuring the steady-state rounds (the per-step all-reduce)",
                kind=FailureKind.RANK_WAIT,
            ) from None
        self.in_collective = False
        self.steps += 1
        if self.armed:
            self._last = self._clock()  # the next batch's data wait starts now

    def sync(self) -> None:
        self.inner.sync()
        self._round = self._acc
        self._acc = dict.fromkeys(SYNC_METRICS, 0.0)
        self._last = None

    def round_metrics(self, samples: int, seconds: float) -> Mapping[str, float]:
        return {**self.inner.round_metrics(samples, seconds), **self._round}

    def finish(self) -> Mapping[str, Any]:
        return self.inner.finish()

    def close(self) -> None:
        self.inner.close()

    @contextmanager
    def arming(self) -> Iterator[None]:
        """The collective on, for the timed rounds."""
        self.armed, self._last = True, None
        try:
            yield
        finally:
            self.armed = False


def synced_runner(sync: SyncConsumer, runner: Runner = default_runner) -> Runner:
    """A runner whose timed rounds step in lockstep across ranks: before each round (untimed, in ``between``)
    one barrier collective, so no rank's round clock runs while another rank is still warming up."""

    def run(round_fn: Callable[[], None], rounds: int, between: Callable[[], None]) -> None:
        def setup() -> None:
            between()
            sync.collective()

        with sync.arming():
            runner(round_fn, rounds, setup)

    return run
