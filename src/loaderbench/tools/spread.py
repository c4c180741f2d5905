"""Run-to-run spread of each case's median across separate processes.

``python -m loaderbench.tools.spread --processes 6`` runs ``pytest --benchmark`` (the
chosen tier) in N fresh processes, one after another, reads each run's
``--benchmark-json`` and prints, per case, the max/min ratio and the
coefficient of variation of the per-process medians of samples/s.  This is the
noise a gate comparing two runs has to live with.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from loaderbench import stats
from loaderbench.report.table import Column, text_table


def run_processes(n: int, pytest_args: list[str], workdir: Path) -> dict[str, list[float]]:
    """{case id: [median samples/s of process 1..n]}."""
    per_case: dict[str, list[float]] = {}
    for i in range(n):
        out = workdir / f"run{i}.json"
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "--benchmark",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--benchmark-json={out}",
            *pytest_args,
        ]
        print(f"[{i + 1}/{n}] {' '.join(cmd)}", flush=True)
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
        if not out.exists():
            raise SystemExit(f"run {i + 1} wrote no JSON (exit {proc.returncode}): {proc.stderr[-2000:]}")
        for bench in json.loads(out.read_text())["benchmarks"]:
            info = bench.get("extra_info", {})
            if "case_id" in info and info.get("samples_per_s"):
                per_case.setdefault(info["case_id"], []).append(float(info["samples_per_s"]))
    return per_case


def render(per_case: dict[str, list[float]]) -> list[str]:
    """Per case: the median of the per-process medians, their max/min ratio and CV, and how many processes."""
    rows = []
    for cid, values in sorted(per_case.items()):
        ratio = max(values) / min(values) if min(values) > 0 else math.inf
        rows.append(
            [cid, f"{statistics.median(values):.1f}", f"{ratio:.3f}", f"{stats.cv(values):.1%}", f"{len(values)}"]
        )
    cols = [Column("case", min_width=48), Column("median samples/s", "r"), Column("max/min", "r", min_width=8)]
    cols += [Column("CV", "r", min_width=6), Column("n")]
    return text_table(cols, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loaderbench.tools.spread", description=__doc__)
    parser.add_argument("--processes", type=int, default=6, help="separate pytest processes (default: 6)")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments, after --")
    args = parser.parse_args(argv)
    if args.processes < 2:
        parser.error(f"--processes={args.processes}: need at least 2 to measure a spread")
    with tempfile.TemporaryDirectory(prefix="loaderbench-spread-") as tmp:
        per_case = run_processes(args.processes, args.pytest_args, Path(tmp))
    for line in render(per_case):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
