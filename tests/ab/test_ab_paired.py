"""The A/B's paired statistics on synthetic pairs: known effects and noise in both directions, no effect,
too few or too noisy pairs, a drift across blocks that the ABBA schedule cancels, and one outlier pair."""

from __future__ import annotations

import json
import math
import random

import pytest

from loaderbench.ab.paired import ABVerdict, decide_runs
from loaderbench.ab.paired import decide as decide_at
from loaderbench.ab.records import snapshot_variables, variable_changes
from loaderbench.ab.schedule import arm_order
from loaderbench.decision.sequential import look_level
from loaderbench.formatting import fmt_change
from loaderbench.gate.priors import Prior
from loaderbench.measurement import Measurement
from loaderbench.metrics import METRICS

THROUGHPUT = METRICS["samples_per_s"]


def pairs(
    n: int, *, effect: float, noise: float, seed: int = 0, value: float = 1000.0
) -> tuple[list[float], list[float]]:
    """``n`` pairs of throughput: the head is ``effect`` times the base, each run with log-normal ``noise``."""
    rng = random.Random(seed)
    base = [value * math.exp(rng.gauss(0, noise)) for _ in range(n)]
    head = [value * effect * math.exp(rng.gauss(0, noise)) for _ in range(n)]
    return base, head


#: A job of 4 hypotheses at the engine's 1% per job; 16 looks at most.
ALPHA, MAX_PAIRS = 0.01 / 4, 16


def decide(
    case: str, metric: object, base: list[float], head: list[float], *, threshold: float, **kw: object
) -> ABVerdict:
    kw.setdefault("alpha", ALPHA)
    kw.setdefault("max_pairs", MAX_PAIRS)
    return decide_at(case, metric, base, head, threshold=threshold, **kw)  # type: ignore[arg-type]


def test_a_known_slowdown_is_a_regression_with_its_interval() -> None:
    base, head = pairs(8, effect=0.8, noise=0.01)
    v = decide("io-cpu-w0", THROUGHPUT, base, head, threshold=0.10)
    assert v.outcome == "regressed" and v.failed
    assert v.change.endswith("slower") and 1.2 < v.slowdown < 1.3
    assert v.ci_low < 0.8 < v.ci_high < 1  # the 95% interval holds the true ratio and excludes 1
    assert v.p_value is not None and v.p_value <= v.level and v.pairs == 8


def test_a_known_speedup_is_an_improvement() -> None:
    base, head = pairs(8, effect=1.25, noise=0.01, seed=1)
    v = decide("c", THROUGHPUT, base, head, threshold=0.10)
    assert v.outcome == "improved" and not v.failed
    assert v.change.endswith("faster") and v.ci_low > 1


def test_lower_is_better_metrics_are_oriented() -> None:
    base = [0.100, 0.101, 0.099, 0.100, 0.102, 0.098]
    head = [b * 1.5 for b in base]
    v = decide("c", METRICS["ttfb_s"], base, head, threshold=0.25)
    assert v.outcome == "regressed" and v.ratio == pytest.approx(1.5) and v.t > 0


@pytest.mark.parametrize("seed", range(5))
def test_no_effect_is_unchanged(seed: int) -> None:
    base, head = pairs(8, effect=1.0, noise=0.01, seed=seed)
    assert decide("c", THROUGHPUT, base, head, threshold=0.10).outcome == "unchanged"


def test_too_noisy_is_inconclusive_with_what_it_can_resolve() -> None:
    base, head = pairs(8, effect=0.95, noise=0.20, seed=2)
    v = decide("c", THROUGHPUT, base, head, threshold=0.10)
    assert v.outcome == "inconclusive" and "too noisy" in v.reason
    assert 0.10 < v.resolves < math.inf and fmt_change(v.resolves).endswith("%")


def test_too_few_pairs_are_inconclusive() -> None:
    one = decide("c", THROUGHPUT, [1000.0], [500.0], threshold=0.10)
    assert one.outcome == "inconclusive" and one.resolves == math.inf
    assert fmt_change(one.resolves) == "cannot resolve"
    base, head = pairs(2, effect=0.5, noise=0.0001)
    two = decide("c", THROUGHPUT, base, head, threshold=0.10)
    assert two.outcome == "inconclusive" and "from 3 pairs on" in two.reason


