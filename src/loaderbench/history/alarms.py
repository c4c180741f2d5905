"""Failing a nightly job on its history: the regressions the newest runs opened (``--loader-history-fail``).

For each case and gated metric, the change-point detector (:func:`loaderbench.history.changepoints.detect`,
or any function of the same shape) runs over the case's series (each value with its within-run standard
uncertainty, ``(hi - lo) / (2 x 1.96)``).  A change point is an **open regression** when

* it is the series' newest change point, and it lies among the newest :data:`RECENT_RUNS` runs (a step is
  seen once :data:`~loaderbench.history.changepoints.MIN_SIZE` runs follow it, so a job fails on the few
  nights after it appeared, then the history has absorbed it as the new level);
* it goes the bad way for the metric (throughput down; TTFB, epoch stall, CPU time per sample, memory up);
* and the level the newest run sits at is beyond the gate's threshold for the case and metric
  (:class:`~loaderbench.gate.thresholds.Thresholds`: ``--loader-threshold``, else the metric's default)
  compared with the segment before it.

The newest level is the end of a straight line fitted (least squares) through the runs since the change
point, not their mean: after a step the line is flat and its end is their mean, but during a creep (2% per
run over 5 runs) the mean lags half the creep behind, while the line's end is where the creep has got to.
Its 95% interval combines the before-segment mean's standard error and the line end's (normal
approximation, on the log ratio).  The size is said as the gate says it (``1.11x slower``), with the commits
on each side (``1a2b3c..4d5e6f``) and what changed in the environment across it
(:func:`loaderbench.store.environment.changes`: ``torch 2.13.0 -> 2.14.1``).  Peak memory across a change of
how it was counted (``memory_kind``) is not judged: the pages counted changed, not the loader.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from loaderbench.formatting import fmt_change
from loaderbench.gate.thresholds import Thresholds
from loaderbench.history.changepoints import MIN_SIZE, ChangePoint, detect
from loaderbench.history.record import Point, Z
from loaderbench.history.store import History
from loaderbench.metrics import METRICS, Metric
from loaderbench.store.environment import changes

#: A change point older than this many runs no longer fails a job.
RECENT_RUNS = 2 * MIN_SIZE
#: The change-point detector: values (oldest first) and their uncertainties -> change points.
Detector = Callable[..., Sequence[ChangePoint]]


@dataclass(frozen=True, slots=True)
class OpenRegression:
    """A regression the newest runs opened in one case and metric (see the module docstring).

    ``slowdown`` is the newest level against the level before, as a factor above 1 when worse
    (:meth:`Metric.slowdown`), with its interval ``slowdown_lo`` .. ``slowdown_hi``."""

    case: str
    metric: str
    before: float
    now: float
    slowdown: float
    slowdown_lo: float
    slowdown_hi: float
    threshold: float
    p_value: float
    first_run: str
    commits: tuple[str | None, str | None]
    time: str
    environment_changes: tuple[str, ...]
    runs_since: int

    def sentence(self) -> str:
        metric = METRICS[self.metric]
        commits = f"{self.commits[0] or 'unknown'}..{self.commits[1] or 'unknown'}"
        env = "; ".join(self.environment_changes) if self.environment_changes else "none"
        return (
            f"{self.case} {self.metric}: {metric.describe_change(self.slowdown)} "
            f"(95% CI {metric.describe_change(self.slowdown_lo)} to {metric.describe_change(self.slowdown_hi)}; "
            f"{metric.format_value(self.before)} -> {metric.format_value(self.now)}; threshold "
            f"{fmt_change(self.threshold)}; p={self.p_value:.2g}) since run {self.first_run} at {self.time}, "
            f"{self.runs_since} run(s) ago; commits {commits}; environment changes: {env}"
        )


def uncertainty(p: Point) -> float:
    """A point's standard uncertainty in its unit, from its 95% interval."""
    return (p.hi - p.lo) / (2 * Z)


