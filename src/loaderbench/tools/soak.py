"""Soak check: run a tier's cases several times in one process and look for leaks.

``python -m loaderbench.tools.soak`` runs the CPU cases of the ``standard`` tier
twice (``--passes``) through :func:`loaderbench.engine.harness.measure`, with short
rounds, and reports before the first pass and after each pass:

* open file descriptors of this process;
* child processes (all descendants; the forkserver server and multiprocessing's
  resource tracker are started once, by the first case that needs them, and
  stay by design, so they are counted apart);
* /dev/shm: bytes in use (the whole file system, so other programs count too)
  and torch's segments (``torch_*``) in it;
* resident memory (RSS) of this process.

Target: no growth from one pass to the next.  The exit code is 1 when file
descriptors, worker processes or torch segments grew between the last two
passes (RSS is reported, not judged: the allocator keeps freed memory), 0
otherwise.  Not part of ``pytest``: it takes minutes.  ``--workloads io,cpu``
and ``--round-seconds`` make it shorter.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from loaderbench import data
from loaderbench.engine.case import Case
from loaderbench.engine.cleanup import INFRASTRUCTURE, SHM_DIR, shm_segments
from loaderbench.engine.harness import measure
from loaderbench.engine.plan import Plan
from loaderbench.errors import CaseFailed, LoaderbenchError
from loaderbench.report.table import Column, text_table
from loaderbench.selection.tiers import TIERS, build_tier
from loaderbench.workloads.recipes import load_scenarios


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a leak would grow."""

    fds: int
    workers: int
    infrastructure: int
    shm_used_bytes: int
    torch_segments: int
    torch_segment_bytes: int
    rss_bytes: int


def snapshot() -> Snapshot:
    gc.collect()
    me = psutil.Process()
    workers = infrastructure = 0
    for proc in me.children(recursive=True):
        try:
            cmd = " ".join(proc.cmdline())
        except psutil.Error:
            continue
        if proc.ppid() == me.pid and any(m in cmd for m in INFRASTRUCTURE):
            infrastructure += 1
        else:
            workers += 1
    segments = shm_segments()
    seg_bytes = 0
    for name in segments:
        with contextlib.suppress(OSError):
            seg_bytes += os.stat(os.path.join(SHM_DIR, name)).st_size
    try:
        st = os.statvfs(SHM_DIR)
        used = (st.f_blocks - st.f_bfree) * st.f_frsize
    except OSError:
        used = -1
    return Snapshot(
        fds=me.num_fds(),
        workers=workers,
        infrastructure=infrastructure,
        shm_used_bytes=used,
        torch_segments=len(segments),
        torch_segment_bytes=seg_bytes,
        rss_bytes=me.memory_info().rss,
    )


def run_pass(cases: Sequence[Case], plan: Plan) -> list[str]:
    """Measure every case once; returns the failure messages (a failed case does not stop the pass)."""
    failures = []
    for case in cases:
        try:
            measure(case.workload, case.config, device=case.device, plan=plan)
        except CaseFailed as exc:
            failures.append(str(exc))
    return failures


_ROWS = (
    ("open fds", "fds", 1),
    ("worker processes", "workers", 1),
    ("forkserver/resource tracker", "infrastructure", 1),
    ("/dev/shm used (bytes)", "shm_used_bytes", 1),
    ("torch_* segments in /dev/shm", "torch_segments", 1),
    ("torch_* segment bytes", "torch_segment_bytes", 1),
    ("main-process RSS (MB)", "rss_bytes", 1e6),
)


def table(labels: Sequence[str], snaps: Sequence[Snapshot]) -> list[str]:
    """One row per resource, one column per snapshot, and the growth over the last pass."""
    cols = [
        Column("", width=30),
        *(Column(label, "r", min_width=17) for label in labels),
        Column("last pass grew", "r"),
    ]
    rows = []
    for title, field, scale in _ROWS:
        values = [getattr(s, field) / scale for s in snaps]
        digits = 1 if scale != 1 else 0
        rows.append([title, *(f"{v:.{digits}f}" for v in values), f"{values[-1] - values[-2]:+.1f}"])
    return text_table(cols, rows, gap=1)


def leaked(snaps: Sequence[Snapshot]) -> list[str]:
    """What grew between the last two passes (fds, worker processes, torch segments)."""
    a, b = snaps[-2], snaps[-1]
    out = []
    for name in ("fds", "workers", "torch_segments"):
        if getattr(b, name) > getattr(a, name):
            out.append(f"{name}: {getattr(a, name)} -> {getattr(b, name)}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loaderbench.tools.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tier", choices=TIERS, default="standard", help="tier to soak (default: standard)")
    parser.add_argument("--workloads", default=None, help="comma-separated workloads to keep (default: all)")
    parser.add_argument(
        "--scenarios",
        default=str(data.local_or_packaged(Path.cwd(), data.WORKLOADS)),
        help="scenario file (default: %(default)s)",
    )
    parser.add_argument("--passes", type=int, default=2, help="passes over the cases (default: 2)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per case (default: 2)")
    parser.add_argument("--round-seconds", type=float, default=0.05, help="seconds per round (default: 0.05)")
    args = parser.parse_args(argv)
    if args.passes < 2:
        parser.error(f"--passes={args.passes}: must be at least 2 (growth is measured between passes)")
    try:
        workloads = load_scenarios(Path(args.scenarios))
        only = args.workloads.split(",") if args.workloads else None
        tier = build_tier(args.tier, workloads, only=only)
        plan = Plan(rounds=args.rounds, round_s=args.round_seconds)
    except LoaderbenchError as exc:
        parser.error(str(exc))
    cases = [c for c in tier.cases if c.device == "cpu"]
    skipped = len(tier.cases) - len(cases)
    print(
        f"soak: {len(cases)} CPU cases of tier {tier.name}" + (f" ({skipped} CUDA cases left out)" if skipped else "")
    )
    print(f"soak: {args.passes} passes, {args.rounds} rounds of {args.round_seconds:g} s per case")
    snaps = [snapshot()]
    labels = ["before"]
    for n in range(1, args.passes + 1):
        t0 = time.perf_counter()
        failures = run_pass(cases, plan)
        snaps.append(snapshot())
        labels.append(f"after pass {n}")
        print(
            f"soak: pass {n}: {len(cases) - len(failures)} measured, {len(failures)} failed, "
            f"{time.perf_counter() - t0:.0f} s"
        )
        for text in failures:
            print(f"  {text}")
    print()
    for line in table(labels, snaps):
        print(line)
    grew = leaked(snaps)
    print()
    print("soak: no growth between the last two passes" if not grew else f"soak: GREW: {'; '.join(grew)}")
    return 1 if grew else 0


if __name__ == "__main__":
    sys.exit(main())
