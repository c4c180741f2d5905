"""Robust summary statistics over raw per-round values."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def median(values: Sequence[float]) -> float:
    """The median, or NaN for no values."""
    return statistics.median(values) if values else math.nan


def quartiles(values: Sequence[float]) -> tuple[float, float]:
    """(Q1, Q3) by linear interpolation (numpy's default); one value gives (v, v)."""
    if not values:
        return math.nan, math.nan
    if len(values) == 1:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def iqr(values: Sequence[float]) -> float:
    """Interquartile range."""
    q1, q3 = quartiles(values)
    return q3 - q1


def relative_iqr(values: Sequence[float]) -> float:
    """IQR / median: the harness's instability measure (NaN when undefined)."""
    m = median(values)
    if not values or m == 0 or math.isnan(m):
        return math.nan
    return iqr(values) / abs(m)


def cv(values: Sequence[float]) -> float:
    """Coefficient of variation (sample stdev / mean); NaN with fewer than two values."""
    if len(values) < 2:
        return math.nan
    mean = statistics.fmean(values)
    return statistics.stdev(values) / mean if mean else math.nan


def mann_whitney_greater(a: Sequence[float], b: Sequence[float]) -> float:
    """One-sided Mann-Whitney U p-value that ``a`` tends to be greater than ``b`` (1.0 when untestable)."""
    if not a or not b:
        return 1.0
    from scipy.stats import mannwhitneyu  # scipy.stats takes ~1.5 s to import: only where a test is made

    return float(mannwhitneyu(list(a), list(b), alternative="greater").pvalue)


def clearly_greater(a: Sequence[float], b: Sequence[float], *, by: float, alpha: float) -> bool:
    """Whether samples ``a`` are greater than ``b`` by more than the fraction ``by`` and the samples say so: the
    median of ``a`` exceeds ``(1 + by)`` times that of ``b``, and a one-sided Mann-Whitney U test gives
    ``p <= alpha``.  A NaN median, a non-positive ``b`` or too few samples for the test to reach ``alpha``
    (fewer than 3 a side at 0.05) is "not clearly greater".  The one rule by which ``loaderbench tune`` tells two
    configs apart and the report's advice calls one case faster than another."""
    ma, mb = median(a), median(b)
    if math.isnan(ma) or math.isnan(mb) or mb <= 0 or not ma > mb * (1 + by):
        return False
    return mann_whitney_greater(a, b) <= alpha


def exp(x: float) -> float:
    """``math.exp`` that gives ``inf`` instead of raising ``OverflowError`` (a noise so large that the change it
    could resolve is beyond any float is "cannot resolve", not a crash)."""
    return math.inf if x > 700 else math.exp(x)


def expm1(x: float) -> float:
    """``math.expm1`` that gives ``inf`` instead of raising ``OverflowError``."""
    return math.inf if x > 700 else math.expm1(x)
