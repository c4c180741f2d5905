"""The gate's statistical model: per case and metric, is today worse than the baseline?

``compare(...) -> Verdict`` (:mod:`loaderbench.gate.verdict`).

Pure functions over raw measurements; :mod:`loaderbench.gate.runner` holds the
gate's state and its extra measurements.

The statistical model (per metric, in log space, so effects are ratios)
------------------------------------------------------------------------
Each measurement ("run") gives one value per metric: the median of its rounds,
or its one-off value (TTFB, epoch stall, peak memory).  The baseline holds
runs of the case from ``k`` recording sessions (separate processes:
``--loader-baseline-save``, then ``--loader-baseline-append``); today's
session has ``m`` runs (the first measurement plus any extra ones).

* ``x`` = log of the slowdown between the geometric mean of today's run values
  and that of the baseline's session means, oriented so that ``x > 0`` is worse (throughput
  lower; TTFB, stall or memory higher).
* ``sigma`` = the case's session-to-session noise: the variance of the
  baseline's session means (``k - 1`` degrees of freedom, ``k`` = recording
  sessions) pooled with the workload's *prior* (:mod:`loaderbench.gate.priors`:
  the between-process noise measured for the workload, worth the degrees of
  freedom it was measured with), ``sigma^2 = ((k-1) s^2 + d p^2) / (k-1+d)``;
  never below what the rounds' own spread implies for one run, nor the
  metric's ``process_noise``, nor, for TTFB and the epoch stall, the case's
  throughput noise (``noise_from`` in :mod:`loaderbench.metrics`).  So one
  recorded session already gates large regressions, and more sessions move the
  noise towards what the case itself shows.  When today's host is not one the
  baseline was recorded on, the prior's between-host noise is added in
  quadrature.  Without a prior (``prior=None``) the baseline alone decides, and
  fewer than ``min_sessions`` (3) sessions cannot fail a run.  The multipliers
  below are Student's t quantiles for the pooled degrees of freedom.
* ``se = sigma * sqrt(1/k + 1)``.  Today's runs all come from one process, so
  they count as one draw of the session-to-session noise however many there
  are: on this kind of machine a session's offset (CPU calibration, allocator
  state) persists across its measurements, and extra measurements in the same
  process cannot average it away.

With ``T = log(1 + threshold)``, ``z_s`` the significance level and ``z_p``
the power level (defaults 3.09 and 1.28: a false alarm rate of 0.1% per case
and metric, and 90% power to catch a regression of exactly the threshold):

* **regressed**: ``x >= z_s*se`` (significant; for per-round metrics the
  one-sided Mann–Whitney U test on the pooled rounds must also give
  ``p < alpha``, asv's rule), and ``x >= T - z_p*se`` (a regression of the
  threshold's size is what the data show: the estimate is within the power
  margin of the threshold or beyond it), and the change exceeds the metric's
  absolute floor.  ``z_p = 0`` gives asv's strict "ratio above the factor".
  A regression must also survive ``confirm`` (default 1) extra measurement:
  every measurement of the session must be beyond the line on its own, so one
  disturbed measurement cannot fail the run.
* **improved**: the mirror image.  It never fails the run.
* **unchanged**: ``|x| < T - z_p*se``: a threshold-size change in either
  direction is ruled out.
* **inconclusive**: anything else; it never fails the run.  When the rounds
  are what is too noisy (the effect is large enough but the Mann–Whitney test
  is not yet significant), the gate first takes more measurements
  (``remeasure``, at most ``max_extra_measurements``).  When the session-to-
  session noise is what is too large, more rounds in this session cannot help;
  the verdict says which change the case can resolve (``(z_s + z_p) * se``)
  and that more baseline sessions would narrow it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats as sps

from loaderbench import stats
from loaderbench.gate.priors import Prior
from loaderbench.gate.verdict import DEFAULT_SETTINGS, Outcome, Settings, Verdict
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
    "noise",
    "resolution",
    "run_noise",
    "session_values",
    "standard_error",
]


def _log_values(metric: Metric, runs: Sequence[Measurement]) -> list[float]:
    return [math.log(metric.run_value(r)) for r in runs]


def _within(metric: Metric, runs: Sequence[Measurement]) -> float:
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
    return max(sigma, _within(metric, baseline), metric.process_noise), dof


def run_noise(metric: Metric, baseline: Sequence[Measurement], *, prior: Prior | None = None) -> float:
    """The case's session-to-session noise ``sigma`` (log space)."""
    return noise(metric, baseline, prior=prior).sigma


def standard_error(metric: Metric, baseline: Sequence[Measurement], *, prior: Prior | None = None) -> float:
    """``se`` of today's session against this baseline (log space)."""
    return noise(metric, baseline, prior=prior).se


