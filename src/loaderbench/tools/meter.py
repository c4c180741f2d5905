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
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

from loaderbench import data
from loaderbench.engine.plan import Plan
from loaderbench.errors import LoaderbenchError, UsageError
from loaderbench.report.table import Column, text_table
from loaderbench.selfcheck.common import case_id, log, parse_cases
from loaderbench.selfcheck.meter import DEFAULT_CASES, Agreement, agreement, round_length_agreement
from loaderbench.workloads.recipes import load_scenarios


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
    parser.add_argument(
        "--scenarios",
        default=str(data.local_or_packaged(Path.cwd(), data.WORKLOADS)),
        help="scenario file (default: %(default)s)",
    )
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
