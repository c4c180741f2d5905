"""The A/B's evidence: per case and metric, is the head worse than the base, from paired runs?

Pure functions over run values; :mod:`loaderbench.ab.schedule` collects the pairs, and the one decision
engine (:mod:`loaderbench.decision`) decides.

Block ``i`` of the schedule runs the case once in a fresh base process and once in a fresh head
process, back to back (ABBA order: A then B, then B then A, ...).  Pair ``i`` gives one run value per
arm (the median of the run's rounds, or the one-off value) and one oriented log ratio
``x_i = log(slowdown(base_i, head_i))``, above 0 when the head is worse.  Pairing cancels what both
runs of a block share (the machine's load, its thermal state); ABBA ordering cancels a linear drift.

The evidence is ``x = mean(x_i)`` with ``se = sd / sqrt(n)``, where ``sd`` is the pairs' spread pooled
with the workload's stored between-process prior behind an F-check
(:func:`loaderbench.decision.sequential.pair_noise`), and the look's level is the hypothesis's share of
the job's level spent by an O'Brien-Fleming boundary (:func:`~loaderbench.decision.sequential.look_level`).
Then the engine's rule (:mod:`loaderbench.decision.rules`) gives the outcome.

Robustness against one outlier pair (a process that met a noisy neighbour): a regression or an
improvement also needs the pairs *without the most extreme one* to show a threshold-sized change on their
own (their mean beyond ``T - z_p * se'``), which is why a change is reported from 3 pairs on.

The confidence interval shown with the ratio is the conventional two-sided 95% interval of the
geometric mean ratio, ``exp(mean log(head/base) ± t * se)``.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence

from scipy import stats as sps

from loaderbench.decision.job import Decision
from loaderbench.decision.rules import DEFAULT_LEVELS, Evidence, Levels, Outcome, outcome, power_margin, resolves
from loaderbench.decision.sequential import MIN_PAIRS, futile, look_level, pair_noise, unchanged_margin
from loaderbench.decision.verdict import Verdict, verdict_of
from loaderbench.gate.priors import Prior
from loaderbench.measurement import Measurement
from loaderbench.metrics import Metric

__all__ = ["MIN_PAIRS", "ABVerdict", "Levels", "decide", "decide_runs", "log_slowdowns"]

#: The A/B's verdicts are the one :class:`~loaderbench.decision.verdict.Verdict` type (``mode="ab"``).
ABVerdict = Verdict


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
    alpha: float,
    max_pairs: int,
    prior: Prior | None = None,
    levels: Levels = DEFAULT_LEVELS,
    final: bool = False,
) -> Verdict:
    """Decide one metric of one case from paired run values at this look (``len(base)`` pairs); ``alpha`` is
    the hypothesis's share of the job's level, ``max_pairs`` the last look, ``final`` whether this look is
    the last (the budget ends the job).  Values must be finite and positive.  See the module docstring."""
    n = len(base)
    xs = log_slowdowns(metric, base, head)
    ratios = tuple(math.log(h / b) for b, h in zip(base, head, strict=True))
    base_gm = math.exp(statistics.fmean(math.log(b) for b in base)) if n else math.nan
    head_gm = math.exp(statistics.fmean(math.log(h) for h in head)) if n else math.nan
    noise = pair_noise(xs, prior.sigma if prior is not None else None, prior.dof if prior is not None else 0.0)
    se = noise.sd / math.sqrt(n) if n else math.inf
    x = statistics.fmean(xs) if n else math.nan
    e = Evidence(
        case_id=case_id,
        metric=metric.name,
        x=x,
        se=se,
        dof=noise.dof if noise.dof >= 1 else 1.0,
        threshold=threshold,
        baseline=base_gm,
        current=head_gm,
        below_floor=metric.min_abs > 0 and abs(head_gm - base_gm) < metric.min_abs,
        gated=n >= 2 and math.isfinite(se),
        note=noise.note,
    )
    level = look_level(alpha, n, max_pairs, final=final)
    worse, better = level > 0 and e.p_worse <= level, level > 0 and e.p_better <= level
    out: Outcome = outcome(e, worse=worse, better=better, levels=levels) if e.gated else "inconclusive"
    can = resolves(e, look_level(alpha, max(n, MIN_PAIRS), max_pairs, final=True), levels)
    reason = _reason(e, out, n, can, level)
    if out == "unchanged" and not e.below_floor:
        margin = unchanged_margin(threshold, se, e.dof, n, max_pairs, final=final, z_power=levels.z_power)
        if not abs(x) < margin:
            out = "inconclusive"
            reason = (
                f"{n} pairs: {metric.describe_change(math.exp(x))} so far, within the threshold, but a "
                f"{threshold:.0%} change is not yet ruled out at this look's margin (an early look needs a "
                "stricter one, so that stopping early keeps the power to catch a threshold-sized change)"
            )
    if out in ("regressed", "improved"):
        out, reason = _robust(xs, x, threshold, noise.dof, levels)
    more = out == "inconclusive"  # at the last look too: the scheduler says what stopped it
    if more and not final and futile(x, noise.sd, noise.dof, n, threshold, alpha, max_pairs):
        more = False
        reason = (
            f"too noisy to be decided within {max_pairs} pairs: the pairs spread ±{noise.sd:.1%}, so neither "
            f"a threshold-sized change nor its absence can be shown by then; stopped at {n} pairs"
        )
    mean_ratio = statistics.fmean(ratios) if n else math.nan
    half = float(sps.t.ppf(0.5 + levels.ci / 2, max(1.0, e.dof))) * se if n >= 2 else math.nan
    d = Decision(e, out, level, e.p_worse if x >= 0 else e.p_better, can, reason)
    v = verdict_of(
        d,
        baseline=base_gm,
        current=head_gm,
        mode="ab",
        pairs=n,
        ci_low=math.exp(mean_ratio - half) if math.isfinite(half) else math.nan,
        ci_high=math.exp(mean_ratio + half) if math.isfinite(half) else math.nan,
        ci_level=levels.ci,
        spread=noise.sd,
        log_ratios=ratios,
        needs_more=more,
    )
    return dataclasses.replace(v, ratio=math.exp(mean_ratio) if n else math.nan)


def _reason(e: Evidence, out: Outcome, n: int, can: float, level: float) -> str:
    if out == "unchanged" and e.below_floor:
        return "the change is below the metric's floor"
    if out != "inconclusive":
        return ""
    if n < 2:
        return f"{n} pair(s): the noise between processes needs at least 2 to be estimated"
    if level == 0:
        return f"{n} pairs: a change is reported from {MIN_PAIRS} pairs on, so that no single pair decides it"
    if can > e.threshold:
        return (
            f"too noisy: the pairs spread ±{e.se * math.sqrt(n):.1%} ({e.note}), so {n} pairs resolve only changes "
            f"of {can:.0%} or more, not {e.threshold:.0%}; more pairs (--loader-ab-pairs, --loader-ab-budget) "
            "would narrow it"
        )
    if abs(e.x) >= power_margin(e) and e.x > 0:
        return (
            f"not yet significant at this look (p={e.p_worse:.2g} > {level:.2g}); the last look resolves "
            f"changes of {can:.0%} or more"
        )
    return f"not significant (t={e.z:.1f})"


def _robust(xs: Sequence[float], x: float, threshold: float, dof: float, levels: Levels) -> tuple[Outcome, str]:
    """A decided change stands only if the pairs without the one most in its direction still show a
    threshold-sized change on their own (their mean beyond ``T - z_p * se'``)."""
    rest = list(xs)
    rest.remove(max(xs) if x > 0 else min(xs))
    trimmed = statistics.fmean(rest)
    se = statistics.stdev(rest) / math.sqrt(len(rest)) if len(rest) >= 2 else math.inf
    zp = float(sps.t.isf(sps.norm.sf(levels.z_power), max(1.0, dof)))
    if math.copysign(1.0, x) * trimmed >= math.log1p(threshold) - zp * se:
        return ("regressed" if x > 0 else "improved"), ""
    return "inconclusive", (
        f"one pair carries it: without the most extreme pair the change is {math.exp(abs(trimmed)):.2f}x, "
        "short of a threshold-sized change; more pairs will tell"
    )


def decide_runs(
    case_id: str,
    metric: Metric,
    base: Sequence[Measurement],
    head: Sequence[Measurement],
    *,
    threshold: float,
    alpha: float,
    max_pairs: int,
    prior: Prior | None = None,
    levels: Levels = DEFAULT_LEVELS,
    final: bool = False,
) -> Verdict | None:
    """:func:`decide` on paired measurements (``base[i]`` and ``head[i]`` from block ``i``); None when the
    metric is missing from any run of either arm (a CPU case has no ``feed_samples_per_s``) or does not
    apply to the case (CPU time per sample of a case that is not CPU-bound), or the arms measured it in
    different ways (an older loaderbench in the base arm counting other memory pages)."""
    if not (metric.present(base) and metric.present(head)) or not metric.applies(base):
        return None
    if not metric.comparable(base, head):
        return None
    return decide(
        case_id,
        metric,
        [metric.run_value(r) for r in base],
        [metric.run_value(r) for r in head],
        threshold=threshold,
        alpha=alpha,
        max_pairs=max_pairs,
        prior=prior,
        levels=levels,
        final=final,
    )
