"""The stored gate's evidence: per case and metric, how far today is from the baseline, and how noisy.

``evidence(...) -> Evidence`` (:mod:`loaderbench.decision.rules`) feeds the one decision engine
(:mod:`loaderbench.decision`), which decides a whole job at once (Holm's procedure, the common offset,
the control case).  ``compare(...)`` decides one case alone (a family of ``family`` hypotheses) for
tools and tests.

The model (per metric, in log space, so effects are ratios)
-----------------------------------------------------------
The baseline holds runs of the case from ``k`` recording sessions (separate processes:
``--loader-baseline-save``, then ``--loader-baseline-append``); today has ``m`` processes (the pytest
process, plus any fresh process that confirmed a suspected regression).  Runs of one process are
averaged first: a process's offset (CPU calibration, allocator state) persists across its runs, so
they count as one draw.

* ``x`` = log of the slowdown between the geometric mean of today's process means and that of the
  baseline's session means, oriented so that ``x > 0`` is worse.  Once a suspect was measured again in
  fresh processes, ``x`` and ``se`` come from the fresh processes alone (:func:`judged_runs`): the
  session's own measurement raised the suspicion and must itself show a threshold-sized change
  (:func:`confirmed`), but it is not pooled into the estimate, so one far-off measurement taken during a
  neighbour's burst cannot outweigh a fresh process near the baseline (seen: 1.79x slower in session,
  1.12x in the fresh process, pooled 1.43x: a red A/A job).
* ``sigma`` = the case's session-to-session noise: the variance of the baseline's session means
  (``k - 1`` degrees of freedom) pooled with the workload's prior (:mod:`loaderbench.gate.priors`,
  worth the degrees of freedom it was measured with): ``sigma^2 = ((k-1) s^2 + d p^2) / (k-1+d)``;
  never below what the rounds' own spread implies for one run, nor the metric's ``process_noise``, nor,
  for TTFB and the epoch stall, the case's throughput noise.  A workload without a prior of its own
  gets the file's ``[default]`` prior at a weight of a few degrees of freedom, so the user's own
  sessions decide as soon as there are a few.  On a host the baseline was not recorded on, the prior's
  between-host noise is added in quadrature.  Without any prior, fewer than ``min_sessions`` sessions
  cannot fail a run.
* ``se^2 = sigma^2 (1/k + 1/m) + w^2 / m``, where ``w`` is the standard error of today's run medians
  implied by their own rounds: an unstable run today (rounds far noisier than the baseline's) widens
  its own noise, so it is never enough for ``regressed`` on its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from scipy import stats as sps

from loaderbench import stats
from loaderbench.decision.job import Decision, decide_job
from loaderbench.decision.rules import Evidence, holds_in_each, quantile
from loaderbench.decision.verdict import Verdict, verdict_of
from loaderbench.gate.priors import Prior
from loaderbench.gate.verdict import DEFAULT_SETTINGS, Outcome, Settings
from loaderbench.measurement import Measurement, sessions
from loaderbench.metrics import METRICS, Metric

__all__ = [
    "DEFAULT_SETTINGS",
    "Noise",
    "Outcome",
    "Settings",
    "Verdict",
    "compare",
    "critical_values",
    "evidence",
    "noise",
    "process_values",
    "resolution",
    "run_noise",
    "session_values",
    "standard_error",
    "within_se",
]


def _log_values(metric: Metric, runs: Sequence[Measurement]) -> list[float]:
    return [math.log(metric.run_value(r)) for r in runs]


def within_se(metric: Metric, runs: Sequence[Measurement]) -> float:
    """Standard error of one run's median implied by its rounds' spread (log space; 0 for one-offs)."""
    out = []
    for r in runs:
        rounds = [v for v in metric.run_rounds(r) if v > 0]
        if len(rounds) >= 2:
            logs = [math.log(v) for v in rounds]
            q1, q3 = stats.quartiles(logs)
            out.append(1.2533 * (q3 - q1) / 1.349 / math.sqrt(len(logs)))
    return math.sqrt(sum(v * v for v in out) / len(out)) if out else 0.0


def session_values(metric: Metric, baseline: Sequence[Measurement]) -> list[float]:
    """One log value per recording session (the mean of its runs); untagged runs count as sessions of their own."""
    return [sum(math.log(metric.run_value(r)) for r in g) / len(g) for g in sessions(baseline).values()]


@dataclass(frozen=True, slots=True)
class Noise:
    """A case's noise against its baseline, for one metric.

    ``sigma`` is the session-to-session standard deviation of log values, pooled from the
    baseline's own sessions and the workload's prior; ``dof`` its degrees of freedom (the
    prior counts as its own); ``se`` the standard error of today's session against the
    baseline's mean; ``other_host`` whether the prior's between-host noise was added.
    """

    sigma: float
    dof: float
    se: float
    sessions: int
    other_host: bool = False


def noise(
    metric: Metric, baseline: Sequence[Measurement], *, prior: Prior | None = None, other_host: bool = False
) -> Noise:
    """The case's noise (see the module docstring); ``prior`` is the workload's between-process noise."""
    sigma, dof = _pooled(metric, baseline, prior)
    other = METRICS.get(metric.noise_from or "")
    if other is not None and other.present(baseline):
        sigma = max(sigma, _pooled(other, baseline, prior)[0])
    if other_host and prior is not None and prior.between_hosts > 0:
        sigma = math.sqrt(sigma**2 + prior.between_hosts**2)
    k = len(session_values(metric, baseline))
    return Noise(sigma, dof, sigma * math.sqrt(1 / k + 1), k, other_host and prior is not None)


def _pooled(metric: Metric, baseline: Sequence[Measurement], prior: Prior | None) -> tuple[float, float]:
    values = session_values(metric, baseline)
    k = len(values)
    observed, df = 0.0, max(0, k - 1)
    if k >= 2:
        mean = sum(values) / k
        observed = sum((v - mean) ** 2 for v in values) / df
    if prior is not None:
        p = max(prior.sigma, metric.process_noise)
        sigma = math.sqrt((df * observed + prior.dof * p * p) / (df + prior.dof))
        dof = df + prior.dof
    elif k >= 2:
        # median-unbiased: with few degrees of freedom the plain estimate is too small more often than not
        sigma, dof = math.sqrt(observed * df / float(sps.chi2.ppf(0.5, df))), float(df)
    else:
        sigma, dof = 0.0, 0.0
    return max(sigma, within_se(metric, baseline), metric.process_noise), dof


def run_noise(metric: Metric, baseline: Sequence[Measurement], *, prior: Prior | None = None) -> float:
    """The case's session-to-session noise ``sigma`` (log space)."""
    return noise(metric, baseline, prior=prior).sigma


