"""The A/B's statistics: per case and metric, is the head worse than the base, from paired runs?

Pure functions over run values; :mod:`loaderbench.ab.runner` collects the pairs.

The model (per metric, in log space, so effects are ratios)
-------------------------------------------------------------
Block ``i`` of the schedule runs the case once in a fresh base process and once
in a fresh head process, back to back (ABBA order: A then B, then B then A, ...).
Pair ``i`` gives one run value per arm (the median of the run's rounds, or the
one-off value: :meth:`loaderbench.metrics.Metric.run_value`) and one oriented
log ratio ``x_i = log(slowdown(base_i, head_i))``, above 0 when the head is
worse (throughput lower; TTFB, stall or memory higher).  With ``n`` pairs,
``x̄`` their mean, ``s`` their standard deviation and ``se = s / sqrt(n)``:

* The pairs measure the case's noise between processes directly (every run is a
  fresh process), on this runner and at this time, so no stored noise figure is
  needed: ``x̄ / se`` is Student's t with ``n - 1`` degrees of freedom.  Pairing
  cancels what both runs of a block share (the runner's load, its thermal
  state); ABBA ordering cancels a linear drift across the job, which would
  otherwise favour whichever arm always runs second.
* ``zs``: Student's t quantile at the stored gate's significance level (0.1%,
  ``z = 3.09``) divided by ``looks``, the number of times the runner may look at
  a case (it adds pairs only while a case is undecided and stops at the first
  decision, so each look is a new chance of a false alarm: Bonferroni keeps the
  rate per case and metric at 0.1% however many looks); ``zp``: the t quantile of
  the gate's power margin (``z = 1.28``: 90% power at the threshold).
  ``T = log(1 + threshold)``.
* **regressed**: ``x̄ >= zs * se`` (significant) and ``x̄ >= T - zp * se`` (a
  threshold-sized regression is what the data show), the change exceeds the
  metric's absolute floor (``min_abs``), at least 3 pairs, and the pairs
  *without the most extreme one* still show a threshold-sized change on their
  own (their mean beyond ``T - zp' * se'``, with their own standard error and
  ``n - 2`` degrees of freedom).
  **improved** is the mirror image; it never fails the run.
* **unchanged**: ``|x̄| < T - zp * se`` (a threshold-sized change in either
  direction is ruled out), or the change is below the metric's floor.
* **inconclusive**: anything else, with the change the case can resolve,
  ``(zs + zp) * se`` as a factor, and why it is undecided.

Robustness against one outlier pair (a process that met a noisy neighbour):
in a case without a change, one disturbed pair of any size cannot make the
mean significant, because it inflates ``s`` as much as ``x̄`` (as its value
grows, t tends to 1, far below ``zs``).  What one pair *can* do is carry a small
real change over the threshold line (it raises the mean, and by inflating
``se`` it lowers the line too); requiring the pairs without the most extreme
one to reach the line on their own rules that out, and is why a regression
needs 3 pairs.  A sign test or Wilcoxon's signed-rank test was
rejected for this role: with ``n`` pairs their smallest possible p is ``2**-n``,
so at the 0.1% level they could never agree with fewer than 10 pairs, and the
default is 8.

The confidence interval shown with the ratio is the conventional two-sided
95% interval of the geometric mean ratio, ``exp(mean log(head/base) ± t * se)``;
the decision uses the stricter one-sided levels above.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from scipy import stats as sps

from loaderbench import stats
from loaderbench.gate.model import Outcome
from loaderbench.gate.verdict import message_line
from loaderbench.measurement import Measurement
from loaderbench.metrics import METRICS, Metric
from loaderbench.report.format import fmt_change
from loaderbench.store import jsondoc

__all__ = ["MIN_PAIRS", "ABVerdict", "Levels", "critical_values", "decide", "decide_runs", "log_slowdowns"]

#: Pairs a regression or an improvement needs: one of them must be expendable (the trimmed mean).
MIN_PAIRS = 3


@dataclass(frozen=True, slots=True)
class Levels:
    """Decision levels, as normal quantiles (the stored gate's: 0.1% significance, 90% power), and
    the confidence level of the interval that is shown."""

    z_significance: float = 3.09
    z_power: float = 1.28
    ci: float = 0.95


@dataclass(frozen=True, slots=True)
class ABVerdict:
    """The A/B's answer for one case and metric.

    ``base`` and ``head`` are geometric means of the arms' run values in the metric's unit; ``ratio``
    is ``head / base`` with its confidence interval ``ci_low``..``ci_high``; ``slowdown`` is the change
    as a factor above 1 when the head is worse.  ``t`` is the paired t statistic (oriented: positive
    when worse), ``critical`` the ``zs`` it had to reach, ``noise`` the standard error of the mean log
    ratio, ``spread`` the standard deviation of the pairs' log ratios, ``resolves`` the smallest change
    these pairs can resolve (inf: cannot), ``log_ratios`` the pairs' ``log(head / base)``.
    """

    case_id: str
    metric: str
    outcome: Outcome
    base: float
    head: float
    ratio: float
    ci_low: float
    ci_high: float
    slowdown: float
    threshold: float
    pairs: int
    t: float
    critical: float
    noise: float
    spread: float
    resolves: float
    reason: str = ""
    log_ratios: tuple[float, ...] = ()
    ci_level: float = 0.95

    @property
    def failed(self) -> bool:
        return self.outcome == "regressed"

    @property
    def change(self) -> str:
        """``1.23x slower`` / ``1.05x faster`` / ``same``, from the head's point of view."""
        return METRICS[self.metric].describe_change(self.slowdown)

    @property
    def evidence(self) -> str:
        """``t=35.2 (needs 22.3), 3 pairs, noise ±1.2%``."""
        return f"t={self.t:.1f} (needs {self.critical:.1f}), {self.pairs} pairs, noise ±{self.noise:.1%}"

    def message(self) -> str:
        """One line: ``CASE METRIC: 2.01x slower (1.2k/s -> 597/s), t=...: regressed``."""
        return message_line(self, self.base, self.head)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON values (non-finite numbers become None), for ``results.json``."""
        data: dict[str, Any] = {
            "case_id": self.case_id,
            "metric": self.metric,
            "outcome": self.outcome,
            "base": self.base,
            "head": self.head,
            "ratio": self.ratio,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "ci_level": self.ci_level,
            "slowdown": self.slowdown,
            "threshold": self.threshold,
            "pairs": self.pairs,
            "t": self.t,
            "critical": self.critical,
            "noise": self.noise,
            "spread": self.spread,
            "resolves": self.resolves,
            "reason": self.reason,
            "log_ratios": list(self.log_ratios),
            "message": self.message(),
        }
        cleaned: dict[str, Any] = jsondoc.clean(data)  # the JSON rule: NaN and infinities become null
        return cleaned


def critical_values(levels: Levels, pairs: int, *, looks: int = 1) -> tuple[float, float]:
    """``(zs, zp)`` for ``pairs`` pairs (``pairs - 1`` degrees of freedom), the significance level split
    over ``looks`` looks (Bonferroni); ``(inf, inf)`` below 2 pairs."""
    if pairs < 2:
        return math.inf, math.inf
    dof = pairs - 1
    alpha = float(sps.norm.sf(levels.z_significance)) / max(1, looks)
    zs = float(sps.t.isf(alpha, dof))
    zp = float(sps.t.ppf(sps.norm.cdf(levels.z_power), dof))
    return zs, zp


def log_slowdowns(metric: Metric, base: Sequence[float], head: Sequence[float]) -> list[float]:
    """Each pair's ``log(slowdown)``: above 0 when the head's value is worse than the base's."""
    return [math.log(metric.slowdown(b, h)) for b, h in zip(base, head, strict=True)]


def decide(
    case_id: str,
    metric: Metric,
    base: Sequence[float],
    head: Sequence[float],
    *,
    threshold: float,
    looks: int = 1,
    levels: Levels = Levels(),
) -> ABVerdict:
    """Decide one metric of one case from paired run values (``base[i]``, ``head[i]``: pair ``i``);
    values must be finite and positive.  See the module docstring."""
    n = len(base)
    xs = log_slowdowns(metric, base, head)
    ratios = tuple(math.log(h / b) for b, h in zip(base, head, strict=True))
    base_gm = math.exp(statistics.fmean(math.log(b) for b in base)) if n else math.nan
    head_gm = math.exp(statistics.fmean(math.log(h) for h in head)) if n else math.nan
    outcome: Outcome = "inconclusive"
    reason = ""
    if n < 2:
        x, s, se, t = (xs[0] if n else math.nan), math.nan, math.inf, math.nan
        zs, resolves, mean_ratio, half = math.inf, math.inf, (ratios[0] if n else math.nan), math.nan
        reason = f"{n} pair(s): the noise between processes needs at least 2 to be estimated"
    else:
        x, s = statistics.fmean(xs), statistics.stdev(xs)
        se = s / math.sqrt(n)
        zs, zp = critical_values(levels, n, looks=looks)
        t = x / se if se > 0 else (0.0 if x == 0 else math.copysign(math.inf, x))
        margin = math.log1p(threshold) - zp * se
        resolves = stats.expm1((zs + zp) * se)
        mean_ratio = statistics.fmean(ratios)
        half = float(sps.t.ppf(0.5 + levels.ci / 2, n - 1)) * se
        if metric.min_abs > 0 and abs(head_gm - base_gm) < metric.min_abs:
            outcome = "unchanged"
            reason = f"the change is below the {metric.format_value(metric.min_abs)} floor"
        elif abs(x) >= max(zs * se, margin):
            outcome, reason = _robust(xs, x, threshold, levels)
        elif abs(x) < margin:
            outcome = "unchanged"
        elif resolves > threshold:
            can = fmt_change(resolves)
            can = f"resolve only changes of {can} or more" if can[0].isdigit() else "cannot resolve any change"
            reason = (
                f"too noisy: the pairs' log ratios spread ±{s:.1%}, so {n} pairs {can}, not {threshold:.0%}; "
                "more pairs (--loader-ab-pairs, --loader-ab-budget) would narrow it"
            )
        else:
            reason = f"not significant (t={t:.1f} < {zs:.1f})"
    return ABVerdict(
        case_id=case_id,
        metric=metric.name,
        outcome=outcome,
        base=base_gm,
        head=head_gm,
        ratio=math.exp(mean_ratio),
        ci_low=stats.exp(mean_ratio - half),
        ci_high=stats.exp(mean_ratio + half),
        slowdown=stats.exp(x),
        threshold=threshold,
        pairs=n,
        t=t,
        critical=zs,
        noise=se,
        spread=s,
        resolves=resolves,
        reason=reason,
        log_ratios=ratios,
        ci_level=levels.ci,
    )


def _robust(xs: Sequence[float], x: float, threshold: float, levels: Levels) -> tuple[Outcome, str]:
    """A significant, large change: reported only with :data:`MIN_PAIRS` pairs, and only if the pairs without
    the one most in the change's direction still show a threshold-sized change on their own (their mean
    beyond ``T - zp * se`` with their own standard error and ``n - 2`` degrees of freedom)."""
    if len(xs) < MIN_PAIRS:
        return "inconclusive", (
            f"{len(xs)} pairs: a change is reported from {MIN_PAIRS} pairs on, so that no single pair decides it"
        )
    rest = list(xs)
    rest.remove(max(xs) if x > 0 else min(xs))
    trimmed = statistics.fmean(rest)
    _, zp = critical_values(levels, len(rest))
    margin = math.log1p(threshold) - zp * statistics.stdev(rest) / math.sqrt(len(rest))
    if math.copysign(1.0, x) * trimmed >= margin:
        return ("regressed" if x > 0 else "improved"), ""
    return "inconclusive", (
        f"one pair carries it: without the most extreme pair the change is {stats.exp(abs(trimmed)):.2f}x, "
        "short of a threshold-sized change; more pairs will tell"
    )


def decide_runs(
    case_id: str,
    metric: Metric,
    base: Sequence[Measurement],
    head: Sequence[Measurement],
    *,
    threshold: float,
    looks: int = 1,
    levels: Levels = Levels(),
) -> ABVerdict | None:
    """:func:`decide` on paired measurements (``base[i]`` and ``head[i]`` from block ``i``); None when the
    metric is missing from any run of either arm (a CPU case has no ``feed_samples_per_s``)."""
    if not (metric.present(base) and metric.present(head)):
        return None
    return decide(
        case_id,
        metric,
        [metric.run_value(r) for r in base],
        [metric.run_value(r) for r in head],
        threshold=threshold,
        looks=looks,
        levels=levels,
    )
