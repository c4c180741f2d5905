"""The A/B's self-check: ``python -m loaderbench.tools.selfcheck --ab``.

It runs whole interleaved A/B jobs (:func:`loaderbench.ab.schedule.run_ab`, the engine of
``pytest --benchmark --loader-ab=BASE``) between this interpreter (the base) and a head that is a
wrapper around the same interpreter (:mod:`loaderbench.selfcheck.slow_interpreter`):

* **A/A jobs**: the wrapper changes nothing, so any ``regressed`` verdict is a false alarm;
* **power jobs**: the wrapper makes every DataLoader fetch ``1 + s`` times as long (``--slowdowns``),
  from outside the code under test; is ``samples_per_s`` flagged?

``--reruns`` jobs of each kind, in a shuffled order, each with the A/B's own schedule
(``--ab-pairs``, ``--ab-budget``) and thresholds (``--threshold``).  A slowdown may name the
workloads it is injected into (``5@io,10@cpu+transfer``): its jobs then run only those cases, which
keeps the check short.  The table gives, per case, the A/A false alarms, how often the A/A ended
``unchanged`` on throughput (the rest is ``inconclusive``), the detections and the slowdown actually
achieved (the geometric mean head/base throughput ratio of the A/A jobs over that of the power jobs),
the pairs each decision took, and the jobs' wall times.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loaderbench import stats
from loaderbench.ab.child import select_cases
from loaderbench.ab.errors import ABError
from loaderbench.ab.records import ChildSpec
from loaderbench.ab.schedule import Arm, Schedule, Step, run_ab
from loaderbench.engine.plan import Plan
from loaderbench.errors import LoaderbenchError, UsageError
from loaderbench.formatting import fmt_time
from loaderbench.gate.priors import load_priors
from loaderbench.gate.thresholds import parse_thresholds
from loaderbench.report.table import Column, text_table
from loaderbench.selfcheck.common import (
    case_id,
    fraction_list,
    geomean,
    load_lines,
    load_summary,
    locked,
    log,
    parse_cases,
    upper_95,
)
from loaderbench.selfcheck.slow_interpreter import write_slowed_interpreter
from loaderbench.workloads.recipes import load_scenarios

_SCHEDULE = Schedule()
#: Tiers tried, in order, for one that holds every requested case.
_TIERS = ("smoke", "standard", "full")


@dataclass(frozen=True, slots=True)
class Variant:
    """One kind of job: the injected slowdown (0: A/A) and the case ids it runs."""

    slowdown: float
    cases: tuple[str, ...]

    @property
    def label(self) -> str:
        return "A/A" if self.slowdown == 0 else f"{self.slowdown:.0%} slower"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--ab`` options of the self-check's parser."""
    add = parser.add_argument
    add("--ab", action="store_true", help="check the interleaved A/B (--loader-ab) instead of the stored gate")
    add("--lock", default=None, help="A/B: flock this file around every job (other measurements take it too)")
    add("--ab-pairs", type=int, default=_SCHEDULE.max_pairs, help="A/B: pairs per job at most (default: %(default)s)")
    add(
        "--ab-budget",
        type=float,
        default=_SCHEDULE.budget_s,
        help="A/B: seconds per job at most (default: %(default)s)",
    )


def parse_variants(text: str, ids: dict[str, str]) -> list[Variant]:
    """``--slowdowns`` for the A/B: ``5,10`` (every case) or ``5@io,10@cpu+transfer`` (those workloads'
    cases); ``ids`` maps each case id to its workload.  The A/A variant (every case) comes first."""
    out = [Variant(0.0, tuple(ids))]
    for item in (s.strip() for s in text.split(",") if s.strip()):
        amount, at, names = item.partition("@")
        (slowdown,) = fraction_list(amount, option="--slowdowns")
        chosen = tuple(c for c, w in ids.items() if not at or w in names.split("+"))
        if not chosen:
            known = ", ".join(sorted(set(ids.values())))
            raise UsageError(
                f"--slowdowns={text!r}: {item!r} names no workload of --cases ({known}). "
                "Write e.g. 5@io,10@cpu+transfer."
            )
        out.append(Variant(slowdown, chosen))
    if len(out) == 1:
        raise UsageError(f"--slowdowns={text!r}: no slowdown. Write e.g. 5,10 or 5@io,10@cpu+transfer.")
    return out