def standard_error(metric: Metric, baseline: Sequence[Measurement], *, prior: Prior | None = None) -> float:
    """``se`` of today's session against this baseline (log space)."""
    return noise(metric, baseline, prior=prior).se


def critical_values(settings: Settings, dof: float, *, family: int = 1) -> tuple[float, float]:
    """The significance and power multipliers for a noise known with ``dof`` degrees of freedom, when the job
    judges ``family`` hypotheses (the significance level is the job's, Bonferroni-split: what the last of
    Holm's steps needs).  With few degrees of freedom Student's t is far above the normal, so a short
    baseline without a prior flags only large changes instead of raising false alarms."""
    zs = quantile(settings.job_alpha / max(1, family), dof if dof >= 1 else math.inf)
    zp = quantile(float(sps.norm.sf(settings.z_power)), dof if dof >= 1 else math.inf)
    return zs, zp


def gates(settings: Settings, n: Noise) -> bool:
    """Whether the noise is known well enough to fail a run: ``min_sessions - 1`` degrees of freedom."""
    return n.dof >= settings.min_sessions - 1


def resolution(
    metric: Metric,
    baseline: Sequence[Measurement],
    settings: Settings = DEFAULT_SETTINGS,
    *,
    prior: Prior | None = None,
    other_host: bool = False,
    family: int = 1,
) -> float:
    """The smallest change (as a fraction) that this baseline's noise lets the gate flag, in a job of
    ``family`` hypotheses, from one process today (inf: unknown noise)."""
    n = noise(metric, baseline, prior=prior, other_host=other_host)
    if not gates(settings, n):
        return math.inf
    zs, zp = critical_values(settings, n.dof, family=family)
    return stats.expm1((zs + zp) * n.se)


