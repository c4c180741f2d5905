"""Does the harness measure what a plain loop measures?  ``python -m loaderbench.tools.meter``.

For each case (default: the 2-worker case of every smoke CPU workload), it pairs the harness
(:func:`loaderbench.engine.harness.measure`) with an independent meter, written separately: the
same workload, dataset length and DataLoader arguments, iterated by a bare loop that skips its own
start-up allowance and then times as many batches as the harness timed, with nothing else running
(no memory sampler, no watchdog, no collate wrapper, no rounds).  Harness and meter alternate, a
pair at a time, so the machine's drift hits both; the figure is the median over the pairs of
harness / meter samples/s.  1.00 means the harness neither bends nor flatters the pipeline.

``--round-factor 4`` asks the other question of an honest harness, whether the length of a round
changes the answer: it pairs the harness at ``--round-seconds`` with the harness at 4 times that.

Where :mod:`loaderbench.tools.overhead` asks what the harness costs on a loader that costs nothing
(0 workers), this asks whether it disturbs real pipelines with workers: the memory sampler, reading
every worker's PSS while a 2-worker transfer case was timed, made that case 14% slower before it was
confined to an untimed round.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

from torch.utils.data import DataLoader

from loaderbench.config import LoaderConfig
from loaderbench.engine.harness import measure
from loaderbench.engine.plan import Plan
from loaderbench.engine.workloads import Workload, load_scenarios
from loaderbench.errors import LoaderbenchError, UsageError
from loaderbench.report.table import Column, text_table
from loaderbench.tools.overhead import pinned_threads
from loaderbench.tools.selfcheck_common import case_id, log, parse_cases

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


def render(results: Sequence[Agreement]) -> list[str]:
    rows = [
        [
            r.case_id,
            f"{statistics.median(r.a):.0f}",
            f"{statistics.median(r.b):.0f}",
            f"{r.ratio:.3f}",
            f"{min(r.ratios):.3f}-{max(r.ratios):.3f}",
            str(len(r.ratios)),
        ]
        for r in results
    ]
    first, second = results[0].labels if results else ("harness", "meter")
    head = ["case", f"{first} samples/s", f"{second} samples/s", "ratio", "range", "pairs"]
    return text_table([Column(h) for h in head], rows, gap=2)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loaderbench.tools.meter", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", default="fixtures/workloads.toml", help="scenario file (default: %(default)s)")
    parser.add_argument("--cases", default=DEFAULT_CASES, help="WORKLOAD:CONFIG_ID list (default: %(default)s)")
    parser.add_argument("--pairs", type=int, default=5, help="interleaved pairs per case (default: %(default)s)")
    parser.add_argument("--round-seconds", type=float, default=Plan().round_s, help="default: %(default)s")
    parser.add_argument(
        "--round-factor",
        type=float,
        default=None,
        help="compare the harness at --round-seconds with the harness at this many times it, instead of the "
        "meter (default: off)",
    )
    args = parser.parse_args(argv)
    try:
        if args.pairs < 1:
            raise UsageError(f"--pairs={args.pairs}: must be at least 1.")
        if args.round_factor is not None and not args.round_factor > 0:
            raise UsageError(f"--round-factor={args.round_factor}: must be positive, e.g. 4.")
        plan = Plan(round_s=args.round_seconds)
        cases = parse_cases(args.cases, load_scenarios(args.scenarios))
        results = []
        for workload, config in cases:
            log(f"{case_id(workload, config)}: {args.pairs} pairs", tool="meter")
            if args.round_factor is None:
                results.append(agreement(workload, config, pairs=args.pairs, plan=plan))
            else:
                results.append(
                    round_length_agreement(workload, config, factor=args.round_factor, pairs=args.pairs, plan=plan)
                )
    except LoaderbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in render(results):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
