"""What the history page and its Markdown summary show: each case's series per metric with its change points
and environment changes, and the open regressions.

An **open regression** is the newest change point of a case's series for a metric when it made the case
worse, the way the gate reads each metric (:meth:`loaderbench.metrics.Metric.slowdown`: samples/s down is
worse; TTFB, epoch stall, CPU time per sample and memory up are worse): the series has not recovered since.
Each says whether it is beyond the gate's threshold for the metric (``--loader-threshold`` syntax,
:class:`~loaderbench.gate.thresholds.Thresholds`; the metric's default without one), and whether
``--loader-history-fail`` fails a nightly job on it now (:func:`loaderbench.history.alarms.open_regressions`:
it is recent and the newest level is beyond the threshold).  The newest are first.

Change points come from :func:`loaderbench.history.changepoints.detect`, each run's value weighted by its
within-run uncertainty (:func:`loaderbench.history.alarms.uncertainty`, from the record's 95% interval).
An environment change is drawn where a run's environment differs from the run before it in the series
(:func:`loaderbench.store.environment.changes`, the git commit aside: the commit range says it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from loaderbench.gate.thresholds import Thresholds
from loaderbench.history.alarms import open_regressions, uncertainty
from loaderbench.history.changepoints import ChangePoint, detect
from loaderbench.history.record import Point, parse_time
from loaderbench.history.store import History
from loaderbench.metrics import METRICS, Metric
from loaderbench.store.environment import changes
from loaderbench.store.fingerprint import Fingerprint


@dataclass(frozen=True, slots=True)
class EnvironmentChange:
    """The environment changed between ``points[index - 1]`` and ``points[index]`` of a series."""

    index: int
    changes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Series:
    """One case's runs for one metric, with what was found in them."""

    case: str
    metric: Metric
    workload: str
    device: str
    points: tuple[Point, ...]
    change_points: tuple[ChangePoint, ...]
    environment: tuple[EnvironmentChange, ...]

    @property
    def simulated(self) -> bool:
        return any(p.simulated for p in self.points)

    @property
    def anchor(self) -> str:
        """The HTML id of this series' graph."""
        return f"{self.case}--{self.metric.name}"

    def worse(self, cp: ChangePoint) -> bool:
        return self.metric.slowdown(cp.before, cp.after) > 1


@dataclass(frozen=True, slots=True)
class Regression:
    """An open regression (see the module docstring): the newest change point of ``series``, which made it
    worse by ``slowdown`` (a factor above 1, :meth:`Metric.slowdown`)."""

    series: Series
    change_point: ChangePoint
    slowdown: float
    threshold: float
    #: Whether ``--loader-history-fail`` fails a job on it now (:mod:`loaderbench.history.alarms`: recent, and
    #: the newest level beyond the threshold).
    fails_job: bool = False

    @property
    def beyond_threshold(self) -> bool:
        return self.slowdown > 1 + self.threshold

    @property
    def first(self) -> Point:
        """The first run of the new level."""
        return self.series.points[self.change_point.index]

    @property
    def last_before(self) -> Point:
        return self.series.points[self.change_point.previous]

    @property
    def runs_since(self) -> int:
        return len(self.series.points) - self.change_point.index

    @property
    def environment_changes(self) -> tuple[str, ...]:
        return tuple(_changes(self.last_before, self.first))


@dataclass(frozen=True, slots=True)
class Overview:
    """The page's content: the hardware, every series (case order, then the gate's metric order) and the open
    regressions (newest first)."""

    hardware: Fingerprint
    series: tuple[Series, ...]
    regressions: tuple[Regression, ...]
    runs: int
    first_time: str
    last_time: str
    notes: tuple[str, ...] = ()

    def workloads(self) -> list[str]:
        return sorted({s.workload for s in self.series})

    def devices(self) -> list[str]:
        return sorted({s.device for s in self.series})

    def metrics(self) -> list[Metric]:
        names = {s.metric.name for s in self.series}
        return [m for m in METRICS.values() if m.name in names]

    @property
    def simulated(self) -> bool:
        return any(s.simulated for s in self.series)


def _changes(before: Point, after: Point) -> list[str]:
    return changes(
        dataclasses.replace(before.environment, git_commit=None),
        dataclasses.replace(after.environment, git_commit=None),
    )


def series_of(history: History, case: str, metric: Metric) -> Series:
    points = history.series(case, metric.name)
    last = history.runs(case)[-1]
    found = detect([p.value for p in points], uncertainties=[uncertainty(p) for p in points])
    environment = []
    for i in range(1, len(points)):
        diff = _changes(points[i - 1], points[i])
        if diff:
            environment.append(EnvironmentChange(i, tuple(diff)))
    return Series(case, metric, last.workload, last.device, points, found, tuple(environment))


def build(history: History, *, thresholds: Thresholds | None = None, metrics: Sequence[str] = ()) -> Overview:
    """The overview of ``history``: every case and gated metric (only ``metrics`` when given)."""
    thresholds = thresholds or Thresholds()
    every: list[Series] = []
    for case in history.cases():
        for name in history.metrics(case):
            metric = METRICS.get(name)
            if metric is not None and (not metrics or name in metrics):
                every.append(series_of(history, case, metric))
    failing = {(o.case, o.metric) for o in open_regressions(history, thresholds=thresholds)}
    regressions = []
    for s in every:
        if s.change_points and s.worse(s.change_points[-1]):
            cp = s.change_points[-1]
            slowdown = s.metric.slowdown(cp.before, cp.after)
            fails = (s.case, s.metric.name) in failing
            regressions.append(Regression(s, cp, slowdown, thresholds.get(s.case, s.metric), fails))
    regressions.sort(key=lambda r: (parse_time(r.first.time), r.slowdown), reverse=True)
    times = sorted((r.time for r in history.records), key=parse_time)
    return Overview(
        hardware=history.hardware,
        series=tuple(every),
        regressions=tuple(regressions),
        runs=len({r.run for r in history.records}),
        first_time=times[0] if times else "",
        last_time=times[-1] if times else "",
        notes=tuple(history.notes),
    )