def sessions_to_resolve(
    metric: Metric,
    baseline: Sequence[Measurement],
    threshold: float,
    settings: Settings = DEFAULT_SETTINGS,
    *,
    prior: Prior | None = None,
    family: int = 1,
    most: int = 50,
) -> int | None:
    """How many recording sessions in all this case would need for :func:`resolution` to reach ``threshold``,
    if its noise stays what it is now (``sigma``; each session adds a degree of freedom and shrinks the
    baseline mean's share of ``se``); None when even ``most`` would not (today's own process noise alone is
    too large: only the A/B or a larger threshold can help)."""
    n = noise(metric, baseline, prior=prior)
    for total in range(max(n.sessions, 1), most + 1):
        dof = n.dof + (total - n.sessions)
        if dof < settings.min_sessions - 1:
            continue
        zs, zp = critical_values(settings, dof, family=family)
        if stats.expm1((zs + zp) * n.sigma * math.sqrt(1 / total + 1)) <= threshold:
            return total
    return None


def process_values(metric: Metric, runs: Sequence[Measurement]) -> list[list[float]]:
    """Today's log values grouped by process (session tag), in the order the processes first appear."""
    groups: dict[str, list[float]] = {}
    for i, r in enumerate(runs):
        groups.setdefault(r.session or f"untagged-{i}", []).append(math.log(metric.run_value(r)))
    return list(groups.values())


def judged_runs(metric: Metric, current: Sequence[Measurement]) -> list[Measurement]:
    """The runs today's estimate is taken from: every run when one process measured the case, else the
    fresh processes' alone (the first process, the session's, only raised the suspicion)."""
    first = current[0].session if current else None
    fresh = [r for r in current if r.session != first] if first else list(current[1:])
    return fresh if fresh and len(process_values(metric, current)) > 1 else list(current)


def evidence(
    case_id: str,
    metric: Metric,
    baseline: Sequence[Measurement],
    current: Sequence[Measurement],
    *,
    threshold: float,
    settings: Settings = DEFAULT_SETTINGS,
    prior: Prior | None = None,
    other_host: bool = False,
) -> Evidence:
    """One case and metric against its baseline (see the module docstring)."""
    base_logs = session_values(metric, baseline)
    k = len(base_logs)
    current = judged_runs(metric, current)
    procs = [sum(g) / len(g) for g in process_values(metric, current)]
    m = len(procs)
    base, cur = math.exp(sum(base_logs) / k), math.exp(sum(procs) / m)
    x = math.log(metric.slowdown(base, cur))
    n = noise(metric, baseline, prior=prior, other_host=other_host)
    today = within_se(metric, current)
    se = math.sqrt(n.sigma**2 * (1 / k + 1 / m) + today**2 / m)
    known = gates(settings, n)
    source = f"{k} baseline session(s){' and the prior' if prior is not None else ''}"
    if n.other_host:
        source += "; another host: between-host noise added"
    note = (
        source
        if known
        else (
            f"the baseline has {k} recording session(s) and needs {settings.min_sessions} to know this case's noise: "
            "add sessions with --loader-baseline-save --loader-baseline-append"
        )
    )
    return Evidence(
        case_id=case_id,
        metric=metric.name,
        x=x,
        se=se,
        dof=n.dof if n.dof >= 1 else math.inf,
        threshold=threshold,
        baseline=base,
        current=cur,
        below_floor=metric.min_abs > 0 and abs(cur - base) < metric.min_abs,
        gated=known,
        unit=metric.name,
        note=note,
    )


#: The share of the machine other processes may take during a deciding measurement, beyond what they took
#: while the baseline was recorded, before a regression is put down to the load rather than the code.
BUSY_EXCESS = 0.25