def test_below_the_metric_floor_is_unchanged() -> None:
    base = [0.010, 0.011, 0.010]
    head = [0.013, 0.014, 0.013]  # 30% slower, but by 3 ms: below ttfb's 5 ms floor
    v = decide("c", METRICS["ttfb_s"], base, head, threshold=0.25)
    assert v.outcome == "unchanged" and "floor" in v.reason


def sequential(effect: float, noise: float, seed: int, prior: Prior | None = None) -> ABVerdict:
    """One case run as the scheduler runs it: a look after every pair, stopping at the first decision."""
    base, head = pairs(MAX_PAIRS, effect=effect, noise=noise, seed=seed)
    for n in range(1, MAX_PAIRS + 1):
        v = decide("c", THROUGHPUT, base[:n], head[:n], threshold=0.10, prior=prior, final=n == MAX_PAIRS)
        if not v.needs_more:
            return v
    return v


def test_a_threshold_sized_change_seldom_stops_unchanged_over_the_looks() -> None:
    """A head exactly 10% slower at a 10% threshold, pairs spreading ±5%: with the 90% margin at every look
    it stopped `unchanged` early in many jobs (the looks add up); the early looks' stricter margin keeps
    that near the 10% of one final look.  A/A cases still stop after 3 pairs."""
    wrong = sum(sequential(1 / 1.1, 0.05, seed).outcome == "unchanged" for seed in range(200))
    assert wrong <= 29  # 10% of 200 is 20, the binomial's 97.5% bound 29; the old rule: 67
    quiet = [sequential(1.0, 0.01, seed) for seed in range(20)]
    assert all(v.outcome == "unchanged" and v.pairs <= 5 for v in quiet)
    assert sorted(v.pairs for v in quiet)[10] <= 4
    base, head = pairs(3, effect=1 / 1.04, noise=0.005, seed=7)  # 4% slower, the cpu prior's noise: once unchanged
    early = decide("c", THROUGHPUT, base, head, threshold=0.10, prior=Prior(0.034, 20))
    assert early.outcome == "inconclusive" and "not yet ruled out" in early.reason


def test_the_looks_spend_the_hypothesis_level_obrien_fleming() -> None:
    levels = [look_level(ALPHA, n, MAX_PAIRS) for n in range(1, MAX_PAIRS + 2)]
    assert levels[0] == levels[1] == 0.0 and levels[-1] == 0.0  # no look before 3 pairs, none past the last
    assert sum(levels) == pytest.approx(ALPHA, rel=1e-9)  # the looks together spend the level once
    assert levels[2] == pytest.approx(ALPHA * 0.1 / 13) and levels[-2] == pytest.approx(
        0.9 * ALPHA
    )  # early strict, last the rest
    assert look_level(ALPHA, 5, MAX_PAIRS, final=True) == pytest.approx(ALPHA * (1 - 0.2 / 13))  # a budget's end


def test_a_2x_slower_head_is_regressed_within_3_pairs_with_the_prior() -> None:
    """Pairs as noisy as the cpu workload's prior (3.4% per process): 2x is decided at the first look."""
    for seed in range(20):
        base, head = pairs(3, effect=0.5, noise=0.034, seed=seed)
        v = decide("c", THROUGHPUT, base, head, threshold=0.10, prior=Prior(0.034, 20))
        assert v.outcome == "regressed", v.message()


def test_pairs_noisier_than_the_prior_are_not_pooled_with_it() -> None:
    base, head = pairs(8, effect=1.0, noise=0.2, seed=4)
    v = decide("c", THROUGHPUT, base, head, threshold=0.10, prior=Prior(0.01, 20))
    assert v.spread > 0.15  # the F-check rejected the quiet prior: the pairs' own spread decides


def run_in_slots(blocks: int, order: str, drift: float, effect: float) -> tuple[list[float], list[float]]:
    """Each child slot of the job is ``drift`` slower than the one before (multiplicatively)."""
    base, head, slot = [], [], 0
    for block in range(1, blocks + 1):
        arms = arm_order(block) if order == "ABBA" else ("base", "head")
        for arm in arms:
            value = 1000.0 * math.exp(-drift * slot) * (effect if arm == "head" else 1.0)
            (base if arm == "base" else head).append(value)
            slot += 1
    return base, head


