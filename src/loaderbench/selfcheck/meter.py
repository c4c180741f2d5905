"""An independent meter of a case's samples/s (a bare loop over the same DataLoader), paired with the harness:
does the harness measure what a plain loop measures?  The command line is ``python -m loaderbench.tools.meter``."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import statistics
import tempfile
import time
from dataclasses import dataclass

from torch.utils.data import DataLoader

from loaderbench.config import LoaderConfig
from loaderbench.engine.harness import measure
from loaderbench.engine.plan import Plan
from loaderbench.selfcheck.common import case_id
from loaderbench.selfcheck.overhead import pinned_threads
from loaderbench.workloads.recipes import Workload

DEFAULT_CASES = "io:w2,io-lognormal:w2,iterable-io:w2,skewed:w2,cpu:w2,transfer:w2,file:w2"


@dataclass(frozen=True, slots=True)
class Agreement:
    """One case's interleaved pairs of samples/s: the harness (``a``) and what it is checked against
    (``b``: the meter, or the harness with longer rounds)."""

    case_id: str
    a: tuple[float, ...]
    b: tuple[float, ...]
    labels: tuple[str, str] = ("harness", "meter")

    @property
    def ratios(self) -> list[float]:
        return [x / y for x, y in zip(self.a, self.b, strict=True)]

    @property
    def ratio(self) -> float:
        """Median over the pairs of a / b samples/s (1.0: they agree)."""
        return statistics.median(self.ratios)


def meter(workload: Workload, config: LoaderConfig, *, length: int, timed_batches: int, skip: int) -> float:
    """samples/s of a bare loop over a fresh loader: skip ``skip`` batches (workers starting, queues
    filling), then time ``timed_batches`` batches with ``perf_counter``."""
    bs = config.batch_size or 1
    with tempfile.TemporaryDirectory(prefix="loaderbench-meter-") as workdir:
        dataset = workload.build(length, workdir)
        loader = DataLoader(dataset, **config.dataloader_kwargs(dataset, user_collate=workload.user_collate()))
        it = iter(loader)
        try:
            for _ in range(skip):
                next(it)
            t0 = time.perf_counter()
            for _ in range(timed_batches):
                next(it)
            seconds = time.perf_counter() - t0
        finally:
            stop = getattr(it, "_shutdown_workers", None)
            if stop is not None:
                with contextlib.suppress(Exception):
                    stop()
            del it, loader
            gc.collect()
    return timed_batches * bs / seconds


def agreement(workload: Workload, config: LoaderConfig, *, pairs: int = 5, plan: Plan | None = None) -> Agreement:
    """``pairs`` interleaved (harness, meter) measurements of one case."""
    plan = plan or Plan()
    harness: list[float] = []
    bare: list[float] = []
    with pinned_threads(plan.torch_threads):  # as the harness pins the main process's threads
        for _ in range(pairs):
            m = measure(workload, config, plan=plan)
            harness.append(m.samples_per_s)
            # the meter's own start-up allowance: twice what the workers can have prefetched, plus two
            skip = 2 + 2 * (config.effective_prefetch_factor or 0) * config.num_workers
            tail = 2 + (config.effective_prefetch_factor or 0) * config.num_workers  # the epoch's end stays untimed
            bs = config.batch_size or 1
            length = (skip + m.steady_batches + tail) * bs
            bare.append(meter(workload, config, length=length, timed_batches=m.steady_batches, skip=skip))
    return Agreement(case_id(workload, config), tuple(harness), tuple(bare))


def round_length_agreement(
    workload: Workload, config: LoaderConfig, *, factor: float, pairs: int = 5, plan: Plan | None = None
) -> Agreement:
    """``pairs`` interleaved measurements at ``plan.round_s`` and at ``factor`` times it."""
    plan = plan or Plan()
    longer = dataclasses.replace(plan, round_s=plan.round_s * factor)
    short: list[float] = []
    long: list[float] = []
    with tempfile.TemporaryDirectory(prefix="loaderbench-rounds-") as workdir:  # files generated once, shared
        for _ in range(pairs):
            short.append(measure(workload, config, plan=plan, workdir=workdir).samples_per_s)
            long.append(measure(workload, config, plan=longer, workdir=workdir).samples_per_s)
    labels = (f"rounds {plan.round_s:g} s", f"rounds {longer.round_s:g} s")
    return Agreement(case_id(workload, config), tuple(short), tuple(long), labels)
