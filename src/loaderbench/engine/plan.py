"""How much to measure per case (:class:`Plan`), and the sizing of the measured epoch from it.

The epoch length is sized from the workload's cost model (or a short pilot in
this process) so that each timed round lasts about ``Plan.round_s``, after
enough untimed warm-up batches to drain what the workers prefetched.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from torch.utils.data import IterableDataset

from loaderbench.clock import Clock, perf_clock
from loaderbench.config import LoaderConfig
from loaderbench.engine.batches import tensor_bytes
from loaderbench.errors import UsageError
from loaderbench.machine import affinity_cpus
from loaderbench.workloads.recipes import Workload

#: Sustained shared-memory IPC rate assumed when sizing worker cases (bytes/s).
_IPC_BYTES_PER_S_GUESS = 1.5e9
#: Cost of passing one unbatched sample through a worker (seconds).
_IPC_S_PER_UNBATCHED_SAMPLE = 4.5e-4


@dataclass(frozen=True, slots=True)
class Plan:
    """How much to measure per case."""

    rounds: int = 5
    round_s: float = 0.25
    warmup_batches: int = 2
    min_batches_per_round: int = 4
    max_batches_per_round: int = 5000
    next_epoch: bool = True
    memory_interval_s: float = 0.1
    torch_threads: int = 1
    shutdown_timeout_s: float = 20.0
    seed: int = 0
    #: A case that delivers no batch and begins no phase for this long is hung: the harness kills its
    #: workers (or interrupts the main process) and fails the case.  ``math.inf`` turns the watchdog off.
    batch_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        for name in ("rounds", "warmup_batches", "min_batches_per_round", "torch_threads"):
            if getattr(self, name) < 1:
                raise UsageError(f"Plan({name}={getattr(self, name)!r}): must be at least 1. Raise it.")
        if not self.round_s > 0:
            raise UsageError(f"Plan(round_s={self.round_s!r}): must be positive. Use e.g. 0.25.")
        if not self.batch_timeout_s > 0:
            raise UsageError(
                f"Plan(batch_timeout_s={self.batch_timeout_s!r}): must be positive. "
                "Use e.g. 120, or math.inf for no limit."
            )


def estimate_samples_per_s(
    workload: Workload, config: LoaderConfig, workdir: str | os.PathLike[str], *, clock: Clock = perf_clock
) -> float:
    """A rough throughput estimate used only to size the epoch.

    The cost model when there is one; otherwise a pilot of a few samples in
    this process, scaled by the worker count and capped by measured IPC costs
    (about 0.45 ms per unbatched sample, ~1.5 GB/s of shared-memory traffic).
    """
    cpus = affinity_cpus()
    ideal = workload.ideal_samples_per_s(config.num_workers, cpus)
    if ideal is not None:
        return ideal
    bs = config.batch_size or 1
    n = min(bs, 8)
    pilot = workload.build(max(bs, 8) + 1, workdir)
    # one untimed sample first: a first call pays for lazy imports (a decoder's plugins), first page
    # faults and allocator growth, and timing it made a decode dataset look several times slower than
    # it is, so rounds came out a fraction of --loader-round-seconds long
    if isinstance(pilot, IterableDataset):
        it = iter(pilot)
        next(it)
        t0 = clock()
        samples = [next(it) for _ in range(n)]
    else:
        pilot[0]  # type: ignore[index]
        t0 = clock()
        samples = [pilot[i] for i in range(1, n + 1)]  # type: ignore[index]
    cost = max((clock() - t0) / n, 1e-7)
    rate = min(config.num_workers or 1, cpus) / cost
    if config.num_workers > 0:
        rate = min(rate, _IPC_BYTES_PER_S_GUESS / max(tensor_bytes(samples[0]), 1))
        if config.batch_size is None:
            rate = min(rate, config.num_workers / _IPC_S_PER_UNBATCHED_SAMPLE)
    return rate


def warmup_batches(config: LoaderConfig, plan: Plan) -> int:
    """Untimed batches after the first: enough to drain the batches that workers
    prefetched during start-up (``prefetch_factor * num_workers``), so the first
    timed round starts in the steady state."""
    return plan.warmup_batches + (config.effective_prefetch_factor or 0) * config.num_workers


@dataclass(slots=True)
class Epoch:
    """Sizing of the measured epoch."""

    batch_size: int
    batches_per_round: int
    total_batches: int

    @property
    def length(self) -> int:
        return self.total_batches * self.batch_size


def plan_epoch(workload: Workload, config: LoaderConfig, plan: Plan, rate: float) -> Epoch:
    """Batches per round so one round lasts about ``plan.round_s`` at ``rate`` samples/s."""
    bs = config.batch_size or 1
    per_round = math.ceil(plan.round_s * rate / bs)
    per_round = max(plan.min_batches_per_round, min(plan.max_batches_per_round, per_round))
    # the first batch, the warm-up, the timed rounds and one untimed round for the memory sampler
    total = warmup_batches(config, plan) + 1 + (plan.rounds + 1) * per_round
    if workload.is_iterable and config.num_workers > 1:
        # each worker must get whole batches, or it yields a short batch at its end
        step = config.num_workers
        total = math.ceil(total / step) * step
    return Epoch(batch_size=bs, batches_per_round=per_round, total_batches=total)


#: How much slower per batch than planned the warm-up must run before the rounds are made shorter.
REPLAN_FACTOR = 2.0


def replanned_batches(per_round: int, warm_batches: int, consumed_s: float, plan: Plan) -> int:
    """Batches per round after the warm-up, whose ``warm_batches`` batches the consumer spent ``consumed_s``
    seconds on (its host-to-device copies and device steps; not the loader's time, which the CPU-side
    estimate covers, worker start-up included): when consuming a batch took more than
    :data:`REPLAN_FACTOR` times what the plan gave a whole batch, a round of ``per_round`` batches would
    last many times ``plan.round_s`` (a copy-bound case on a slow link); then fewer batches, so a round
    lasts about ``plan.round_s`` (so does a simulated step far slower than the loader).  Never more batches
    than planned; the plain CPU consumer, which does nothing with a batch, never changes the plan."""
    if warm_batches < 1 or not consumed_s > 0 or per_round <= plan.min_batches_per_round:
        return per_round
    seen = consumed_s / warm_batches
    if seen <= REPLAN_FACTOR * plan.round_s / per_round:
        return per_round
    return max(plan.min_batches_per_round, min(per_round, math.ceil(plan.round_s / seen)))
