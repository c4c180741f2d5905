"""Workers per rank: the io and cpu workloads at 1 and 2 ranks x 0/1/2 workers per rank, against the cost
model's ideal for every rank's loading processes on the shared CPUs (the ranks table in docs/ranks.md).

``python -m loaderbench.tools.rank_scaling [--workloads io,cpu] [--ranks 1,2] [--workers 0,1,2]``
Run it alone on a quiet machine: every case competes for the same cores.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from loaderbench.config import LoaderConfig
from loaderbench.data import WORKLOADS, local_or_packaged
from loaderbench.engine.case import Case
from loaderbench.engine.plan import Plan
from loaderbench.errors import LoaderbenchError, UsageError
from loaderbench.machine import affinity_cpus
from loaderbench.selection.run import run_case
from loaderbench.workloads.recipes import load_scenarios


def _ints(option: str, text: str, minimum: int) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(v < minimum for v in values):
        raise UsageError(f"{option}={text!r}: not a comma-separated list of integers >= {minimum}. Write e.g. 1,2.")
    return values


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loaderbench.tools.rank_scaling", description=__doc__)
    parser.add_argument("--workloads", default="io,cpu")
    parser.add_argument("--ranks", default="1,2")
    parser.add_argument("--workers", default="0,1,2")
    args = parser.parse_args(argv)
    try:
        workloads = load_scenarios(local_or_packaged(Path.cwd(), WORKLOADS))
        names = [n for n in args.workloads.split(",") if n]
        unknown = [n for n in names if n not in workloads]
        if unknown:
            raise UsageError(f"--workloads={args.workloads!r}: unknown workload {unknown[0]!r}.")
        ranks_list = _ints("--ranks", args.ranks, 1)
        workers_list = _ints("--workers", args.workers, 0)
        print(f"case | job samples/s | ideal | per-rank samples/s | launch_s | wall s  ({affinity_cpus()} CPUs)")
        for name in names:
            workload = workloads[name]
            for ranks in ranks_list:
                for workers in workers_list:
                    config = LoaderConfig(batch_size=workload.batch_size, num_workers=workers, ranks=ranks)
                    ideal = workload.ideal_samples_per_s(config.loading_processes, affinity_cpus())
                    t0 = time.perf_counter()
                    m = run_case(Case(workload, config), Plan())
                    per_rank = m.extra.get("rank_samples_per_s", [m.samples_per_s])
                    launch = m.extra.get("launch_s")
                    print(
                        f"{m.case_id} | {m.samples_per_s:.0f} | {'-' if ideal is None else f'{ideal:.0f}'} | "
                        f"{' / '.join(f'{r:.0f}' for r in per_rank)} | {'-' if launch is None else f'{launch:.2f}'} | "
                        f"{time.perf_counter() - t0:.1f}",
                        flush=True,
                    )
    except LoaderbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
