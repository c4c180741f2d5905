"""A job's decisions together: the common offset, the control case, the noise check and Holm's procedure.

``decide_job(evidence, ...) -> JobDecision``: pure, deterministic, over every case and metric the job
judges (the rules are in :mod:`loaderbench.decision`'s docstring).  Per offset group (a metric, when
at least :data:`MIN_OFFSET_CASES` cases have it):

* the common offset ``d`` is the median of the cases' ``x``; its standard error is the median's
  (``1.2533 * 1.4826 * MAD / sqrt(n)``) combined with the between-period noise of a run's offset
  (``offset_sigma``: measured from the baseline's sessions or the priors file);
* each case is judged on ``x - d``;
* the residuals' z scores should scatter like a standard normal; their robust spread
  (``1.4826 * MAD``), when above 1 with at least :data:`MIN_SCALE_CASES` cases, scales every ``se`` of
  the group up by that factor;
* the offset is one more hypothesis of the family: ``x = d - e`` where ``e`` is the part of ``d`` the
  control case's own change ``c`` explains (``c`` clamped between 0 and ``d``; 0 without a control), so
  "every loader is slower while the control held" fails the job, and "everything moved with the control"
  is one line.  The control only ever explains a shift away; it never makes or enlarges one: a control
  that moved while the cases held (a spin loop 1.65x faster on a fresh GPU machine whose CUDA cases did
  not move) says the control does not speak for these cases, not that every loader regressed.

Holm's step-down procedure over the family's regression p-values assigns each hypothesis the level
``job_alpha / (m - i)``; improvements are tested at Bonferroni's ``job_alpha / m``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from loaderbench.decision.rules import DEFAULT_LEVELS, Evidence, Levels, Outcome, outcome, power_margin, resolves
from loaderbench.metrics import METRICS

#: Cases of a metric a job needs before it estimates their common offset.
MIN_OFFSET_CASES = 5
#: Cases of a metric a job needs before their scatter may scale the noise model up.
MIN_SCALE_CASES = 12
#: The name an offset hypothesis goes by in verdicts.
EVERY_CASE = "every case"


@dataclass(frozen=True, slots=True)
class Control:
    """The control case's change since the baseline: ``x`` (log, above 0 when the machine is slower) and its
    standard error; ``detail`` says what was measured (``spin 1.02x slower, memory copy 1.01x faster``)."""

    x: float
    se: float
    detail: str = ""

    @property
    def moved(self) -> bool:
        return abs(self.x) > 2 * self.se


@dataclass(frozen=True, slots=True)
class Offset:
    """One group's common offset: ``estimate`` (log), its ``se``, the ``scale`` its noise was multiplied by,
    ``cases`` it was taken over, and the hypothesis that every loader moved (``evidence``)."""

    unit: str
    estimate: float
    se: float
    scale: float
    cases: int
    evidence: Evidence


@dataclass(frozen=True, slots=True)
class Decision:
    """One hypothesis decided: its (offset-adjusted, scaled) evidence, outcome, reason, the level it was tested
    at, its p-value and the change it could resolve at that level."""

    evidence: Evidence
    outcome: Outcome
    level: float
    p_value: float
    resolves: float
    reason: str = ""


@dataclass(frozen=True, slots=True)
class JobDecision:
    """Every hypothesis of the job decided (offset hypotheses included, ``case_id == EVERY_CASE``), the
    offsets, and what the job said about the machine (one line each)."""

    decisions: tuple[Decision, ...]
    offsets: tuple[Offset, ...]
    lines: tuple[str, ...]
    family: int

    @property
    def regressed(self) -> list[Decision]:
        return [d for d in self.decisions if d.outcome == "regressed"]


def _mad(values: Sequence[float], center: float) -> float:
    return 1.4826 * statistics.median(abs(v - center) for v in values)


def offsets(
    evidence: Sequence[Evidence],
    *,
    offset_sigma: Mapping[str, float],
    control: Control | None = None,
    controlled: frozenset[str] = frozenset(),
) -> dict[str, Offset]:
    """The common offset of each group with enough cases (see the module docstring).  ``offset_sigma[unit]``
    is the between-period noise of a run's offset (log sd); ``controlled`` names the groups the control case
    speaks for (throughput and timings; not memory)."""
    groups: dict[str, list[Evidence]] = {}
    for e in evidence:
        if e.unit and math.isfinite(e.x) and e.se > 0 and math.isfinite(e.se):
            groups.setdefault(e.unit, []).append(e)
    out = {}
    for unit, es in groups.items():
        if len(es) < MIN_OFFSET_CASES:
            continue
        xs = [e.x for e in es]
        d = statistics.median(xs)
        se_median = 1.2533 * _mad(xs, d) / math.sqrt(len(xs))
        scale = 1.0
        if len(es) >= MIN_SCALE_CASES:
            zs = [(e.x - d) / e.se for e in es]
            scale = max(1.0, _mad(zs, statistics.median(zs)))
        sigma = offset_sigma.get(unit, 0.0)
        c = explained(d, control.x) if control is not None and unit in controlled else 0.0
        c_se = control.se if c and control is not None else 0.0
        se = math.sqrt(sigma**2 + se_median**2 + c_se**2)
        base = statistics.median(e.baseline for e in es)
        hypothesis = Evidence(
            case_id=EVERY_CASE,
            metric=es[0].metric,
            x=d - c,
            se=se,
            dof=math.inf,
            threshold=statistics.median(e.threshold for e in es),
            baseline=base,
            current=base / math.exp(d) if METRICS[es[0].metric].higher_is_better else base * math.exp(d),
            gated=sigma > 0,
            note=f"median of {len(es)} cases",
        )
        out[unit] = Offset(unit, d, se, scale, len(es), hypothesis)
    return out


def explained(d: float, c: float) -> float:
    """The part of the common offset ``d`` that the control's change ``c`` explains: ``c`` clamped between 0
    and ``d`` (both logs).  A control that moved the other way, or while the cases held, explains nothing
    and adds nothing."""
    if d > 0:
        return min(max(c, 0.0), d)
    return max(min(c, 0.0), d)


def holm_levels(p_values: Sequence[float], alpha: float) -> tuple[list[bool], list[float]]:
    """Holm's step-down procedure: whether each hypothesis is rejected, and the level it was compared with
    (``alpha / (m - rank)``; hypotheses after the first acceptance keep the level of their rank)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: (p_values[i], i))
    rejected = [False] * m
    levels = [alpha / m if m else alpha] * m
    stopped = False
    for rank, i in enumerate(order):
        levels[i] = alpha / (m - rank)
        if not stopped and p_values[i] <= levels[i]:
            rejected[i] = True
        else:
            stopped = True
    return rejected, levels