def open_regressions(
    history: History,
    *,
    cases: Sequence[str] | None = None,
    thresholds: Thresholds | None = None,
    detector: Detector = detect,
) -> list[OpenRegression]:
    """Every open regression of ``cases`` (default: every case of the history), in case and metric order."""
    thresholds = thresholds or Thresholds()
    out = []
    for case in cases if cases is not None else history.cases():
        for name in history.metrics(case):
            metric = METRICS.get(name)
            if metric is None:
                continue
            found = _open(history, case, metric, thresholds.get(case, metric), detector)
            if found is not None:
                out.append(found)
    return out


def _open(history: History, case: str, metric: Metric, threshold: float, detector: Detector) -> OpenRegression | None:
    points = history.series(case, metric.name)
    values = [p.value for p in points]
    found = detector(values, uncertainties=[uncertainty(p) for p in points])
    if not found:
        return None
    cp = found[-1]
    n = len(points)
    if cp.index < n - RECENT_RUNS or not _worse(metric, cp.before, cp.after):
        return None
    if metric.name == "peak_memory_bytes" and _kinds_differ(history, case, points, cp):
        return None
    start = _segment_start(found)
    before = values[start : cp.previous + 1]
    after = values[cp.index :]
    level, level_se = _line_end(after)
    mean = statistics.fmean(before)
    if mean <= 0 or level <= 0:
        return None
    slowdown = metric.slowdown(mean, level)
    if not slowdown > 1 + threshold:
        return None
    se_mean = statistics.stdev(before) / math.sqrt(len(before)) if len(before) >= 2 else 0.0
    spread = Z * math.sqrt((se_mean / mean) ** 2 + (level_se / level) ** 2)
    lo, hi = sorted((slowdown * math.exp(-spread), slowdown * math.exp(spread)))
    first, last_before = points[cp.index], points[cp.previous]
    return OpenRegression(
        case=case,
        metric=metric.name,
        before=mean,
        now=level,
        slowdown=slowdown,
        slowdown_lo=lo,
        slowdown_hi=hi,
        threshold=threshold,
        p_value=cp.p_value,
        first_run=first.run,
        commits=(last_before.commit, first.commit),
        time=first.time,
        environment_changes=tuple(_changes(last_before, first)),
        runs_since=n - cp.index,
    )


def _changes(before: Point, after: Point) -> list[str]:
    """What changed in the environment across two runs, the git commit aside (the commit range says it)."""
    return changes(replace(before.environment, git_commit=None), replace(after.environment, git_commit=None))


def _worse(metric: Metric, before: float, after: float) -> bool:
    return after < before if metric.higher_is_better else after > before


def _segment_start(found: Sequence[ChangePoint]) -> int:
    """Where the segment before the newest change point starts: after the change point before it."""
    return found[-2].index if len(found) >= 2 else 0


def _line_end(values: Sequence[float]) -> tuple[float, float]:
    """The end of the least-squares line through ``values`` (at the last one) and its standard error; the
    mean and its standard error for fewer than 3 values."""
    n = len(values)
    mean = statistics.fmean(values)
    if n < 3:
        return mean, (statistics.stdev(values) / math.sqrt(n) if n == 2 else 0.0)
    xs = range(n)
    x_mean = (n - 1) / 2
    sxx = sum((x - x_mean) ** 2 for x in xs)
    slope = sum((x - x_mean) * (v - mean) for x, v in zip(xs, values, strict=True)) / sxx
    residuals = [v - (mean + slope * (x - x_mean)) for x, v in zip(xs, values, strict=True)]
    s2 = sum(r * r for r in residuals) / (n - 2)
    end = n - 1
    return mean + slope * (end - x_mean), math.sqrt(s2 * (1 / n + (end - x_mean) ** 2 / sxx))


def _kinds_differ(history: History, case: str, points: Sequence[Point], cp: ChangePoint) -> bool:
    kinds = {r.run: r.memory_kind for r in history.runs(case)}
    return kinds.get(points[cp.previous].run) != kinds.get(points[cp.index].run)
