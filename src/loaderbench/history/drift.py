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

A case needs :data:`MIN_RUNS` runs of a metric for a figure.  The gate (``--loader-history`` in a gate run)
pools each figure with the workload's stored prior conservatively (:func:`loaderbench.gate.priors.pooled`):
a noisier history widens the gate; a quieter one narrows it only with the degrees of freedom to back it.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Callable, Sequence

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
    bounds = [0, *sorted(c for c in cuts if 0 < c < len(logs)), len(logs)]
    deviations: list[float] = []
    segments = 0
    for a, b in itertools.pairwise(bounds):
        if b > a:
            centre = statistics.median(logs[a:b])
            deviations += [v - centre for v in logs[a:b]]
            segments += 1
    mid = statistics.median(deviations)
    sigma = MAD_TO_SD * statistics.median(abs(d - mid) for d in deviations)
    return sigma, MAD_EFFICIENCY * max(0, len(logs) - segments)


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
