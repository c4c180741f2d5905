"""The one verdict type, for the stored gate and the A/B: :class:`Verdict`, built from a
:class:`~loaderbench.decision.job.Decision` by :func:`verdict_of`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from loaderbench import jsondoc, stats
from loaderbench.decision.job import Decision
from loaderbench.decision.rules import Outcome
from loaderbench.metrics import METRICS

Mode = Literal["stored", "ab"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer for one case and metric, with the numbers behind it.

    ``baseline`` and ``current`` are geometric means in the metric's unit (the A/B's base and head arms);
    ``ratio`` is ``current / baseline``; ``slowdown`` the change as a factor above 1 when worse (against
    the run's common offset, when one was taken: ``offset``, log).  ``p_value`` is the one-sided p of the
    change's direction, ``level`` the level the job's procedure compared it with (Holm's, or the A/B
    look's), ``z`` the change in standard errors (the A/B's paired t), ``noise`` the standard error (log),
    ``resolves`` the smallest change this noise could call regressed.  ``baseline_sessions`` and
    ``current_runs`` count the stored gate's processes; ``pairs``, ``ci_low``/``ci_high`` (the ratio's
    interval at ``ci_level``), ``spread`` (the pairs' sd) and ``log_ratios`` are the A/B's.
    """

    case_id: str
    metric: str
    outcome: Outcome
    baseline: float
    current: float
    ratio: float
    slowdown: float
    threshold: float
    p_value: float | None
    z: float
    noise: float
    resolves: float
    baseline_sessions: int = 0
    current_runs: int = 0
    extra_measurements: int = 0
    reason: str = ""
    #: Whether a fresh-process measurement could decide it (a regression not yet confirmed).
    needs_more: bool = False
    level: float = math.nan
    offset: float = 0.0
    mode: Mode = "stored"
    pairs: int = 0
    ci_low: float = math.nan
    ci_high: float = math.nan
    ci_level: float = 0.95
    spread: float = math.nan
    log_ratios: tuple[float, ...] = ()

    @property
    def failed(self) -> bool:
        return self.outcome == "regressed"

    @property
    def base(self) -> float:
        return self.baseline

    @property
    def head(self) -> float:
        return self.current

    @property
    def t(self) -> float:
        return self.z

    @property
    def change(self) -> str:
        """``1.23x slower`` / ``1.05x faster`` / ``same``."""
        return METRICS[self.metric].describe_change(self.slowdown)

    @property
    def evidence(self) -> str:
        """``p=4e-06 (level 7.1e-05), z=5.2, noise ±1.2%, 3 baseline sessions, 2 process(es)`` and the like."""
        parts = []
        if self.p_value is not None and math.isfinite(self.p_value):
            level = f" (level {self.level:.2g})" if math.isfinite(self.level) and self.level > 0 else ""
            parts.append(f"p={self.p_value:.2g}{level}")
        parts.append(f"{'t' if self.mode == 'ab' else 'z'}={self.z:.1f}")
        parts.append(f"noise ±{self.noise:.1%}")
        if abs(self.offset) >= 0.005:
            parts.append(f"beyond the run's common offset {stats.exp(self.offset):.2f}x")
        if self.mode == "ab":
            parts.append(f"{self.pairs} pairs")
        else:
            parts.append(f"{self.baseline_sessions} baseline sessions, {self.current_runs} process(es)")
        return ", ".join(parts)

    def message(self) -> str:
        """``CASE METRIC: CHANGE (BEFORE -> AFTER), EVIDENCE: OUTCOME (threshold T); REASON``: one line."""
        m = METRICS[self.metric]
        numbers = f"{m.format_value(self.baseline)} -> {m.format_value(self.current)}"
        tail = f"; {self.reason}" if self.reason else ""
        if self.outcome in ("regressed", "improved"):
            tail = f" (threshold {self.threshold:.0%}){tail}"
        return f"{self.case_id} {self.metric}: {self.change} ({numbers}), {self.evidence}: {self.outcome}{tail}"

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON values (non-finite numbers become None), e.g. for ``extra_info`` and ``results.json``."""
        data: dict[str, Any] = {
            "case_id": self.case_id,
            "metric": self.metric,
            "outcome": self.outcome,
            "mode": self.mode,
            "baseline": self.baseline,
            "current": self.current,
            "ratio": self.ratio,
            "slowdown": self.slowdown,
            "threshold": self.threshold,
            "p_value": self.p_value,
            "level": self.level,
            "z": self.z,
            "noise": self.noise,
            "offset": self.offset,
            "resolves": self.resolves,
            "reason": self.reason,
            "message": self.message(),
        }
        if self.mode == "ab":
            data.update(
                base=self.baseline,
                head=self.current,
                pairs=self.pairs,
                t=self.z,
                ci_low=self.ci_low,
                ci_high=self.ci_high,
                ci_level=self.ci_level,
                spread=self.spread,
                log_ratios=list(self.log_ratios),
            )
        else:
            data.update(
                baseline_sessions=self.baseline_sessions,
                current_runs=self.current_runs,
                extra_measurements=self.extra_measurements,
            )
        cleaned: dict[str, Any] = jsondoc.clean(data)
        return cleaned


def verdict_of(d: Decision, *, baseline: float, current: float, offset: float = 0.0, **fields: Any) -> Verdict:
    """The verdict of a decided hypothesis; ``baseline``/``current`` in the metric's unit, ``fields`` the
    mode's own (sessions, pairs, ...)."""
    e = d.evidence
    metric = METRICS[e.metric]
    return Verdict(
        case_id=e.case_id,
        metric=e.metric,
        outcome=d.outcome,
        baseline=baseline,
        current=current,
        ratio=current / baseline if baseline else math.nan,
        slowdown=metric.slowdown(baseline, current) if baseline > 0 and current > 0 else math.nan,
        threshold=e.threshold,
        p_value=d.p_value,
        z=e.z,
        noise=e.se,
        resolves=d.resolves,
        reason=d.reason,
        level=d.level,
        offset=offset,
        **fields,
    )
