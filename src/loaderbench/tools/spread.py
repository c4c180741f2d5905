"""Run-to-run spread of each case's median across separate processes, and the noise priors it implies.

``python -m loaderbench.tools.spread --processes 6`` runs ``pytest --benchmark`` (the
chosen tier) in N fresh processes, one after another, reads each run's
``--benchmark-json`` and prints, per case, the max/min ratio and the
coefficient of variation of the per-process medians of samples/s.  This is the
noise a gate comparing two runs has to live with.

``--priors-out src/loaderbench/data/noise.toml`` also writes the gate's noise priors
(:mod:`loaderbench.gate.priors`): per workload and metric (samples/s, TTFB, the
epoch stall), the pooled standard deviation of log values between processes
over the workload's cases, with the degrees of freedom it was measured with.
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

#: The metrics whose between-process noise the priors record.
PRIOR_METRICS = ("samples_per_s", "ttfb_s", "epoch_stall_s")


def run_processes(
    n: int, pytest_args: list[str], workdir: Path
) -> tuple[dict[str, list[float]], dict[tuple[str, str, str], list[float]]]:
    """({case id: [median samples/s of process 1..n]}, {(workload, case id, metric): [value per process]})."""
    per_case: dict[str, list[float]] = {}
    per_metric: dict[tuple[str, str, str], list[float]] = {}
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
                for metric in PRIOR_METRICS:
                    value = info.get(metric)
                    if isinstance(value, (int, float)) and value > 0:
                        key = (str(info["workload"]), info["case_id"], metric)
                        per_metric.setdefault(key, []).append(float(value))
    return per_case, per_metric


def priors(per_metric: dict[tuple[str, str, str], list[float]]) -> dict[str, dict[str, tuple[float, int]]]:
    """{workload: {metric: (sigma, dof)}}: the pooled sd of log values over the workload's cases, widened."""
    pooled: dict[tuple[str, str], list[float]] = {}
    dofs: dict[tuple[str, str], int] = {}
    for (workload, _case, metric), values in per_metric.items():
        if len(values) < 2:
            continue
        logs = [math.log(v) for v in values]
        mean = sum(logs) / len(logs)
        pooled.setdefault((workload, metric), []).append(sum((x - mean) ** 2 for x in logs))
        dofs[(workload, metric)] = dofs.get((workload, metric), 0) + len(values) - 1
    out: dict[str, dict[str, tuple[float, int]]] = {}
    for (workload, metric), squares in pooled.items():
        # not widened: the gate's Student's t for the prior's degrees of freedom already allows for an
        # estimate from a handful of processes
        sigma = math.sqrt(sum(squares) / dofs[(workload, metric)])
        out.setdefault(workload, {})[metric] = (sigma, dofs[(workload, metric)])
    return out


def priors_toml(table: dict[str, dict[str, tuple[float, int]]], *, processes: int, command: str) -> str:
    """The priors as the TOML that :func:`loaderbench.gate.priors.load_priors` reads."""
    throughput = sorted(m["samples_per_s"][0] for m in table.values() if "samples_per_s" in m)
    typical = throughput[len(throughput) // 2] if throughput else 0.10
    lines = [
        "# Noise priors of the regression gate: between-process sd of log values per workload and metric.",
        f"# Measured by `{command}` ({processes} processes), pooled over each workload's cases.",
        "# The gate pools them with a baseline's own sessions (loaderbench.gate.priors).",
        "",
        "[default]  # workloads without a prior of their own: the typical workload's, at least 10%, at few dof",
        f"samples_per_s = {{ sigma = {max(0.10, typical):.4f}, dof = 10 }}",
        "between_hosts = 0.03",
    ]
    for workload in sorted(table):
        lines += ["", f"[workload.{json.dumps(workload)}]"]
        for metric, (sigma, dof) in sorted(table[workload].items()):
            lines.append(f"{metric} = {{ sigma = {sigma:.4f}, dof = {dof} }}")
    return "\n".join(lines) + "\n"


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
    parser.add_argument("--priors-out", default=None, metavar="PATH", help="also write the gate's noise priors")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments, after --")
    args = parser.parse_args(argv)
    if args.processes < 2:
        parser.error(f"--processes={args.processes}: need at least 2 to measure a spread")
    with tempfile.TemporaryDirectory(prefix="loaderbench-spread-") as tmp:
        per_case, per_metric = run_processes(args.processes, args.pytest_args, Path(tmp))
    for line in render(per_case):
        print(line)
    if args.priors_out:
        command = " ".join(["python -m loaderbench.tools.spread", *(argv if argv is not None else sys.argv[1:])])
        text = priors_toml(priors(per_metric), processes=args.processes, command=command)
        Path(args.priors_out).write_text(text, encoding="utf-8")
        print(f"wrote {args.priors_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