def critical_values(settings: Settings, dof: float) -> tuple[float, float]:
    """The significance and power multipliers for a noise known with ``dof`` degrees of freedom.

    ``z_significance`` and ``z_power`` are normal quantiles; with the noise estimated from few degrees of
    freedom the same error rates need Student's t (with 2, 0.1% needs 22.3 standard errors, not 3.09), so a
    short baseline without a prior flags only large changes instead of raising false alarms.
    """
    if dof < 1 or math.isinf(dof):
        return settings.z_significance, settings.z_power
    zs = float(sps.t.ppf(sps.norm.cdf(settings.z_significance), dof))
    zp = float(sps.t.ppf(sps.norm.cdf(settings.z_power), dof))
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
) -> float:
    """The smallest change (as a fraction) that this baseline's noise lets the gate flag (inf: unknown noise)."""
    n = noise(metric, baseline, prior=prior, other_host=other_host)
    if not gates(settings, n):
        return math.inf
    zs, zp = critical_values(settings, n.dof)
    return stats.expm1((zs + zp) * n.se)


def compare(
    case_id: str,
    metric: Metric,
    baseline: Sequence[Measurement],
    current: Sequence[Measurement],
    *,
    threshold: float,
    settings: Settings = DEFAULT_SETTINGS,
    extra_measurements: int = 0,
    prior: Prior | None = None,
    other_host: bool = False,
) -> Verdict:
    """Decide one metric of one case (a pure function; see the module docstring)."""
    sessions = session_values(metric, baseline)
    k, m = len(sessions), len(current)
    lc = _log_values(metric, current)
    base, cur = math.exp(sum(sessions) / k), math.exp(sum(lc) / m)
    slowdown = metric.slowdown(base, cur)
    x = math.log(slowdown)
    n = noise(metric, baseline, prior=prior, other_host=other_host)
    se = n.se
    big_t = math.log1p(threshold)
    zs, zp = critical_values(settings, n.dof)
    z = x / se
    known = gates(settings, n)
    line = max(zs * se, big_t - zp * se) if known else math.inf
    resolves = stats.expm1((zs + zp) * se) if known else math.inf

    p_value: float | None = None
    rb = [v for r in baseline for v in metric.run_rounds(r)]
    rc = [v for r in current for v in metric.run_rounds(r)]
    if rb and rc:
        worse_alt, better_alt = ("less", "greater") if metric.higher_is_better else ("greater", "less")
        alternative = worse_alt if x >= 0 else better_alt
        p_value = float(sps.mannwhitneyu(rc, rb, alternative=alternative).pvalue)
    rank_ok = p_value is None or p_value < settings.alpha
    small_abs = abs(cur - base) < metric.min_abs

    needs_more = False
    reason = ""
    outcome: Outcome
    if small_abs and metric.min_abs > 0:
        outcome = "unchanged"
        reason = f"the change is below the {metric.format_value(metric.min_abs)} floor"
    elif x >= line and min(math.log(metric.slowdown(base, math.exp(v))) for v in lc) < line:
        outcome = "inconclusive"
        reason = f"not confirmed: only some of the {m} measurements are beyond the {stats.exp(line):.2f}x line"
    elif abs(x) >= line and rank_ok:
        outcome = "regressed" if x > 0 else "improved"
    elif abs(x) < big_t - zp * se:
        outcome = "unchanged"
    else:
        outcome = "inconclusive"
        if abs(x) >= line:
            reason = f"Mann-Whitney p={p_value:.2g} is not below {settings.alpha:g}; more rounds needed"
            needs_more = x > 0  # more rounds can make the rank test significant
        elif not known:
            reason = (
                f"the baseline has {k} recording session(s) and needs {settings.min_sessions} to know this case's "
                "noise: add sessions with --loader-baseline-save --loader-baseline-append"
            )
        elif resolves > threshold:
            can = "cannot resolve any change" if resolves > 10 else f"resolves only changes of {resolves:.0%} or more"
            host = " (another host: between-host noise added)" if n.other_host else ""
            reason = (
                f"too noisy: noise ±{se:.1%} from {k} baseline session(s){' and the prior' if prior else ''}{host} "
                f"{can}, not {threshold:.0%}; next: record more baseline sessions "
                "(--loader-baseline-save --loader-baseline-append) or compare base and head in one job (--loader-ab)"
            )
        else:
            reason = f"not significant (z={z:.1f} < {zs:.2f}); next: rerun, or record more baseline sessions"
    if outcome == "regressed" and m < 1 + settings.confirm:
        needs_more = True  # a regression is reported only once it survives a confirming measurement
    verdict = Verdict(
        case_id=case_id,
        metric=metric.name,
        outcome=outcome,
        baseline=base,
        current=cur,
        ratio=cur / base,
        slowdown=slowdown,
        threshold=threshold,
        p_value=p_value,
        z=z,
        noise=se,
        resolves=resolves,
        baseline_sessions=k,
        current_runs=m,
        extra_measurements=extra_measurements,
        reason=reason,
        needs_more=needs_more,
    )
    return verdict