def decide_job(
    evidence: Sequence[Evidence],
    *,
    levels: Levels = DEFAULT_LEVELS,
    offset_sigma: Mapping[str, float] | None = None,
    control: Control | None = None,
    controlled: frozenset[str] = frozenset(),
    family: int | None = None,
) -> JobDecision:
    """Decide every hypothesis of a job together.  ``offset_sigma`` None: no common offset is taken (the
    A/B, whose arms share the machine).  ``family``: the family size, when the job judges more hypotheses
    than ``evidence`` holds (default: every hypothesis given, offsets included)."""
    found = (
        offsets(evidence, offset_sigma=offset_sigma, control=control, controlled=controlled)
        if (offset_sigma is not None)
        else {}
    )
    adjusted = []
    for e in evidence:
        o = found.get(e.unit)
        adjusted.append(e.shifted(o.estimate, o.scale) if o is not None else e)
    hypotheses = [*adjusted, *(o.evidence for o in found.values())]
    m = max(family or 0, len(hypotheses))
    p_worse = [e.p_worse if e.gated else 1.0 for e in hypotheses]
    rejected, holm = holm_levels([*p_worse, *([1.0] * (m - len(hypotheses)))], levels.job_alpha)
    bonferroni = levels.job_alpha / max(1, m)
    decisions = []
    for i, e in enumerate(hypotheses):
        better = e.gated and e.p_better <= bonferroni
        out = outcome(e, worse=rejected[i], better=better, levels=levels)
        level = holm[i]
        can = resolves(e, bonferroni, levels)
        decisions.append(
            Decision(e, out, level, p_worse[i] if e.x >= 0 else e.p_better, can, _reason(e, out, rejected[i], can))
        )
    return JobDecision(tuple(decisions), tuple(found.values()), tuple(_lines(found, control)), m)


def _reason(e: Evidence, out: Outcome, significant: bool, can: float) -> str:
    if out != "inconclusive":
        return "the change is below the metric's floor" if e.below_floor else ""
    if not e.gated:
        return e.note or "the noise is not known well enough to fail a run"
    if significant or (e.x < 0 and e.x > -power_margin(e)):
        return "significant, but a change of the threshold's size is not yet shown"
    if can > e.threshold:
        return f"too noisy: noise ±{e.se:.1%}{f' ({e.note})' if e.note else ''} resolves only changes of {can:.0%}"
    return f"not significant at the job's level (z={e.z:.1f})"


def _lines(found: Mapping[str, Offset], control: Control | None) -> list[str]:
    out = []
    ctrl = f"the control case (no DataLoader) {control.detail}" if control is not None else "no control case"
    for o in found.values():
        pct = math.expm1(o.estimate)
        if abs(o.estimate) < max(2 * o.se, 0.02) and o.scale < 1.3:
            continue
        where = f"{abs(pct):.0%} {'slower' if pct > 0 else 'faster'}"
        if o.evidence.metric != "samples_per_s":
            where = f"{abs(pct):.0%} {'worse' if pct > 0 else 'better'} in {o.evidence.metric}"
        if control is not None and control.moved and abs(o.estimate - control.x) < max(2 * o.se, 0.02):
            why = f"{ctrl} moved as much: the machine or its load changed, not the loaders"
        elif control is not None and not control.moved:
            why = f"{ctrl} held: if this stands, every loader changed"
        elif control is not None and explained(o.estimate, control.x) == 0.0:
            why = f"{ctrl} moved, the cases did not follow: it does not speak for these cases and is not used"
        else:
            why = ctrl
        scale = (
            f"; the cases scatter {o.scale:.1f}x more than their noise model, so every noise figure is "
            f"widened {o.scale:.1f}x (a busier or drifting machine)"
            if o.scale > 1.0
            else ""
        )
        out.append(
            f"common offset: this run is {where} than the baseline on every case (median of {o.cases}; "
            f"noise ±{o.se:.1%}); {why}; each case is judged on its change beyond this{scale}"
        )
    return out
