"""The A/B's sequential design: the pairs' noise, and the level each look may spend.

**Looks.**  The A/B adds one pair per block and looks at a case after each, from :data:`MIN_PAIRS` pairs
on.  Each hypothesis has its share of the job's level, ``alpha = job_alpha / m`` (``m``: the case x
metric hypotheses of the job, Bonferroni), and spends it in two parts: :data:`EARLY_SHARE` (10%) of it
split evenly over the early looks (pairs ``MIN_PAIRS .. max_pairs - 1``), so that a large change stops
the case early, and everything not yet spent at the last look (``max_pairs`` pairs, or the block after
which the budget stops the job: the decision to stop is made on time, never on the data).  The levels
of the looks sum to at most ``alpha``, so the chance that any look of an unchanged case says
``regressed`` is at most ``alpha`` (a union bound: no joint distribution of the looks is assumed).
An O'Brien-Fleming function (:func:`spent`) was tried first; under a union bound its first looks need
``p < 1e-11``, so a 2x change could not stop in 3 pairs.

**Unchanged** spends the power the same way (:func:`unchanged_margin`): its error, calling a
threshold-sized change ``unchanged``, is ``beta = 10%`` (the 90% power margin ``z_p = 1.28``), split
over the looks: :data:`UNCHANGED_EARLY_SHARE` (half) of it evenly over the early looks, the rest at the
last, so the looks together call a threshold-sized change ``unchanged`` at most 10% of the time (the
same union bound).  An early look rules a threshold-sized change out only at a stricter margin
(``|x| < T - z_(beta_k) * se``, ``z`` about 2.7 with 16 pairs) and never before :data:`MIN_PAIRS` pairs.
Half, not the 10% ``alpha`` spends early, because stopping an unchanged case early is what saves an
A/A job its pairs: seeded, 200 heads exactly 10% slower at a 10% threshold (pairs ±5%, no prior)
stopped ``unchanged`` 20 times (67 with the 90% margin at every look, the rule before this one, which in
measured A/B jobs stopped a 10% slower head ``unchanged`` after 2-3 pairs in 4 of 5 missed jobs);
A/A cases with pairs within ±1.4% still stop after 3-4 pairs.

**Futility.**  A metric whose pairs spread so much that neither outcome is within reach by the last look
stops early (:func:`futile`): ``unchanged`` out of reach (``T - z_p * sd / sqrt(max_pairs) <= |x|``)
and ``regressed`` too (even the change's upper bound ``|x| + 2 se`` is below what the last look could
resolve at this spread), with ``sd`` taken at its 10% lower confidence bound, so that a few pairs with
one disturbed among them do not stop a case quieter pairs could decide.  A metric decided at a look
stays decided (the A/B scheduler keeps its first verdict): a boundary once crossed is not un-crossed.
A futility stop never says ``regressed``, so it cannot raise the false-red
rate; it saves the pairs an A/A case of a noisy metric (time to first batch, epoch stall) would spend
to the limit for an ``inconclusive`` anyway.

**Noise.**  The pairs' log ratios ``x_i`` give ``s^2`` with ``n - 1`` degrees of freedom; the stored
between-process prior ``p`` of the workload (two processes per pair: ``2 p^2``) is worth ``d`` more.
They are pooled, ``((n-1) s^2 + d 2 p^2) / (n - 1 + d)`` with ``n - 1 + d`` degrees of freedom, unless
an F-test says the pairs are noisier than the prior (``s^2 / 2p^2`` above its 99% point): then the
prior does not describe this machine now and the pairs alone decide, with ``n - 1``.  Without a prior
(a user's own test) the pairs alone decide.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats as sps

from loaderbench.decision.rules import Z_POWER, quantile

#: Pairs before the first look: one of them must be expendable (the trimmed check of the A/B).
MIN_PAIRS = 3
#: The default largest number of pairs (``--loader-ab-pairs``).
DEFAULT_MAX_PAIRS = 16
#: The F-check's level: pairs this much more spread than the prior say the prior does not hold now.
F_LEVEL = 0.01
#: The share of a hypothesis's level its early looks spend (evenly); the last look spends the rest.
EARLY_SHARE = 0.1
#: The share of the unchanged error (beta) the early looks spend (evenly); the last look spends the rest.
UNCHANGED_EARLY_SHARE = 0.5
#: Futility judges the pairs' spread at this lower confidence bound (optimistic: it stops only the hopeless).
FUTILITY_SPREAD = 0.1


def spent(alpha: float, fraction: float) -> float:
    """The level an O'Brien-Fleming (Lan-DeMets) function spends by information ``fraction`` (one-sided)."""
    if fraction <= 0:
        return 0.0
    fraction = min(1.0, fraction)
    return float(2 * sps.norm.sf(sps.norm.isf(alpha / 2) / math.sqrt(fraction)))