def _spec(args: argparse.Namespace, ids: Sequence[str]) -> ChildSpec:
    """The children's spec, with the first tier that holds every case."""
    for tier in _TIERS:
        spec = ChildSpec(
            scenarios=str(Path(args.scenarios).resolve()),
            tier=tier,
            device="cpu",
            rounds=args.rounds,
            round_s=args.round_seconds,
            batch_timeout_s=Plan().batch_timeout_s,
        )
        known = {c.id for c in select_cases(spec)}
        if set(ids) <= known:
            return spec
    missing = sorted(set(ids) - known)
    raise UsageError(f"--cases={args.cases!r}: {', '.join(missing)} is in no tier ({', '.join(_TIERS)}).")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every job of the A/B self-check; the figures (see the module docstring)."""
    workloads = load_scenarios(args.scenarios)
    ids = {case_id(w, c): w.name for w, c in parse_cases(args.cases, workloads)}
    variants = parse_variants(args.slowdowns, ids)
    thresholds = parse_thresholds(args.threshold, option="--threshold")
    for name in ("reruns", "ab_pairs", "rounds"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')}={getattr(args, name)}: must be at least 1.")
    if not args.ab_budget > 0:
        raise UsageError(f"--ab-budget={args.ab_budget}: must be positive seconds, e.g. 900.")
    spec = _spec(args, list(ids))
    # the stored priors, as `loaderbench ab` and `--loader-ab` pool them: without them every look would
    # judge the pairs alone, with 2 dof at the first look, and measure a weaker A/B than users get
    priors = load_priors(Path(args.priors)) if args.priors else None
    schedule = Schedule(max_pairs=args.ab_pairs, budget_s=args.ab_budget, thresholds=thresholds, priors=priors)
    base = Arm("base", sys.executable, dict(os.environ), f"the base interpreter {sys.executable}")
    jobs: list[dict[str, Any]] = []
    order = random.Random(args.seed)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="loaderbench-selfcheck-ab-") as tmp:
        heads = {}
        for v in variants:
            wrapper = write_slowed_interpreter(Path(tmp) / f"slow-{v.slowdown:g}", v.slowdown)
            heads[v.slowdown] = Arm("head", str(wrapper), dict(os.environ), f"the head ({v.label}) {wrapper}")
        for i in range(args.reruns):
            shuffled = list(variants)
            order.shuffle(shuffled)
            for v in shuffled:
                log(f"job {i + 1}/{args.reruns}: {v.label}, {len(v.cases)} case(s)", tool="selfcheck --ab")
                with locked(args.lock):
                    jobs.append(_job(spec, v, {"base": base, "head": heads[v.slowdown]}, schedule))
                if args.json_path:  # every finished job is kept, should the check be cut short
                    partial = {"partial": True, "settings": vars(args), "jobs": jobs}
                    Path(args.json_path).write_text(json.dumps(partial, default=str) + "\n", encoding="utf-8")
    figures = figures_of(jobs, variants)
    figures["settings"] = vars(args)
    figures["jobs"] = jobs
    figures["wall_s"] = time.perf_counter() - started
    return figures


def _job(spec: ChildSpec, variant: Variant, arms: dict[str, Arm], schedule: Schedule) -> dict[str, Any]:
    def progress(step: Step) -> None:
        if step.position == 0:
            log(f"  block {step.block}: {step.cases} case(s) left, {fmt_time(step.elapsed_s)}", tool="selfcheck --ab")

    load = os.getloadavg()[0]
    spec = dataclasses.replace(spec, cases=variant.cases)
    result = run_ab(spec, arms, schedule, cwd=Path.cwd(), progress=progress)
    job = {
        "slowdown": variant.slowdown,
        "wall_s": result.elapsed_s,
        "blocks": result.blocks,
        "stopped": result.stopped,
        "verdicts": [v.as_dict() for v in result.verdicts],
        "failures": [f.message for f in result.failures],
        "load": [load, os.getloadavg()[0]],
    }
    for v in result.verdicts:
        if v.metric == "samples_per_s" or v.outcome == "regressed":
            log(f"  {v.message()}", tool="selfcheck --ab")
    return job


def _sps(job: dict[str, Any], case: str) -> dict[str, Any] | None:
    return next((v for v in job["verdicts"] if v["case_id"] == case and v["metric"] == "samples_per_s"), None)


def figures_of(jobs: list[dict[str, Any]], variants: Sequence[Variant]) -> dict[str, Any]:
    """Per case: A/A false alarms and outcomes, detections per slowdown, achieved slowdowns, pairs."""
    rows = []
    for case in variants[0].cases:
        aa = [j for j in jobs if j["slowdown"] == 0]
        aa_sps = [v for v in (_sps(j, case) for j in aa) if v is not None]
        false = [v["metric"] for j in aa for v in j["verdicts"] if v["case_id"] == case and v["outcome"] == "regressed"]
        row: dict[str, Any] = {
            "case": case,
            "aa_jobs": len(aa),
            "aa_false": sum(
                any(v["case_id"] == case and v["outcome"] == "regressed" for v in j["verdicts"]) for j in aa
            ),
            "aa_false_metrics": sorted(set(false)),
            "aa_unchanged": sum(v["outcome"] == "unchanged" for v in aa_sps),
            "aa_pairs": stats.median([v["pairs"] for v in aa_sps]) if aa_sps else None,
            "aa_resolves": stats.median([v["resolves"] or float("inf") for v in aa_sps]) if aa_sps else None,
        }
        aa_ratio = geomean([v["ratio"] for v in aa_sps if v["ratio"]])
        for variant in variants[1:]:
            if case not in variant.cases:
                continue
            power = [v for v in (_sps(j, case) for j in jobs if j["slowdown"] == variant.slowdown) if v is not None]
            row[f"power_{variant.slowdown:g}"] = {
                "detected": sum(v["outcome"] == "regressed" for v in power),
                "runs": len(power),
                "achieved": aa_ratio / geomean([v["ratio"] for v in power if v["ratio"]]),
                "pairs": stats.median([v["pairs"] for v in power]) if power else None,
            }
        rows.append(row)
    walls: dict[str, Any] = {}
    for variant in variants:
        times = [j["wall_s"] for j in jobs if j["slowdown"] == variant.slowdown]
        if times:
            walls[variant.label] = {"median": stats.median(times), "max": max(times), "jobs": len(times)}
    load = load_summary([x for j in jobs for x in j["load"]])
    aa_jobs = [j for j in jobs if j["slowdown"] == 0]
    red = sum(any(v["outcome"] == "regressed" for v in j["verdicts"]) for j in aa_jobs)
    per_job = {"red": red, "jobs": len(aa_jobs), "upper_95": upper_95(red, len(aa_jobs))}
    return {"cases": rows, "wall_per_job_s": walls, "load_average": load, "aa_per_job": per_job}


def render(figures: dict[str, Any], variants: Sequence[Variant]) -> list[str]:
    """The self-check's table and its notes."""
    head = ["case", "A/A false", "A/A unchanged", "A/A pairs", "A/A resolves"]
    head += [f"{v.label}: flagged (achieved, pairs)" for v in variants[1:]]
    rows = []
    notes = []
    for row in figures["cases"]:
        cells = [
            row["case"],
            f"{row['aa_false']}/{row['aa_jobs']}",
            f"{row['aa_unchanged']}/{row['aa_jobs']}",
            "-" if row["aa_pairs"] is None else f"{row['aa_pairs']:g}",
            "-" if row["aa_resolves"] is None else f"{row['aa_resolves']:.1%}",
        ]
        for v in variants[1:]:
            p = row.get(f"power_{v.slowdown:g}")
            cells.append(
                "-" if p is None else f"{p['detected']}/{p['runs']} ({p['achieved']:.3f}x, {p['pairs'] or 0:g})"
            )
        rows.append(cells)
        if row["aa_false_metrics"]:
            notes.append(f"{row['case']}: A/A false alarms on {', '.join(row['aa_false_metrics'])}")
    lines = text_table([Column(title) for title in head], rows, gap=2)
    lines += [f"note: {n}" for n in notes]
    job = figures.get("aa_per_job")
    if job:
        lines.append(
            f"A/A jobs red (any regressed verdict, i.e. exit 1): {job['red']}/{job['jobs']} "
            f"(95% upper bound {job['upper_95']:.1%})"
        )
    for label, w in figures["wall_per_job_s"].items():
        lines.append(f"{label} jobs: wall time median {w['median']:.0f} s, max {w['max']:.0f} s ({w['jobs']} jobs)")
    lines += load_lines(figures.get("load_average"), at="job")
    lines.append(f"total wall time: {figures['wall_s']:.0f} s")
    return lines


def main(args: argparse.Namespace) -> int:
    """Run the A/B self-check from the self-check's parsed arguments; 2 on a usage error."""
    try:
        figures = run(args)
        ids = {c["case"]: "" for c in figures["cases"]}
    except (LoaderbenchError, ABError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    variants = [Variant(0.0, tuple(ids))] + [
        Variant(s, tuple(c["case"] for c in figures["cases"] if f"power_{s:g}" in c))
        for s in sorted({j["slowdown"] for j in figures["jobs"]} - {0.0})
    ]
    for line in render(figures, variants):
        print(line)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(figures, indent=2, default=str) + "\n", encoding="utf-8")
    return 0
