"""Change points in one case's series of runs: E-Divisive means with a Student t-test, windowed.

The method is the one Hunter (Apache Otava; Fleming et al., arXiv 2301.03034) uses, written here from
its description on numpy and scipy:

1. **Split.**  The series is cut into windows of ``window`` points on a fixed grid, each overlapping the
   next by half.  In each window, E-Divisive means proposes the split that maximises the energy
   distance between the two sides (Matteson and James' ``Q-hat`` with exponent 1, the right side running
   to the window's end); a Student t-test (pooled variance) of the two sides decides whether the split stands, at
   a lenient ``10 * alpha``, and accepted splits are split again, recursively, no side shorter than
   ``min_size``.  The permutation test of the original E-Divisive is replaced by the t-test, as in Hunter:
   deterministic and cheap.
2. **Merge.**  Every candidate is tested again between its neighbours (the t-test of the segment before
   it against the segment after it); the weakest one is removed while one fails ``alpha`` (default
   0.001) or two lie closer than ``min_size``, and its neighbours are tested again.

Why this method rather than asv's weighted L1 Potts fit: its significance is a p-value a reader can
judge (the Potts fit's penalty has no such meaning); its fixed window grid makes it incremental
(:func:`update` re-scans only the windows the new runs and the last segment touch, which is what lets a
nightly job re-run it over a long history); and it is the method with a published record on CI
performance data (E-Divisive at MongoDB, Hunter at DataStax).  Each run's within-run uncertainty, which
the Potts fit uses as a weight, is used here as a floor on each segment's variance in the t-test
(``uncertainties``): a run of near-identical values cannot make a step smaller than the runs' own
error significant.

Values are taken as given (no logarithm); each change point's size is relative (``after / before - 1``)
with a 95% interval (delta method on the log ratio when both means are positive).  NaN or infinite values
are dropped and the change point's ``index`` still counts them (it is an index into ``values``).
A series shorter than ``2 * min_size`` finite values, a constant one and a flat noisy one give none.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import stats as spstats

from loaderbench.errors import UsageError

#: The default significance level of a change point (the merge step's t-test).
ALPHA = 0.001
#: The split step accepts a candidate at this many times ``alpha`` (the merge decides).
SPLIT_LENIENCY = 10.0
#: The default fewest finite points on each side of a change point.
MIN_SIZE = 4
#: The default window of the split step (in finite points); consecutive windows overlap by half.
WINDOW = 50
#: :func:`update` re-scans the last segment up to this many windows before the new points.
REACH = 4
#: The confidence level of each change point's interval on its size.
CONFIDENCE = 0.95
#: Relative floor of a segment's standard deviation, so that a constant series has no change point
#: from rounding (1e-9 of the larger mean).
_RELATIVE_FLOOR = 1e-9

#: A series of values (or of their uncertainties): a sequence of numbers or a 1-D numpy array.
Values = Sequence[float] | NDArray[np.floating]


@dataclass(frozen=True, slots=True)
class ChangePoint:
    """A change of the series' mean between two runs.

    ``index`` is the first point of the new segment and ``previous`` the last point of the old one (both
    indices into the values given; they differ by more than 1 only across dropped NaN values).
    ``before`` and ``after`` are the means of the segments on each side (up to the neighbouring change
    points), ``n_before``/``n_after`` their finite points; ``change`` is ``after / before - 1`` (for a
    negative mean, ``(after - before) / |before|``; NaN for a zero one) with its
    :data:`CONFIDENCE` interval ``change_lo`` .. ``change_hi``; ``p_value`` is the two-sided t-test of
    the two segments."""

    index: int
    previous: int
    before: float
    after: float
    change: float
    change_lo: float
    change_hi: float
    p_value: float
    n_before: int
    n_after: int


class _Series:
    """The finite values, their positions in the original series, and prefix sums for segment stats.

    The values are held as ``z = x / scale - centre`` (``scale``: the largest magnitude, ``centre``: the
    median after scaling), so that no sum overflows and the variance's prefix sums lose no precision to a
    large common level; every statistic is invariant to it, and :meth:`level` maps a mean back."""

    def __init__(self, values: Values, uncertainties: Values | None) -> None:
        raw = np.asarray(values, dtype=np.float64).ravel()
        finite = np.isfinite(raw)
        if uncertainties is not None:
            u = np.asarray(uncertainties, dtype=np.float64).ravel()
            if u.shape != raw.shape:
                raise UsageError(
                    f"uncertainties=<{u.size} values>: there are {raw.size} values; give one uncertainty per "
                    "value (or None)."
                )
            u = np.where(np.isfinite(u) & (u > 0), u, 0.0)[finite]
        else:
            u = np.zeros(int(finite.sum()))
        self.positions = np.flatnonzero(finite)
        x = raw[finite]
        self.n = int(x.size)
        biggest = float(np.max(np.abs(x))) if self.n else 0.0
        self.scale = biggest if biggest > 0 else 1.0
        y = x / self.scale
        self.centre = float(np.median(y)) if self.n else 0.0
        self.z = y - self.centre
        u = np.minimum(u / self.scale, 1e100)  # an uncertainty beyond any value's size is as good as infinite
        self._s1 = np.concatenate(([0.0], np.cumsum(self.z)))
        self._s2 = np.concatenate(([0.0], np.cumsum(self.z * self.z)))
        self._u2 = np.concatenate(([0.0], np.cumsum(u * u)))

    def stats(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Count, mean and floored variance (in ``z``) of the segments ``[a, b)`` (arrays of equal shape)."""
        n = (b - a).astype(np.float64)
        mean = (self._s1[b] - self._s1[a]) / n
        ss = (self._s2[b] - self._s2[a]) - n * mean * mean
        var = np.maximum(ss, 0.0) / np.maximum(n - 1.0, 1.0)
        floor = np.maximum((self._u2[b] - self._u2[a]) / n, (_RELATIVE_FLOOR * np.abs(mean + self.centre)) ** 2)
        return n, mean, np.maximum(np.maximum(var, floor), np.finfo(np.float64).tiny)

    def relative(self, mean: float) -> float:
        """A mean in ``z`` as a level relative to the scale (``x / scale``)."""
        return mean + self.centre

    def test(self, a: np.ndarray, c: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Two-sided Student t-test p-values of ``[a, c)`` against ``[c, b)``."""
        return _student(self.stats(a, c), self.stats(c, b))[0]


def _student(
    left: tuple[np.ndarray, np.ndarray, np.ndarray], right: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Student's two-sample t-test (pooled variance): p-value, pooled variance and degrees of freedom."""
    n1, m1, v1 = left
    n2, m2, v2 = right
    df = np.maximum(n1 + n2 - 2.0, 1.0)
    pooled = ((n1 - 1) * v1 + (n2 - 1) * v2) / df
    t = np.abs(m2 - m1) / np.sqrt(pooled * (1.0 / n1 + 1.0 / n2))
    return 2.0 * spstats.t.sf(t, df), pooled, df


def _best_split(prefix: np.ndarray, a: int, b: int, min_size: int) -> int:
    """The split of ``[a, b)`` (window-relative) that maximises E-Divisive's Q-hat; ``prefix`` is the 2-D
    prefix sum of the window's distance matrix (``prefix[i, j]`` = sum of ``|x_k - x_l|``, k < i, l < j)."""

    def block(r0: int | np.ndarray, r1: int | np.ndarray, c0: int | np.ndarray, c1: int | np.ndarray) -> np.ndarray:
        return np.asarray(prefix[r1, c1] - prefix[r0, c1] - prefix[r1, c0] + prefix[r0, c0])

    tau = np.arange(a + min_size, b - min_size + 1)
    m = (tau - a).astype(np.float64)
    k = (b - tau).astype(np.float64)
    cross = block(a, tau, tau, b)
    within_left = block(a, tau, a, tau) / 2.0
    within_right = block(tau, b, tau, b) / 2.0
    energy = 2.0 * cross / (m * k) - within_left / (m * (m - 1) / 2.0) - within_right / (k * (k - 1) / 2.0)
    q = m * k / (m + k) * energy
    return int(tau[int(np.argmax(q))])


def _window_candidates(series: _Series, start: int, end: int, min_size: int, threshold: float) -> set[int]:
    """E-Divisive's recursive bisection of ``[start, end)``: every split significant at ``threshold``."""
    x = series.z[start:end]
    distance = np.abs(x[:, None] - x[None, :])
    prefix = np.zeros((x.size + 1, x.size + 1))
    prefix[1:, 1:] = distance.cumsum(0).cumsum(1)
    found: set[int] = set()
    stack = [(0, x.size)]
    while stack:
        a, b = stack.pop()
        if b - a < 2 * min_size:
            continue
        tau = _best_split(prefix, a, b, min_size)
        p = series.test(np.array([start + a]), np.array([start + tau]), np.array([start + b]))[0]
        if p < threshold:
            found.add(start + tau)
            stack.extend([(a, tau), (tau, b)])
    return found


def _grid(n: int, window: int) -> list[tuple[int, int]]:
    """The split step's windows over ``n`` points: starts at multiples of ``window // 2``, the last one
    reaching the end."""
    step = max(1, window // 2)
    out = []
    start = 0
    while True:
        out.append((start, min(start + window, n)))
        if start + window >= n:
            return out
        start += step


def _merge(series: _Series, candidates: Sequence[int], alpha: float, min_size: int) -> list[int]:
    """Hunter's merge: drop the weakest candidate while one fails ``alpha`` or two are too close."""
    cps = sorted(set(candidates))
    while cps:
        c = np.asarray(cps)
        left = np.concatenate(([0], c[:-1]))
        right = np.concatenate((c[1:], [series.n]))
        p = series.test(left, c, right)
        worst = int(np.argmax(p))
        if p[worst] >= alpha:
            del cps[worst]
            continue
        gaps = np.diff(np.concatenate(([0], c, [series.n])))
        short = int(np.argmin(gaps))
        if gaps[short] >= min_size:
            return cps
        # the segment before cps[short] (or after the last one) is too short: drop the weaker of its ends
        ends = [i for i in (short - 1, short) if 0 <= i < len(cps)]
        del cps[max(ends, key=lambda i: (p[i], i))]
    return cps


def _describe(series: _Series, cps: Sequence[int]) -> tuple[ChangePoint, ...]:
    if not cps:
        return ()
    c = np.asarray(cps)
    left = np.concatenate(([0], c[:-1]))
    right = np.concatenate((c[1:], [series.n]))
    before, after = series.stats(left, c), series.stats(c, right)
    p, pooled, df = _student(before, after)
    t = spstats.t.ppf(0.5 + CONFIDENCE / 2, df)
    out = []
    for i, pos in enumerate(cps):
        # ratios in units of the scale (no overflow), levels back in the values' unit
        mb, ma = series.relative(float(before[1][i])), series.relative(float(after[1][i]))
        if mb > 0 and ma > 0:
            log_se = math.sqrt(pooled[i] / before[0][i] / mb**2 + pooled[i] / after[0][i] / ma**2)
            ratio = math.log(ma / mb)
            lo, hi = _expm1(ratio - t[i] * log_se), _expm1(ratio + t[i] * log_se)
        elif mb != 0:
            se = math.sqrt(pooled[i] / before[0][i] + pooled[i] / after[0][i])
            lo, hi = sorted(((ma - mb - t[i] * se) / abs(mb), (ma - mb + t[i] * se) / abs(mb)))
        else:
            lo = hi = math.nan
        out.append(
            ChangePoint(
                index=int(series.positions[pos]),
                previous=int(series.positions[pos - 1]),
                before=mb * series.scale,
                after=ma * series.scale,
                change=(ma - mb) / abs(mb) if mb != 0 else math.nan,
                change_lo=lo,
                change_hi=hi,
                p_value=float(p[i]),
                n_before=int(before[0][i]),
                n_after=int(after[0][i]),
            )
        )
    return tuple(out)


def _expm1(x: float) -> float:
    """``exp(x) - 1``, infinite past what a float holds (a change of 1e300 times has no finite size)."""
    try:
        return math.expm1(x)
    except OverflowError:
        return math.inf


def _check(alpha: float, min_size: int, window: int) -> None:
    if not 0 < alpha < 1:
        raise UsageError(f"alpha={alpha!r}: a significance level is between 0 and 1; use e.g. {ALPHA}.")
    if min_size < 2:
        raise UsageError(f"min_size={min_size!r}: a segment needs 2 points or more for its variance; use e.g. 4.")
    if window < 4 * min_size:
        raise UsageError(
            f"window={window!r}: a window must hold 4 x min_size={min_size} points, so that a change in it "
            f"has min_size points on each side wherever it falls; use {4 * min_size} or more, e.g. {WINDOW}."
        )


def detect(
    values: Values,
    *,
    uncertainties: Values | None = None,
    alpha: float = ALPHA,
    min_size: int = MIN_SIZE,
    window: int = WINDOW,
) -> tuple[ChangePoint, ...]:
    """The change points of ``values`` (oldest first), oldest first.

    ``uncertainties``: each value's standard uncertainty (its within-run standard error, in the values'
    unit; NaN, 0 or None: none), a floor on each segment's variance in the t-test.  ``alpha``: the
    significance level; ``min_size``: the fewest finite points on each side of a change point;
    ``window``: the split step's window (see the module docstring)."""
    _check(alpha, min_size, window)
    series = _Series(values, uncertainties)
    if series.n < 2 * min_size:
        return ()
    candidates: set[int] = set()
    for start, end in _grid(series.n, window):
        candidates |= _window_candidates(series, start, end, min_size, alpha * SPLIT_LENIENCY)
    return _describe(series, _merge(series, sorted(candidates), alpha, min_size))


def update(
    previous: Sequence[ChangePoint],
    values: Values,
    *,
    previous_length: int,
    uncertainties: Values | None = None,
    alpha: float = ALPHA,
    min_size: int = MIN_SIZE,
    window: int = WINDOW,
) -> tuple[ChangePoint, ...]:
    """:func:`detect` over ``values`` when ``previous`` is its result over ``values[:previous_length]``
    with the same settings, re-scanning only the tail.

    The windows of the split step lie on a fixed grid, so those that end before the old series did are
    the same as before.  Re-scanned are the windows that reach into the new points, and those that reach
    into the last segment (since the last change point), whose candidates more points after them can make
    significant, but at most :data:`REACH` windows before the new points: about ``2 * window`` to
    ``REACH * window`` points however long the history.  The change points before that are kept from
    ``previous``; the merge runs over them and the new candidates.  The answer equals a full :func:`detect`
    unless a candidate the earlier merge dropped would survive the new one: one more than ``REACH``
    windows back in a long last segment, or one whose neighbour moved (``tests/history/test_changepoints.py`` and
    ``python -m loaderbench.tools.changepoint_figures`` measure how rare that is)."""
    _check(alpha, min_size, window)
    if not 0 <= previous_length <= len(values):
        raise UsageError(
            f"previous_length={previous_length!r}: the series has {len(values)} values and grows by appending; "
            "give the length the previous result was computed on."
        )
    series = _Series(values, uncertainties)
    if series.n < 2 * min_size:
        return ()
    old_n = int(np.searchsorted(series.positions, previous_length))  # finite points in the old series
    grid = _grid(series.n, window)
    old = [int(p) for p in np.searchsorted(series.positions, [cp.index for cp in previous])]
    # windows that ended past the old series' end (or were cut short by it) are split again, and so is the
    # last segment, up to REACH windows back
    first_changed = next((start for start, _ in grid if start + window > old_n), series.n)
    start = min(first_changed, max(old[-1] if old else 0, first_changed - REACH * window))
    candidates = {p for p in old if p < start}
    for begin, end in grid:
        if end > start:
            found = _window_candidates(series, begin, end, min_size, alpha * SPLIT_LENIENCY)
            candidates |= {c for c in found if c >= start}
    return _describe(series, _merge(series, sorted(candidates), alpha, min_size))
