"""The single-hypothesis rules: one case and metric's evidence, its p-values, and its outcome at a level.

:class:`Evidence` is what both modes reduce a comparison to (see :mod:`loaderbench.decision`); the
level a hypothesis is tested at comes from the job (:mod:`loaderbench.decision.job`: Holm) or the
sequential boundary (:mod:`loaderbench.decision.sequential`).  The rule, once:

* significant worse: ``p_worse <= level``, where ``p_worse`` is Student's t (``dof`` degrees of
  freedom; the normal when ``dof`` is infinite) upper tail of ``x / se``;
* **regressed**: significant worse, ``x >= T - z_p * se`` with ``T = log(1 + threshold)`` and
  ``z_p`` the power quantile (90%) of the same t, the change above the metric's floor, and the noise
  known well enough to fail a run (``gated``);
* **improved**: the mirror image;
* **unchanged**: ``|x| < T - z_p * se`` or the change is below the floor;
* **inconclusive**: anything else.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from scipy import stats as sps

from loaderbench import stats

Outcome = Literal["regressed", "improved", "unchanged", "inconclusive"]

#: The false-red rate per job the engine holds (family-wise, over every case and metric a job judges).
JOB_ALPHA = 0.01
#: The power at the threshold the effect-size rule keeps (z = 1.28: 90%).
Z_POWER = 1.28


@dataclass(frozen=True, slots=True)
class Levels:
    """``job_alpha``: false-red rate per job; ``z_power``: the power margin (normal quantile); ``ci``: the
    level of the interval shown beside a ratio."""

    job_alpha: float = JOB_ALPHA
    z_power: float = Z_POWER
    ci: float = 0.95


#: The default levels.
DEFAULT_LEVELS = Levels()


@dataclass(frozen=True, slots=True)
class Evidence:
    """One case and metric, reduced: ``x`` the oriented log change (above 0 when worse), ``se`` its standard
    error, ``dof`` the degrees of freedom ``se`` is known with (``inf``: known), ``threshold`` the tolerated
    change (0.10: 1.10x), ``baseline``/``current`` the compared values in the metric's unit,
    ``below_floor`` whether the change is below the metric's absolute floor, ``gated`` whether the noise is
    known well enough to fail a run, ``unit`` the group the job's common offset is taken over (empty: none),
    ``note`` why the noise is what it is (for the reason text)."""

    case_id: str
    metric: str
    x: float
    se: float
    dof: float
    threshold: float
    baseline: float
    current: float
    below_floor: bool = False
    gated: bool = True
    unit: str = ""
    note: str = ""

    @property
    def z(self) -> float:
        if self.se > 0:
            return self.x / self.se
        return 0.0 if self.x == 0 else math.copysign(math.inf, self.x)

    @property
    def p_worse(self) -> float:
        """One-sided p of "no worse" (small when ``x`` is large against ``se``)."""
        return tail(self.z, self.dof)

    @property
    def p_better(self) -> float:
        return tail(-self.z, self.dof)

    def shifted(self, offset: float, scale: float) -> Evidence:
        """The evidence judged against a common offset, with ``se`` scaled by ``scale`` (>= 1)."""
        return dataclasses.replace(self, x=self.x - offset, se=self.se * scale)


def tail(z: float, dof: float) -> float:
    """Upper-tail probability of ``z`` under Student's t with ``dof`` (the normal when infinite)."""
    if math.isnan(z):
        return 1.0
    if not math.isfinite(dof) or dof <= 0:
        return float(sps.norm.sf(z))
    return float(sps.t.sf(z, dof))


def quantile(p: float, dof: float) -> float:
    """The upper ``p`` quantile of Student's t with ``dof`` (the normal when infinite)."""
    if not math.isfinite(dof) or dof <= 0:
        return float(sps.norm.isf(p))
    return float(sps.t.isf(p, dof))


def power_margin(e: Evidence, levels: Levels = DEFAULT_LEVELS) -> float:
    """``T - z_p * se``: an estimate below this rules a threshold-sized change out."""
    zp = quantile(float(sps.norm.sf(levels.z_power)), e.dof)
    return math.log1p(e.threshold) - zp * e.se


def holds_in_each(e: Evidence, changes: Iterable[float], levels: Levels = DEFAULT_LEVELS) -> bool:
    """The confirmation rule: whether every process's own change (``changes``: oriented log changes, each
    taken beyond the job's common offset as ``e`` is) reaches ``e``'s power margin, so that one disturbed
    process cannot carry a regression.  A NaN change confirms nothing."""
    margin = power_margin(e, levels)
    return all(c >= margin for c in changes)


def resolves(e: Evidence, level: float, levels: Levels = DEFAULT_LEVELS) -> float:
    """The smallest change (a fraction) this evidence could call regressed at ``level`` (inf: cannot)."""
    if not e.gated or not math.isfinite(e.se):
        return math.inf
    zp = quantile(float(sps.norm.sf(levels.z_power)), e.dof)
    return stats.expm1((quantile(level, e.dof) + zp) * e.se)


def outcome(e: Evidence, *, worse: bool, better: bool, levels: Levels = DEFAULT_LEVELS) -> Outcome:
    """The outcome of ``e`` given whether "no worse" (``worse``) and "no better" (``better``) were rejected
    at the levels the job assigned."""
    margin = power_margin(e, levels)
    if e.below_floor:
        return "unchanged"
    if worse and e.gated and e.x > 0 and e.x >= margin:
        return "regressed"
    if better and e.gated and e.x < 0 and -e.x >= margin:
        return "improved"
    if abs(e.x) < margin:
        return "unchanged"
    return "inconclusive"
