"""The suite's own benchmark: what the harness costs, against a bare loop.

``python -m loaderbench.tools.overhead`` measures a near-zero-cost workload (an
in-memory ``TensorDataset``, so the loader's own per-batch cost dominates)
through the harness and through a bare ``for batch in loader: pass`` over the
same loader settings, interleaved, and prints the ratio of the medians.  A
ratio of 1.0 means the harness costs nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys

from loaderbench.config import LoaderConfig
from loaderbench.selfcheck.overhead import NEAR_ZERO, harness_overhead


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
