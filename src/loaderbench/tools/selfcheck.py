"""A/A and power self-check of the regression gate: ``python -m loaderbench.tools.selfcheck``.

It drives :func:`loaderbench.engine.harness.measure` directly (not pytest), every
session in a fresh Python process, as CI runs would:

1. **Record** a baseline into a temporary directory: ``--baseline-sessions``
   processes, each measuring every case ``--baseline-repeats`` times, appended
   into one document (so the baseline knows the case's noise across processes).
   With a list (``1,3,5``), the document is copied as it stands after each of
   those sessions, and every rerun is judged against each copy: one table per
   baseline size, from the same reruns.
2. **Compare** ``--reruns`` times.  A rerun is one session per variant, in a
   shuffled order: the cases as they are (A/A: any ``regressed`` verdict is a
   false alarm) and with each injected slowdown (power: is ``samples_per_s``
   flagged?).  A session measures every case once, in the ``--cases`` order,
   like a pytest run, and checks it against the baseline through a
   :class:`~loaderbench.gate.model.Gate`, extra measurements included.

The slowdown is injected from outside the suite's code path: the case's
workload is replaced by :class:`SlowedWorkload`, whose dataset wraps the
original one (:class:`SlowedDataset`) and adds, to every ``__getitem__``,
``s * max(1, num_workers) / baseline_samples_per_s`` seconds: the pipeline's
per-sample time at its bottleneck, scaled by ``s``, so the pipeline becomes
about ``1 + s`` times slower.  The delay sleeps for sleep-bound (I/O) workloads
and busy-waits, holding the GIL and a core, for the others.  The table reports
the slowdown actually achieved next to each detection rate.

``--ab`` checks the interleaved A/B instead (:mod:`loaderbench.selfcheck.ab_jobs`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loaderbench import data, stats
from loaderbench.config import LoaderConfig
from loaderbench.engine.harness import measure
from loaderbench.engine.plan import Plan
from loaderbench.errors import LoaderbenchError, UsageError
from loaderbench.gate.job import Gate
from loaderbench.gate.model import resolution, run_noise
from loaderbench.gate.priors import load_priors
from loaderbench.gate.thresholds import parse_thresholds
from loaderbench.measurement import Measurement
from loaderbench.metrics import METRICS
from loaderbench.report.table import Column, text_table
from loaderbench.selfcheck import ab_jobs as selfcheck_ab
from loaderbench.selfcheck.common import (
    DEFAULT_CASES,
    case_id,
    fraction_list,
    geomean,
    load_lines,
    load_summary,
    log,
    parse_cases,
)
from loaderbench.selfcheck.injector import slowed
from loaderbench.store import environment
from loaderbench.store.baseline import SPIN_CALIBRATION, BaselineStore
from loaderbench.store.fingerprint import Fingerprint, current
from loaderbench.workloads.calibration import calibrated, spin_loops_per_s, use_calibration
from loaderbench.workloads.recipes import Workload, load_scenarios

_PLAN = Plan()


# --- one session (runs in its own process) -----------------------------------------------


def _session(job: dict[str, Any]) -> dict[str, Any]:
    workloads = load_scenarios(job["scenarios"])
    cases = parse_cases(job["cases"], workloads)
    plan = Plan(rounds=job["rounds"], round_s=job["round_s"])
    store = BaselineStore(job["dir"])
    fingerprint = Fingerprint.from_dict(job["fingerprint"])
    env = environment.current()
    load = os.getloadavg()[0]
    doc = store.load(fingerprint)
    loops = doc.calibration(SPIN_CALIBRATION) if doc is not None else None
    if loops is not None:  # as the plugin does: every session of a baseline, and every comparison, share one
        use_calibration(loops)
    if job["mode"] == "record":
        ms = [measure(w, c, plan=plan) for _ in range(job["repeats"]) for w, c in cases]
        calibration = {SPIN_CALIBRATION: spin_loops_per_s()} if calibrated() else {}
        store.record(fingerprint, ms, append=True, environment=env, calibration=calibration)
        return {"recorded": len(ms), "load": [load, os.getloadavg()[0]]}
    thresholds = parse_thresholds(job["threshold"], option="--threshold")
    priors = load_priors(Path(job["priors"])) if job["priors"] else None
    assert doc is not None
    slowdown = float(job["slowdown"])
    stores = [(int(k), BaselineStore(d)) for k, d in job["snapshots"]]
    results = []
    for workload, config in cases:
        entry = doc.cases[case_id(workload, config)]
        base_sps = math.exp(stats.median([math.log(stats.median(r.rounds["samples_per_s"])) for r in entry.runs]))
        target = slowed(workload, config, slowdown, base_sps)
        t0 = time.perf_counter()
        first = measure(target, config, plan=plan)
        first_s = time.perf_counter() - t0
        # the same first measurement is judged against every baseline size; each gate takes its own extras
        for sessions, snapshot in stores:
            gate = Gate(
                snapshot,
                fingerprint,
                thresholds=thresholds,
                max_extra_measurements=job["max_extra"],
                environment=env,
                priors=priors,
            )
            times: list[float] = [first_s]

            def timed(
                target: Workload = target, config: LoaderConfig = config, times: list[float] = times
            ) -> Measurement:
                t0 = time.perf_counter()
                m = measure(target, config, plan=plan)
                times.append(time.perf_counter() - t0)
                return m

            t0 = time.perf_counter()

            def confirm(ids: Sequence[str], cid: str = first.case_id, again: Any = timed) -> dict[str, Measurement]:
                return {cid: again()}

            gate.check(first)
            gate.finalize(confirm=confirm)
            verdicts = list(gate.verdicts)
            gate_s = time.perf_counter() - t0 - sum(times[1:])
            results.append(
                {
                    "case": first.case_id,
                    "slowdown": slowdown,
                    "baseline_sessions": sessions,
                    "verdicts": [v.as_dict() for v in verdicts],
                    "measure_s": times,
                    "gate_s": gate_s,
                }
            )
    return {"results": results, "load": [load, os.getloadavg()[0]]}


def _spawn(job: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "loaderbench.tools.selfcheck", "--session", json.dumps(job)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise LoaderbenchError(f"a self-check session failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


# --- the driver ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loaderbench.tools.selfcheck",
        description="A/A false-alarm and injected-slowdown power check of the loaderbench regression gate. "
        "Every session runs in a fresh process.",
    )
    add = p.add_argument
    here = Path.cwd()
    add("--scenarios", default=str(data.local_or_packaged(here, data.WORKLOADS)), help="scenario file")
    add("--cases", default=DEFAULT_CASES, help="WORKLOAD:CONFIG_ID list (default: %(default)s)")
    add("--reruns", type=int, default=10, help="A/A and power reruns, a session each (default: %(default)s)")
    add("--slowdowns", default="10,20", help="injected slowdowns in %% (default: %(default)s)")
    add(
        "--baseline-sessions",
        default="3",
        help="processes recording the baseline; a list (1,3,5) judges every rerun against the baseline as it "
        "stood after each of those sessions (default: %(default)s)",
    )
    add("--baseline-repeats", type=int, default=1, help="measurements per case and session (default: %(default)s)")
    add("--rounds", type=int, default=_PLAN.rounds, help="rounds per measurement (default: %(default)s)")
    add("--round-seconds", type=float, default=_PLAN.round_s, help="seconds per round (default: %(default)s)")
    add("--threshold", default="10%", help="gate thresholds, as --loader-threshold (default: %(default)s)")
    add("--max-extra", type=int, default=3, help="extra measurements the gate may take (default: %(default)s)")
    add("--priors", default=str(data.local_or_packaged(here, data.NOISE)), help="noise priors; '' for none")
    add("--seed", type=int, default=0, help="seed for the order of A/A and power sessions (default: %(default)s)")
    add("--json", dest="json_path", default=None, help="also write the figures as JSON here (default: none)")
    add("--keep", default=None, help="record the baseline into this directory and keep it (default: a temp dir)")
    selfcheck_ab.add_arguments(p)
    p.add_argument("--session", default=None, help=argparse.SUPPRESS)
    return p


def session_counts(text: str) -> list[int]:
    """``--baseline-sessions``: ``3`` or ``1,3,5`` -> sorted distinct counts, each at least 1."""
    try:
        counts = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        counts = []
    if not counts or counts[0] < 1:
        raise UsageError(f"--baseline-sessions={text!r}: not a list of session counts >= 1. Write e.g. 3 or 1,3,5.")
    return counts


def run(args: argparse.Namespace) -> dict[str, Any]:
    workloads = load_scenarios(args.scenarios)
    cases = parse_cases(args.cases, workloads)
    parse_thresholds(args.threshold, option="--threshold")
    slowdowns = fraction_list(args.slowdowns)
    counts = session_counts(str(args.baseline_sessions))
    for name in ("reruns", "baseline_repeats", "rounds"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')}={getattr(args, name)}: must be at least 1.")
    tmp = tempfile.TemporaryDirectory(prefix="loaderbench-selfcheck-") if args.keep is None else None
    root = Path(args.keep or (tmp.name if tmp else ""))
    directory = str(root / "recording")
    snapshots = [(k, str(root / f"sessions-{k}")) for k in counts]
    fingerprint = current()
    job = {
        "scenarios": str(Path(args.scenarios).resolve()),
        "cases": args.cases,
        "rounds": args.rounds,
        "round_s": args.round_seconds,
        "dir": directory,
        "fingerprint": fingerprint.as_dict(),
        "threshold": args.threshold,
        "max_extra": args.max_extra,
        "priors": args.priors,
        "snapshots": snapshots,
    }
    started = time.perf_counter()
    try:
        loads: list[float] = []
        for i in range(counts[-1]):
            log(f"recording baseline session {i + 1}/{counts[-1]}")
            loads += _spawn({**job, "mode": "record", "repeats": args.baseline_repeats})["load"]
            for k, snapshot in snapshots:
                if k == i + 1:  # the baseline as it stands after k sessions
                    shutil.copytree(directory, snapshot, dirs_exist_ok=True)
        reruns = []
        order = random.Random(args.seed)
        for i in range(args.reruns):
            variants = [0.0, *slowdowns]
            order.shuffle(variants)
            for slowdown in variants:
                log(f"rerun {i + 1}/{args.reruns}: {'A/A' if slowdown == 0 else f'{slowdown:.0%} slower'}")
                out = _spawn({**job, "mode": "compare", "slowdown": slowdown})
                reruns.extend(out["results"])
                loads += out["load"]
                for r in out["results"]:
                    _log_result(r)
        docs = {k: BaselineStore(d).load(fingerprint) for k, d in snapshots}
        figures = _figures({k: doc.cases for k, doc in docs.items() if doc is not None}, cases, reruns, slowdowns, args)
        figures["load_average"] = load_summary(loads)
        figures["sessions"] = reruns  # every verdict of every session, for a closer look
    finally:
        if tmp is not None:
            tmp.cleanup()
    figures["wall_s"] = time.perf_counter() - started
    return figures


def _figures(
    entries: dict[int, Any],
    cases: Sequence[tuple[Workload, LoaderConfig]],
    reruns: list[dict[str, Any]],
    slowdowns: list[float],
    args: argparse.Namespace,
) -> dict[str, Any]:
    metric = METRICS["samples_per_s"]
    threshold = parse_thresholds(args.threshold, option="--threshold")
    priors = load_priors(Path(args.priors)) if args.priors else None
    out: dict[str, Any] = {"cases": [], "settings": vars(args)}
    for (workload, config), sessions in ((c, k) for k in sorted(entries) for c in cases):
        cid = case_id(workload, config)
        runs = entries[sessions][cid].runs
        riqr = stats.median([stats.relative_iqr(r.rounds["samples_per_s"]) for r in runs])
        prior = priors.get(workload.name, metric.name) if priors is not None else None
        sigma = run_noise(metric, runs, prior=prior)
        resolves = resolution(metric, runs, prior=prior, other_host=False)
        thr = threshold.get(cid, metric)
        row: dict[str, Any] = {
            "case": cid,
            "baseline_sessions": sessions,
            "relative_iqr": riqr,
            "run_to_run": sigma,
            "resolves": resolves,
        }
        mine = [r for r in reruns if r["case"] == cid and r.get("baseline_sessions", sessions) == sessions]
        aa = [r for r in mine if r["slowdown"] == 0.0]
        row["aa_false"] = sum(any(v["outcome"] == "regressed" for v in r["verdicts"]) for r in aa)
        row["aa_false_metrics"] = sorted({v["metric"] for r in aa for v in _regressed(r)})
        row["aa_runs"] = len(aa)
        first = sum(r["measure_s"][0] for r in aa)
        row["aa_extra_time"] = (sum(sum(r["measure_s"][1:]) + r["gate_s"] for r in aa) / first) if first else math.nan
        aa_ratio = geomean([_sps_ratio(r) for r in aa])
        for s in slowdowns:
            power = [r for r in mine if r["slowdown"] == s]
            detected = sum(any(v["metric"] == "samples_per_s" for v in _regressed(r)) for r in power)
            achieved = aa_ratio / geomean([_sps_ratio(r) for r in power])
            row[f"power_{s:g}"] = {"detected": detected, "runs": len(power), "achieved": achieved}
        row["note"] = (
            f"cannot resolve {thr:.0%}: session-to-session noise {sigma:.1%} over {len(runs)} baseline sessions"
            f"{' and the prior' if prior else ''} lets the gate flag only changes of {resolves:.0%} or more"
            if resolves > thr
            else ""
        )
        out["cases"].append(row)
    return out


def _regressed(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for v in result["verdicts"] if v["outcome"] == "regressed"]


def _sps_ratio(result: dict[str, Any]) -> float:
    for v in result["verdicts"]:
        if v["metric"] == "samples_per_s":
            return float(v["ratio"])
    return math.nan


def render(figures: dict[str, Any], slowdowns: Sequence[float]) -> list[str]:
    sizes = {row.get("baseline_sessions") for row in figures["cases"]}
    head = ["case", *(["sessions"] if len(sizes) > 1 else []), "rel IQR", "run noise", "resolves", "A/A false"]
    head += [f"{s:.0%}: flagged (achieved)" for s in slowdowns]
    head += ["A/A extra time"]
    rows = []
    notes = []
    for row in figures["cases"]:
        cells = [
            row["case"],
            *([str(row["baseline_sessions"])] if len(sizes) > 1 else []),
            f"{row['relative_iqr']:.1%}",
            f"{row['run_to_run']:.1%}",
            f"{row['resolves']:.0%}",
            f"{row['aa_false']}/{row['aa_runs']}",
        ]
        for s in slowdowns:
            p = row[f"power_{s:g}"]
            cells.append(f"{p['detected']}/{p['runs']} ({p['achieved']:.2f}x)")
        cells.append(f"+{row['aa_extra_time']:.0%}")
        rows.append(cells)
        if row["note"]:
            notes.append(f"{row['case']}: {row['note']}")
        if row["aa_false_metrics"]:
            notes.append(f"{row['case']}: A/A false alarms on {', '.join(row['aa_false_metrics'])}")
    lines = text_table([Column(title) for title in head], rows, gap=2)
    lines += [f"note: {n}" for n in notes]
    lines += load_lines(figures.get("load_average"), at="session")
    lines.append(f"total wall time: {figures['wall_s']:.0f} s")
    return lines


def _log_result(r: dict[str, Any]) -> None:
    flagged = ",".join(v["metric"] for v in _regressed(r)) or "-"
    sps = next((v for v in r["verdicts"] if v["metric"] == "samples_per_s"), None)
    change = f"{1 / sps['ratio']:.3f}x slower, {sps['outcome']}" if sps else "n/a"
    log(
        f"  {r['case']} [{r.get('baseline_sessions', '?')} session(s)]"
        f" +{r['slowdown']:.0%}: samples_per_s {change}; regressed: {flagged}; "
        f"{len(r['measure_s'])} measurement(s), {sum(r['measure_s']):.1f} s"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.session is not None:
        print(json.dumps(_session(json.loads(args.session))))
        return 0
    if args.ab:
        return selfcheck_ab.main(args)
    try:
        figures = run(args)
    except LoaderbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    slowdowns = fraction_list(args.slowdowns)
    for line in render(figures, slowdowns):
        print(line)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(figures, indent=2, default=str) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
