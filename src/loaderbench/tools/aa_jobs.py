"""Whole-job A/A check of the stored gate, as a PR author meets it: ``python -m loaderbench.tools.aa_jobs``.

It runs the real main job (``pytest --benchmark``, a fresh process each time) against a baseline it
records first (``--record`` sessions: one ``--loader-baseline-save``, then ``--loader-baseline-append``),
then ``--jobs`` unchanged reruns, at least ``--spacing-min`` minutes apart so that the machine's state
can drift between them.  Nothing changes between recording and rerun, so every red job is a false red.
``--hog N`` runs N spinning processes beside every rerun: the drift scenario of a machine busier than it
was at recording (the gate must say so and not blame the code).

Each job's stdout and ``--benchmark-json`` are kept under ``OUT``; ``OUT/jobs.jsonl`` gets one line per
job (exit code, verdict counts, the regressed verdicts' messages, wall time, 1-minute load average
before and after).  The summary gives the false-red rate per job with its exact (Clopper-Pearson) 95%
upper bound.  ``--lock FILE`` takes an exclusive ``flock`` around each recording and job, so other
work that takes the same lock (``flock FILE pytest ...``) never runs beside a measurement.

Extra arguments after ``--`` go to every pytest call (e.g. ``-- --loader-workloads=io,cpu``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from loaderbench.selfcheck.common import locked, log, upper_95

#: A CPU hog: one process that spins until it is killed.
_HOG = "while True: pass"


@contextmanager
def hogging(count: int) -> Iterator[None]:
    """``count`` spinning processes beside whatever runs inside; every one is killed and reaped after."""
    procs = [subprocess.Popen([sys.executable, "-c", _HOG]) for _ in range(count)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def _pytest(args: Sequence[str], out: Path, name: str, lock: str | None, hog: int = 0) -> dict[str, Any]:
    with locked(lock), hogging(hog):
        load0 = os.getloadavg()[0]
        start = time.time()
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", *args],
            capture_output=True,
            text=True,
        )
        wall = time.time() - start
        load1 = os.getloadavg()[0]
    (out / f"{name}.txt").write_text(proc.stdout + proc.stderr)
    job = {"name": name, "rc": proc.returncode, "wall_s": round(wall, 1), "load": [load0, load1], "at": start}
    return job | ({"hog": hog} if hog else {})


def _verdicts(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    doc = json.loads(path.read_text())
    return [v for b in doc.get("benchmarks", []) for v in (b.get("extra_info") or {}).get("gate") or []]


def run(args: argparse.Namespace, extra: Sequence[str]) -> list[dict[str, Any]]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = ["--benchmark", f"--loader-baseline-dir={out / 'baselines'}", *extra]
    if not args.skip_record:
        for i in range(args.record):
            save = ["--loader-baseline-save"] + (["--loader-baseline-append"] if i else [])
            rec = _pytest([*base, *save], out, f"record-{i + 1}", args.lock)
            log(f"recording session {i + 1}/{args.record}: exit {rec['rc']}, {rec['wall_s']} s", tool="aa_jobs")
            if rec["rc"] != 0:
                raise SystemExit(f"aa_jobs: recording session {i + 1} exited {rec['rc']}; see {out}/record-{i + 1}.txt")
    jobs = []
    done = len((out / "jobs.jsonl").read_text().splitlines()) if (out / "jobs.jsonl").exists() else 0
    for j in range(args.jobs):
        start = time.time()
        name = f"job-{done + j + 1:03d}"
        job = _pytest([*base, f"--benchmark-json={out / (name + '.json')}"], out, name, args.lock, args.hog)
        verdicts = _verdicts(out / f"{name}.json")
        counts: dict[str, int] = {}
        for v in verdicts:
            counts[v["outcome"]] = counts.get(v["outcome"], 0) + 1
        job.update(counts=counts, regressed=[v["message"] for v in verdicts if v["outcome"] == "regressed"])
        job["tail"] = (out / f"{name}.txt").read_text().strip().splitlines()[-1:]
        with open(out / "jobs.jsonl", "a") as fh:
            fh.write(json.dumps(job) + "\n")
        jobs.append(job)
        log(f"{name}: exit {job['rc']}, {counts}, {job['wall_s']} s, load {job['load']}", tool="aa_jobs")
        if j + 1 < args.jobs:
            time.sleep(max(0.0, args.spacing_min * 60 - (time.time() - start)))
    return jobs


def summary(jobs: Sequence[dict[str, Any]]) -> list[str]:
    """The false-red rate per job (exit 1) with its 95% upper bound, and each red job's regressions."""
    red = [j for j in jobs if j["rc"] == 1]
    other = [j for j in jobs if j["rc"] not in (0, 1)]
    n = len(jobs) - len(other)
    span_h = (max(j["at"] for j in jobs) - min(j["at"] for j in jobs)) / 3600 if jobs else 0.0
    walls = sorted(j["wall_s"] for j in jobs)
    loads = sorted(x for j in jobs for x in j["load"])
    lines = [
        f"{len(red)} red of {n} A/A jobs (95% upper bound {upper_95(len(red), n):.1%}), spread over {span_h:.1f} h",
        f"job wall time: min {walls[0]:.0f} s, median {walls[len(walls) // 2]:.0f} s, max {walls[-1]:.0f} s"
        if walls
        else "no job ran",
        f"1-minute load average around the jobs: {loads[0]:.2f} to {loads[-1]:.2f} on {os.cpu_count()} CPUs"
        if loads
        else "",
    ]
    hogged = [j for j in jobs if j.get("hog") and j["rc"] in (0, 1)]
    if hogged:
        lines.append(
            f"of which {len(hogged)} ran beside a CPU hog (the drift scenario): {sum(j['rc'] == 1 for j in hogged)} red"
        )
    lines += [f"  {j['name']}: exit {j['rc']} (not a verdict: see {j['name']}.txt)" for j in other]
    for j in red:
        lines += [f"  {j['name']}: " + "; ".join(j["regressed"] or j["tail"])]
    return [line for line in lines if line]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        extra, argv = argv[argv.index("--") + 1 :], argv[: argv.index("--")]
    parser = argparse.ArgumentParser(prog="python -m loaderbench.tools.aa_jobs", description=__doc__.split("\n")[0])
    parser.add_argument("out", help="folder for the baseline, each job's output and jobs.jsonl")
    parser.add_argument("--record", type=int, default=3, help="baseline sessions to record first (default 3)")
    parser.add_argument("--skip-record", action="store_true", help="reuse the baseline already in OUT/baselines")
    parser.add_argument("--jobs", type=int, default=20, help="unchanged reruns (default 20)")
    parser.add_argument("--spacing-min", type=float, default=6.0, help="minutes from one job's start to the next's")
    parser.add_argument("--lock", default=None, help="flock this file around every pytest call")
    parser.add_argument(
        "--hog",
        type=int,
        default=0,
        help="spinning processes beside every rerun (not the recording): the drift scenario, a machine busier "
        "than at recording (default 0)",
    )
    parser.add_argument("--summary-only", action="store_true", help="print the summary of OUT/jobs.jsonl and stop")
    args = parser.parse_args(argv)
    if args.record < 1 or args.jobs < 1 or args.spacing_min < 0 or args.hog < 0:
        parser.error(
            f"--record={args.record} --jobs={args.jobs} --spacing-min={args.spacing_min} --hog={args.hog}: "
            "--record and --jobs must be >= 1, --spacing-min and --hog >= 0"
        )
    if args.summary_only:
        path = Path(args.out) / "jobs.jsonl"
        jobs = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    else:
        jobs = run(args, extra)
    print("\n".join(summary(jobs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