def test_abba_cancels_a_linear_drift_that_always_running_base_first_would_report() -> None:
    assert [arm_order(b) for b in (1, 2, 3)] == [("base", "head"), ("head", "base"), ("base", "head")]
    base, head = run_in_slots(8, "ABAB", drift=0.06, effect=1.0)
    naive = decide("c", THROUGHPUT, base, head, threshold=0.05)
    assert naive.outcome == "regressed"  # the head always ran second, on a slower machine
    base, head = run_in_slots(8, "ABBA", drift=0.06, effect=1.0)
    abba = decide("c", THROUGHPUT, base, head, threshold=0.05)
    assert abba.outcome != "regressed" and abba.ratio == pytest.approx(1.0)


def test_one_outlier_pair_does_not_create_a_regression() -> None:
    base, head = pairs(8, effect=1.0, noise=0.005, seed=3)
    head[4] = base[4] / 1.8  # one process met a noisy neighbour
    assert decide("c", THROUGHPUT, base, head, threshold=0.10).outcome != "regressed"


def test_one_outlier_pair_cannot_carry_a_small_change_over_the_threshold() -> None:
    rng = random.Random(1)
    xs = [0.07 + rng.gauss(0, 0.003) for _ in range(11)] + [0.25]  # a real 7% slowdown, and one bad pair
    base = [1000.0] * len(xs)
    head = [1000.0 * math.exp(-x) for x in xs]
    v = decide("c", THROUGHPUT, base, head, threshold=0.10, final=True)
    assert v.p_value is not None and v.p_value <= v.level  # the slowdown is real and significant ...
    assert v.outcome == "inconclusive" and "one pair carries it" in v.reason  # ... but not threshold-sized


def test_verdicts_are_plain_json_and_read_well() -> None:
    base, head = pairs(4, effect=0.5, noise=0.01)
    v = decide("tiny-cpu-w0-bs8", THROUGHPUT, base, head, threshold=0.10)
    data = v.as_dict()
    json.dumps(data, allow_nan=False)
    assert data["outcome"] == v.outcome and len(data["log_ratios"]) == 4
    assert "tiny-cpu-w0-bs8 samples_per_s: 2.0" in v.message() and "4 pairs" in v.evidence
    lone = decide("c", THROUGHPUT, [1000.0], [900.0], threshold=0.10).as_dict()
    assert lone["ci_low"] is None and lone["resolves"] is None
    json.dumps(lone, allow_nan=False)


def test_decide_runs_skips_a_metric_missing_from_a_run() -> None:
    runs = [Measurement.from_raw({"samples_per_s": [100.0, 101.0]}, {"ttfb_s": 0.1}) for _ in range(3)]
    missing = [Measurement.from_raw({"samples_per_s": [100.0, 101.0]}) for _ in range(3)]
    assert decide_runs("c", METRICS["ttfb_s"], runs, missing, threshold=0.25, alpha=ALPHA, max_pairs=8) is None
    v = decide_runs("c", THROUGHPUT, runs, missing, threshold=0.10, alpha=ALPHA, max_pairs=8)
    assert isinstance(v, ABVerdict) and v.outcome == "unchanged"


def test_noise_too_large_for_any_float_is_cannot_resolve_not_a_crash() -> None:
    """Two pairs 30x apart: the resolvable change overflows exp()."""
    v = decide("c", METRICS["samples_per_s"], [1.0, 1.0], [30.0, 1 / 30.0], threshold=0.10)
    assert v.outcome == "inconclusive" and fmt_change(v.resolves) == "cannot resolve"


def test_secret_looking_variables_are_recorded_hashed_and_their_change_still_shown() -> None:
    """The A/B records each arm's environment variables (results.json, the summary): a value whose name looks
    secret is kept only as a short hash, which still shows that the two arms differ."""
    base = snapshot_variables({"HF_TOKEN": "hunter2", "AWS_SECRET_ACCESS_KEY": "abc", "OMP_NUM_THREADS": "4", "_": "x"})
    head = snapshot_variables({"HF_TOKEN": "hunter3", "AWS_SECRET_ACCESS_KEY": "abc", "OMP_NUM_THREADS": "1"})
    assert base["OMP_NUM_THREADS"] == "4" and "_" not in base
    assert base["HF_TOKEN"].startswith("sha256:") and "hunter2" not in json.dumps(base)
    assert base["AWS_SECRET_ACCESS_KEY"] == head["AWS_SECRET_ACCESS_KEY"] != "abc"
    changes = variable_changes(base, head)
    assert changes[0].startswith("$HF_TOKEN sha256:") and "hunter" not in " ".join(changes)
    assert changes[1] == "$OMP_NUM_THREADS 4 -> 1" and len(changes) == 2
