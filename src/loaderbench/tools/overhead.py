"""The suite's own benchmark: what the harness costs, against a bare loop.

``python -m loaderbench.tools.overhead`` measures a near-zero-cost workload (an
in-memory ``TensorDataset``, so the loader's own per-batch cost dominates)
through the harness and through a bare ``for batch in loader: pass`` over the
same loader settings, interleaved, and prints the ratio of the medians.  A
ratio of 1.0 means the harness costs nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from loaderbench.config import LoaderConfig
from loaderbench.engine.harness import measure
from loaderbench.engine.plan import Plan
from loaderbench.engine.workloads import Workload

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loaderbench.tools.overhead", description=__doc__)
    parser.add_argument("--repeats", type=int, default=7, help="interleaved harness/bare pairs (default: 7)")
    parser.add_argument("--config", default="w0-bs32", help="LoaderConfig id (default: w0-bs32)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats={args.repeats}: must be at least 1")
    try:
        config = LoaderConfig.from_id(args.config)
    except ValueError as exc:
        parser.error(f"--config: {exc}")
    result = harness_overhead(repeats=args.repeats, config=config)
    h, b = result.harness_samples_per_s, result.bare_samples_per_s
    print(f"workload: {NEAR_ZERO.description}; config {config.id}; {args.repeats} interleaved pairs")
    print(f"harness  samples/s median {statistics.median(h):10.0f}  (min {min(h):.0f}, max {max(h):.0f})")
    print(f"bare     samples/s median {statistics.median(b):10.0f}  (min {min(b):.0f}, max {max(b):.0f})")
    print(f"ratio harness/bare, median of the pairs: {result.ratio:.3f}  (target >= 0.98)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