def look_level(
    alpha: float, pairs: int, max_pairs: int, *, final: bool = False, early_share: float = EARLY_SHARE
) -> float:
    """The level look ``pairs`` may spend: ``alpha * early_share`` split over the early looks, or, at the
    final look (``final``, or ``pairs == max_pairs``), whatever the earlier looks left; 0 before
    :data:`MIN_PAIRS` pairs and past ``max_pairs``."""
    if pairs < MIN_PAIRS or pairs > max(max_pairs, MIN_PAIRS):
        return 0.0
    early_looks = max(1, max_pairs - MIN_PAIRS)
    each = alpha * early_share / early_looks
    if final or pairs >= max_pairs:
        return alpha - each * (pairs - MIN_PAIRS)
    return each


def unchanged_margin(
    threshold: float, se: float, dof: float, pairs: int, max_pairs: int, *, final: bool, z_power: float = Z_POWER
) -> float:
    """The largest ``|x|`` that look ``pairs`` may call ``unchanged`` (``T - z_(beta_k) * se``, see the module
    docstring); ``-inf`` before :data:`MIN_PAIRS` pairs: no look there."""
    beta_k = look_level(float(sps.norm.sf(z_power)), pairs, max_pairs, final=final, early_share=UNCHANGED_EARLY_SHARE)
    if beta_k <= 0:
        return -math.inf
    return math.log1p(threshold) - quantile(beta_k, dof) * se


@dataclass(frozen=True, slots=True)
class PairNoise:
    """The standard deviation of one pair's log ratio, the degrees of freedom it is known with, and whence."""

    sd: float
    dof: float
    note: str


def pair_noise(xs: Sequence[float], prior_sigma: float | None, prior_dof: float) -> PairNoise:
    """The pairs' noise, pooled with the prior behind the F-check (see the module docstring)."""
    n = len(xs)
    s2 = statistics.variance(xs) if n >= 2 else math.nan
    if prior_sigma is None or prior_sigma <= 0 or prior_dof < 1:
        return PairNoise(math.sqrt(s2) if n >= 2 else math.inf, float(max(0, n - 1)), "the pairs alone")
    p2 = 2 * prior_sigma**2
    if n < 2:
        return PairNoise(math.sqrt(p2), prior_dof, "the prior alone")
    if s2 / p2 > float(sps.f.isf(F_LEVEL, n - 1, prior_dof)):
        return PairNoise(math.sqrt(s2), float(n - 1), "the pairs alone: noisier than the stored prior")
    pooled = ((n - 1) * s2 + prior_dof * p2) / (n - 1 + prior_dof)
    return PairNoise(math.sqrt(pooled), n - 1 + prior_dof, "the pairs pooled with the stored prior")


def futile(x: float, sd: float, dof: float, pairs: int, threshold: float, alpha: float, max_pairs: int) -> bool:
    """Whether more pairs, up to ``max_pairs``, cannot decide a metric now at ``pairs`` pairs with mean log
    change ``x`` and per-pair spread ``sd`` (see the module docstring); False before :data:`MIN_PAIRS`."""
    if pairs < MIN_PAIRS or pairs >= max_pairs or not (math.isfinite(sd) and sd > 0 and math.isfinite(x)):
        return False
    df = dof if math.isfinite(dof) and dof >= 1 else math.inf
    zp = quantile(float(sps.norm.sf(Z_POWER)), df)
    # an optimistic spread (its 10% lower confidence bound): three pairs with one disturbed among them must
    # not stop a case that quieter pairs could still decide
    if math.isfinite(df):
        sd *= math.sqrt(float(sps.chi2.ppf(FUTILITY_SPREAD, df)) / df)
    last = sd / math.sqrt(max_pairs)
    if abs(x) < math.log1p(threshold) - zp * last:
        return False  # unchanged is within reach
    reach = (quantile(alpha * (1 - EARLY_SHARE), df) + zp) * last
    return abs(x) + 2 * sd / math.sqrt(pairs) < reach
