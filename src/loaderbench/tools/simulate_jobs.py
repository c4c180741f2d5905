"""The stored gate's per-job false-red rate and power, simulated from measured noise:
``python -m loaderbench.tools.simulate_jobs OUT`` (``OUT``: a folder :mod:`loaderbench.tools.aa_jobs` wrote).

Twenty real A/A jobs bound a false-red rate only to about 14% (95%); a simulation from the noise those
jobs measured gives the rate per 100 and per 1,000 jobs, and the power at the threshold per case.  From
the jobs' verdicts (``--benchmark-json``, ``extra_info["gate"]``) it measures, per metric and per case:

* ``offset``: the run's common offset per job (the gate's own estimate); its spread over the jobs is the
  between-period drift of the machine (the jobs were spread over hours);
* ``process``: each case's residual (its change beyond the offset) spread over the jobs: a fresh
  process's noise around the case's level, between-period drift of the case itself included;
* the gate's ``se`` for each case (the median over the jobs).

A simulated job then redraws everything that a real job draws afresh: a baseline recorded from
``--sessions`` processes (each case's baseline error, ``process / sqrt(sessions)``), today's common
offset per metric (``offset``), today's process per case (``process``), and for each suspected
regression a confirming fresh process, and decides the job with the gate's own
:func:`loaderbench.decision.job.decide_job` on the gate's ``se``, keeping a regression only when both
processes show a threshold-sized change on their own (as :meth:`loaderbench.gate.job.Gate.finalize`
and :func:`loaderbench.gate.model.confirmed` do).  A red job is one with any
``regressed`` verdict.  Power: the same, with the case's samples/s ``--slowdown`` slower (default: at
the 10% threshold), one case at a time.

What it leaves out: the control case (a simulated machine never moves by more than the measured drift),
the noise scale-up when cases scatter (the ``se`` used is the real jobs' median, scale included), and
any correlation between cases beyond the common offset.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loaderbench.decision.job import EVERY_CASE, decide_job
from loaderbench.decision.rules import Evidence, holds_in_each
from loaderbench.selfcheck.common import upper_95

#: The degrees of freedom a case's noise is known with in the gate (its prior's, plus the sessions').
DOF = 8.0


def _verdicts(out: Path) -> list[list[dict[str, Any]]]:
    jobs = []
    for path in sorted(out.glob("job-*.json")):
        doc = json.loads(path.read_text())
        found = [v for b in doc.get("benchmarks", []) for v in (b.get("extra_info") or {}).get("gate") or []]
        if found:
            jobs.append(found)
    return jobs


def measure(jobs: Sequence[Sequence[dict[str, Any]]]) -> dict[str, Any]:
    """The noise the real jobs show (see the module docstring): per metric the offsets' sd, per case and
    metric the residuals' sd, the gate's median ``se`` and the threshold."""
    offsets: dict[str, list[float]] = {}
    residual: dict[tuple[str, str], list[float]] = {}
    se: dict[tuple[str, str], list[float]] = {}
    threshold: dict[tuple[str, str], float] = {}
    for job in jobs:
        seen: dict[str, float] = {}
        for v in job:
            key = (v["case_id"], v["metric"])
            if v["z"] is None or v["noise"] is None:
                continue
            residual.setdefault(key, []).append(v["z"] * v["noise"])
            se.setdefault(key, []).append(v["noise"])
            threshold[key] = v["threshold"]
            seen[v["metric"]] = v["offset"] or 0.0
        for metric, off in seen.items():
            offsets.setdefault(metric, []).append(off)
    return {
        "jobs": len(jobs),
        "offset_sd": {m: statistics.stdev(v) if len(v) > 1 else 0.0 for m, v in offsets.items()},
        "cases": {
            f"{c}|{m}": {
                "process_sd": statistics.stdev(r) if len(r) > 1 else 0.0,
                "se": statistics.median(se[(c, m)]),
                "threshold": threshold[(c, m)],
            }
            for (c, m), r in residual.items()
        },
    }


def _job(
    noise: dict[str, Any],
    rng: random.Random,
    *,
    sessions: int,
    offset_sigma: dict[str, float],
    inject: tuple[str, float] | None = None,
) -> set[str]:
    """One simulated job; the set of case ids that end ``regressed``."""
    today = {m: rng.gauss(0, sd) for m, sd in noise["offset_sd"].items()}
    draws: dict[str, tuple[float, float]] = {}
    cases = []
    for key, c in noise["cases"].items():
        case, metric = key.split("|")
        sd = c["process_sd"]
        base = rng.gauss(0, sd / math.sqrt(sessions))
        x = today.get(metric, 0.0) - base + rng.gauss(0, sd)
        if inject is not None and inject[0] == case and metric == "samples_per_s":
            x += math.log1p(inject[1])
        draws[key] = (x, today.get(metric, 0.0) - base)
        cases.append((key, case, metric, c))

    def evidence(fresh: dict[str, float]) -> list[Evidence]:
        out = []
        for key, case, metric, c in cases:
            x = draws[key][0]
            se = c["se"]
            if key in fresh:  # a confirmed suspect is estimated from its fresh process alone, as the gate does
                x = fresh[key]
            out.append(Evidence(case, metric, x, se, DOF, c["threshold"], 1.0, math.exp(x), unit=metric))
        return out

    fresh: dict[str, float] = {}
    job = decide_job(evidence(fresh), offset_sigma=offset_sigma)
    suspects = {d.evidence.case_id for d in job.decisions if d.outcome == "regressed"} - {EVERY_CASE}
    if not suspects:
        return {d.evidence.case_id for d in job.decisions if d.outcome == "regressed"}
    for key, case, metric, c in cases:  # one fresh process for the suspects, as the gate does
        if case in suspects:
            extra = draws[key][1] + rng.gauss(0, c["process_sd"])
            if inject is not None and inject[0] == case and metric == "samples_per_s":
                extra += math.log1p(inject[1])
            fresh[key] = extra
    job = decide_job(evidence(fresh), offset_sigma=offset_sigma)
    offset = {o.unit: o.estimate for o in job.offsets}
    red = set()
    for d in job.decisions:
        e = d.evidence
        if d.outcome != "regressed":
            continue
        key = f"{e.case_id}|{e.metric}"
        if key not in fresh:
            red.add(e.case_id)  # the offset hypothesis, or a case that was not a suspect at first
            continue
        own = (draws[key][0], fresh[key])
        if holds_in_each(e, (x - offset.get(e.metric, 0.0) for x in own)):
            red.add(e.case_id)
    return red


def simulate(
    noise: dict[str, Any], *, jobs: int, sessions: int, offset_prior: float, slowdown: float, seed: int
) -> dict[str, Any]:
    """False reds over ``jobs`` A/A jobs, and per case the detections of a ``slowdown`` over ``jobs // 10``."""
    rng = random.Random(seed)
    offset_sigma = {m: offset_prior * math.sqrt(1 + 1 / sessions) for m in noise["offset_sd"]}
    red = 0
    blamed: dict[str, int] = {}
    for _ in range(jobs):
        found = _job(noise, rng, sessions=sessions, offset_sigma=offset_sigma)
        red += bool(found)
        for case in found:
            blamed[case] = blamed.get(case, 0) + 1
    power: dict[str, float] = {}
    trials = max(10, jobs // 10)
    for key in noise["cases"]:
        case, metric = key.split("|")
        if metric != "samples_per_s":
            continue
        hits = sum(
            case in _job(noise, rng, sessions=sessions, offset_sigma=offset_sigma, inject=(case, slowdown))
            for _ in range(trials)
        )
        power[case] = hits / trials
    return {
        "red": red,
        "jobs": jobs,
        "upper_95": upper_95(red, jobs),
        "blamed": dict(sorted(blamed.items(), key=lambda kv: -kv[1])),
        "power": power,
        "power_trials": trials,
    }


def render(noise: dict[str, Any], result: dict[str, Any], slowdown: float) -> list[str]:
    lines = [
        f"measured from {noise['jobs']} real A/A jobs: common offset sd per metric "
        + ", ".join(f"{m} {sd:.1%}" for m, sd in sorted(noise["offset_sd"].items())),
        f"simulated: {result['red']} red of {result['jobs']} A/A jobs = {100 * result['red'] / result['jobs']:.2f} "
        f"per 100 (95% upper bound {result['upper_95']:.2%})",
        "cases in the red jobs: " + (", ".join(f"{c} {n}x" for c, n in result["blamed"].items()) or "none"),
        f"power: samples/s {slowdown:.0%} slower, caught in ({result['power_trials']} simulated jobs per case):",
    ]
    for case, p in sorted(result["power"].items(), key=lambda kv: kv[1]):
        c = noise["cases"][f"{case}|samples_per_s"]
        lines.append(f"  {case}: {p:.0%} (process noise ±{c['process_sd']:.1%}, gate se ±{c['se']:.1%})")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loaderbench.tools.simulate_jobs", description=__doc__.split("\n")[0]
    )
    parser.add_argument("out", help="the folder loaderbench.tools.aa_jobs wrote (its job-*.json)")
    parser.add_argument("--jobs", type=int, default=2000, help="simulated A/A jobs (default 2000)")
    parser.add_argument("--sessions", type=int, default=3, help="baseline recording sessions (default 3)")
    parser.add_argument("--offset-prior", type=float, default=0.03, help="the gate's [offset] prior sd (0.03)")
    parser.add_argument("--slowdown", type=float, default=0.10, help="injected for power (default 0.10)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    jobs = _verdicts(Path(args.out))
    if len(jobs) < 3:
        print(f"error: {args.out}: {len(jobs)} job(s) with verdicts; at least 3 are needed", file=sys.stderr)
        return 2
    noise = measure(jobs)
    result = simulate(
        noise,
        jobs=args.jobs,
        sessions=args.sessions,
        offset_prior=args.offset_prior,
        slowdown=args.slowdown,
        seed=args.seed,
    )
    print("\n".join(render(noise, result, args.slowdown)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
