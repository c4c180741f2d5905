"""Drift from a history: each case's between-run noise, measured over days, for the stored gate.

A baseline's few sessions, recorded within minutes, cannot show how a case wanders from one day to the next;
the priors file's figures were measured once, on one machine of the class.  A history holds every nightly
run, so it measures that between-period noise per case and metric:

* the runs' log values, split into segments at the change points the detector finds
  (:func:`loaderbench.history.changepoints.detect`: a step, a regression or a torch upgrade is a change of
  level, not noise);
* each run's deviation from its segment's median, and their robust standard deviation,
  ``sigma = 1.4826 x MAD`` (a few disturbed nights do not inflate it);
* worth ``dof = 0.37 x (runs - segments)`` degrees of freedom: the MAD's efficiency at the normal is 37%
  of the standard deviation's, so it is worth that share of the runs.

A case needs :data:`MIN_RUNS` runs of a metric for a figure.  :func:`offset_drift` measures the same way the
between-run noise of a run's common offset (the median over its cases), which is what the priors file's
``[offset]`` stands for.  The gate (``--loader-history`` in a gate run) pools each figure with its stored
counterpart conservatively (:func:`loaderbench.gate.priors.pooled`): a noisier history widens the gate; a
quieter one narrows it only with the degrees of freedom to back it.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Callable, Sequence

from loaderbench.decision.job import MIN_OFFSET_CASES
from loaderbench.gate.priors import Prior
from loaderbench.history.changepoints import ChangePoint, detect
from loaderbench.history.store import History

#: Runs of a case and metric below which the history gives no figure.
MIN_RUNS = 8
#: The MAD's efficiency at the normal distribution, relative to the standard deviation.
MAD_EFFICIENCY = 0.37
#: 1 / the normal's third quartile: MAD x this estimates the standard deviation.
MAD_TO_SD = 1.4826


def spread(values: Sequence[float], cuts: Sequence[int] = ()) -> tuple[float, float]:
    """``(sigma, dof)`` of positive ``values`` (log space) around their segments' medians, the segments
    starting at ``cuts``; ``(nan, 0)`` with fewer than :data:`MIN_RUNS` values."""
    logs = [math.log(v) for v in values if v > 0 and math.isfinite(v)]
    if len(logs) < MIN_RUNS or len(logs) != len(values):
        return math.nan, 0.0
    segments = _segments(len(logs), cuts)
    deviations: list[float] = []
    for a, b in segments:
        centre = statistics.median(logs[a:b])
        deviations += [v - centre for v in logs[a:b]]
    mid = statistics.median(deviations)
    sigma = MAD_TO_SD * statistics.median(abs(d - mid) for d in deviations)
    return sigma, MAD_EFFICIENCY * max(0, len(logs) - len(segments))


def _segments(n: int, cuts: Sequence[int]) -> list[tuple[int, int]]:
    """``[a, b)`` of each segment of ``n`` values cut at ``cuts`` (each a segment's first index)."""
    bounds = [0, *sorted({c for c in cuts if 0 < c < n}), n]
    return list(itertools.pairwise(bounds))


def _deviations(
    history: History, case: str, metric: str, detector: Callable[..., Sequence[ChangePoint]]
) -> dict[str, float]:
    """Each run's log deviation from its segment's median, by run id (empty below :data:`MIN_RUNS` runs)."""
    points = history.series(case, metric)
    values = [p.value for p in points]
    if len(values) < MIN_RUNS or not all(v > 0 and math.isfinite(v) for v in values):
        return {}
    out: dict[str, float] = {}
    for a, b in _segments(len(values), [cp.index for cp in detector(values)]):
        centre = statistics.median(math.log(v) for v in values[a:b])
        out.update((p.run, math.log(p.value) - centre) for p in points[a:b])
    return out


def case_drift(
    history: History,
    *,
    cases: Sequence[str] | None = None,
    detector: Callable[..., Sequence[ChangePoint]] = detect,
) -> dict[tuple[str, str], Prior]:
    """Each case's and metric's between-run noise, ``(case, metric) -> Prior(sigma, dof)``, for those with
    :data:`MIN_RUNS` runs or more (``cases``: only these; a case the history lacks is left out)."""
    out = {}
    known = set(history.cases())
    for case in cases if cases is not None else sorted(known):
        if case not in known:
            continue
        for metric in history.metrics(case):
            values = [p.value for p in history.series(case, metric)]
            if len(values) < MIN_RUNS:
                continue
            cuts = [cp.index for cp in detector(values)]
            sigma, dof = spread(values, cuts)
            if math.isfinite(sigma) and sigma > 0 and dof >= 1:
                out[(case, metric)] = Prior(sigma, dof)
    return out


def offset_drift(history: History, *, detector: Callable[..., Sequence[ChangePoint]] = detect) -> dict[str, Prior]:
    """Each metric's between-run noise of a run's *common* offset, ``metric -> Prior(sigma, dof)``: per run, the
    median over its cases of their deviations from their segments' medians (runs with fewer than
    :data:`MIN_OFFSET_CASES` such cases aside); then ``1.4826 x MAD`` over the runs, worth ``0.37 x (runs - 1)``.
    This is what the gate's ``[offset]`` prior stands for (the machine's drift between recordings)."""
    by_metric: dict[str, dict[str, list[float]]] = {}
    for case in history.cases():
        for metric in history.metrics(case):
            runs = by_metric.setdefault(metric, {})
            for run, d in _deviations(history, case, metric, detector).items():
                runs.setdefault(run, []).append(d)
    out = {}
    for metric, runs in by_metric.items():
        offsets = [statistics.median(ds) for ds in runs.values() if len(ds) >= MIN_OFFSET_CASES]
        if len(offsets) < MIN_RUNS:
            continue
        mid = statistics.median(offsets)
        sigma = MAD_TO_SD * statistics.median(abs(o - mid) for o in offsets)
        dof = MAD_EFFICIENCY * (len(offsets) - 1)
        if sigma > 0 and dof >= 1:
            out[metric] = Prior(sigma, dof)
    return out
