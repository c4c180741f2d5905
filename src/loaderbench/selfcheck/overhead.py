"""What the harness costs, against a bare loop over a near-zero-cost loader.  The command line is
``python -m loaderbench.tools.overhead``."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from loaderbench.config import LoaderConfig
from loaderbench.engine.harness import measure
from loaderbench.engine.plan import Plan
from loaderbench.workloads.recipes import Workload

NEAR_ZERO = Workload(
    name="near-zero",
    kind="tensor",
    batch_size=32,
    description="in-memory TensorDataset 10000x10: the loader's own cost dominates",
    params={"rows": 10000, "shape": [10]},
)


@dataclass(frozen=True, slots=True)
class Overhead:
    harness_samples_per_s: tuple[float, ...]
    bare_samples_per_s: tuple[float, ...]

    @property
    def ratio(self) -> float:
        """Median over the interleaved pairs of harness / bare-loop throughput (1.0 = free).

        Pairing cancels the machine's slow drifts, which on a shared VM are larger than the effect."""
        pairs = zip(self.harness_samples_per_s, self.bare_samples_per_s, strict=True)
        return statistics.median(h / b for h, b in pairs)


def bare_loop(workload: Workload, config: LoaderConfig, length: int) -> float:
    """samples/s of ``for batch in loader: pass`` over ``length`` samples."""
    dataset = workload.build(length)
    loader = DataLoader(dataset, **config.dataloader_kwargs(dataset))
    t0 = time.perf_counter()
    for _batch in loader:
        pass
    return length / (time.perf_counter() - t0)


@contextlib.contextmanager
def pinned_threads(threads: int) -> Iterator[None]:
    """torch's intra-op threads in this process set to ``threads`` inside (the harness pins them for each
    case, so a bare loop compared with it must too), restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def harness_overhead(*, repeats: int = 7, config: LoaderConfig | None = None, plan: Plan | None = None) -> Overhead:
    config = config or LoaderConfig(batch_size=NEAR_ZERO.batch_size)
    plan = plan or Plan(rounds=5, round_s=0.2)
    harness: list[float] = []
    bare: list[float] = []
    with pinned_threads(plan.torch_threads):
        for _ in range(repeats):
            m = measure(NEAR_ZERO, config, plan=plan)
            harness.append(m.samples_per_s)
            steady = m.steady_batches * (config.batch_size or 1)
            bare.append(bare_loop(NEAR_ZERO, config, steady))
    return Overhead(tuple(harness), tuple(bare))