def load_during(baseline: Sequence[Measurement], deciding: Sequence[Measurement]) -> str | None:
    """Why the load may explain a regression (None when it cannot): the most that other processes took of
    the machine during a deciding measurement (``extra['others_busy']``, the case's own timed rounds)
    against the recording's median, when it is :data:`BUSY_EXCESS` or more above it."""
    today = [b for r in deciding if math.isfinite(b := float(r.extra.get("others_busy", math.nan)))]
    recorded = [b for r in baseline if math.isfinite(b := float(r.extra.get("others_busy", math.nan)))]
    if not today:
        return None
    then = sorted(recorded)[len(recorded) // 2] if recorded else 0.0
    if max(today) - then < BUSY_EXCESS:
        return None
    return (
        f"other processes used {max(today):.0%} of the machine's CPU time while it was measured ({then:.0%} at "
        "recording): the load may explain the change; rerun on a quiet machine to decide"
    )


def process_changes(metric: Metric, e: Evidence, current: Sequence[Measurement]) -> list[float]:
    """Each of today's processes' own change beyond the offset the job took (``e`` is the offset-adjusted
    evidence), oriented like ``e.x``, in the order the processes ran."""
    offset = math.log(metric.slowdown(e.baseline, e.current)) - e.x
    own = (math.log(metric.slowdown(e.baseline, math.exp(sum(g) / len(g)))) for g in process_values(metric, current))
    return [x - offset for x in own]


def confirmed(
    metric: Metric, e: Evidence, current: Sequence[Measurement], settings: Settings = DEFAULT_SETTINGS
) -> bool:
    """Whether every process of today, on its own, shows a threshold-sized change beyond the offset the job
    took (``e`` is the offset-adjusted evidence): one disturbed process cannot carry a regression."""
    return holds_in_each(e, process_changes(metric, e, current), settings.levels)


def compare(
    case_id: str,
    metric: Metric,
    baseline: Sequence[Measurement],
    current: Sequence[Measurement],
    *,
    threshold: float,
    settings: Settings = DEFAULT_SETTINGS,
    prior: Prior | None = None,
    other_host: bool = False,
    family: int = 1,
) -> Verdict:
    """Decide one metric of one case alone, as one hypothesis of a job of ``family`` (no common offset:
    one case cannot tell it); a regression seen in fewer than ``1 + settings.confirm`` processes is
    ``inconclusive`` with ``needs_more`` (it awaits a fresh process)."""
    e = evidence(
        case_id, metric, baseline, current, threshold=threshold, settings=settings, prior=prior, other_host=other_host
    )
    job = decide_job([e], levels=settings.levels, family=family)
    d = job.decisions[0]
    return stored_verdict(d, metric, baseline, current, settings=settings)


def stored_verdict(
    d: Decision, metric: Metric, baseline: Sequence[Measurement], current: Sequence[Measurement], *, settings: Settings
) -> Verdict:
    """The stored gate's verdict of decision ``d`` (a :class:`~loaderbench.decision.job.Decision`), with the
    confirmation rule applied."""
    e = d.evidence
    processes = len(process_values(metric, current)) if current else 0
    whole = math.log(metric.slowdown(e.baseline, e.current)) if e.baseline > 0 and e.current > 0 else 0.0
    v = verdict_of(
        d,
        baseline=e.baseline,
        current=e.current,
        offset=whole - e.x,
        baseline_sessions=len(session_values(metric, baseline)) if baseline else 0,
        current_runs=processes,
        extra_measurements=max(0, len(current) - 1),
    )
    if v.outcome == "regressed":
        if processes < 1 + settings.confirm:
            return replace(
                v,
                outcome="inconclusive",
                needs_more=True,
                reason="suspected: awaiting confirmation in a fresh process",
            )
        if not confirmed(metric, e, current, settings):
            return replace(
                v,
                outcome="inconclusive",
                reason=f"not confirmed: only some of the {processes} processes show a threshold-sized change",
            )
        loaded = load_during(baseline, judged_runs(metric, current))
        if loaded is not None:
            return replace(v, outcome="inconclusive", reason=loaded)
    elif processes > 1 and v.outcome != "improved" and e.gated:
        changes = process_changes(metric, e, current)
        if holds_in_each(e, changes[:1], settings.levels):  # the session's measurement alone looked like one
            first = metric.describe_change(math.exp(changes[0]))
            fresh = ", ".join(metric.describe_change(math.exp(c)) for c in changes[1:])
            return replace(
                v,
                outcome="inconclusive",
                needs_more=False,
                reason=(
                    f"not confirmed: {first} in this session's measurement, {fresh} in the fresh process(es), which "
                    "alone do not show a threshold-sized regression; the session's measurement may have been "
                    "disturbed (another process's load?): rerun on a quiet machine to be sure"
                ),
            )
    return v
