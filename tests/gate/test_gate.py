"""The regression gate's decisions against synthetic samples with known answers: verdicts, thresholds, the
noise, priors and the lines that report them (the Gate over a baseline store is in test_gate_job.py).

Every sample comes from a seeded ``random.Random``; nothing here measures time.
"""

from __future__ import annotations

import dataclasses
import math
import random
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from loaderbench.errors import UsageError
from loaderbench.gate.model import (
    Settings,
    compare,
    critical_values,
    noise,
    resolution,
    run_noise,
    session_values,
)
from loaderbench.gate.priors import Prior, load_priors
from loaderbench.gate.thresholds import Thresholds, parse_thresholds
from loaderbench.measurement import Measurement
from loaderbench.metrics import METRICS
from loaderbench.report.verdicts import inconclusive_lines, undecided_large, undecided_lines

SPS = METRICS["samples_per_s"]
TTFB = METRICS["ttfb_s"]


def runs(
    rng: random.Random,
    k: int,
    level: float,
    *,
    run_cv: float = 0.005,
    round_cv: float = 0.01,
    rounds: int = 5,
    noise: Callable[[random.Random], float] | None = None,
) -> list[Measurement]:
    """``k`` runs of ``rounds`` samples/s values around ``level``: a per-run offset plus per-round noise."""
    out = []
    for _ in range(k):
        offset = level * math.exp(rng.gauss(0, run_cv))
        draw = noise or (lambda r: r.gauss(0, round_cv))
        out.append(
            Measurement.from_raw(rounds={"samples_per_s": tuple(offset * math.exp(draw(rng)) for _ in range(rounds))})
        )
    return out


def outcomes(shift: float, trials: int = 60, *, m: int = 2, **kw: float) -> dict[str, int]:
    """Outcome counts over ``trials`` seeded comparisons of a 3-run baseline with ``m`` runs ``shift`` slower."""
    counts: dict[str, int] = {}
    for seed in range(trials):
        rng = random.Random(seed)
        base = runs(rng, 10, 1000.0, **kw)  # type: ignore[arg-type]
        cur = runs(rng, m, 1000.0 / (1 + shift), **kw)  # type: ignore[arg-type]
        v = compare("c", SPS, base, cur, threshold=0.10)
        counts[v.outcome] = counts.get(v.outcome, 0) + 1
    return counts


# --- decisions on synthetic samples ----------------------------------------------------------


def test_identical_samples_are_unchanged() -> None:
    rng = random.Random(1)
    base = runs(rng, 10, 1000.0)
    a = compare("c", SPS, base, base[:1], threshold=0.10)
    assert a.outcome == "unchanged"
    assert a.ratio == pytest.approx(1.0, rel=0.02)
    assert not a.needs_more


def test_aa_never_regresses() -> None:
    assert outcomes(0.0, trials=200).get("regressed", 0) == 0


def test_five_percent_shift_is_unchanged() -> None:
    counts = outcomes(0.05)
    assert counts.get("regressed", 0) == 0
    assert counts.get("unchanged", 0) == 60


def test_ten_percent_shift_is_caught() -> None:
    counts = outcomes(0.10)
    assert counts.get("regressed", 0) >= 54  # 90% power at the threshold by design


def test_twenty_percent_shift_is_always_caught() -> None:
    assert outcomes(0.20) == {"regressed": 60}


def test_improvement_is_reported_and_never_fails() -> None:
    rng = random.Random(3)
    v = compare("c", SPS, runs(rng, 10, 1000.0), runs(rng, 2, 1250.0), threshold=0.10)
    assert v.outcome == "improved"
    assert not v.failed
    assert re.search(r"1\.2\dx faster", v.message())


def test_heavy_tailed_round_noise_gives_no_false_alarm() -> None:
    def heavy(r: random.Random) -> float:
        # mostly 1% noise, one round in ten is up to 60% slower
        return -abs(r.paretovariate(1.5) - 1) * 0.3 if r.random() < 0.1 else r.gauss(0, 0.01)

    counts = outcomes(0.0, trials=100, noise=heavy)  # type: ignore[arg-type]
    assert counts.get("regressed", 0) == 0


def test_one_outlier_round_does_not_regress() -> None:
    rng = random.Random(4)
    base = runs(rng, 10, 1000.0)
    cur = runs(rng, 1, 1000.0)
    values = list(cur[0].rounds["samples_per_s"])
    values[2] = 100.0  # one round ten times slower
    v = compare("c", SPS, base, [Measurement.from_raw(rounds={"samples_per_s": tuple(values)})], threshold=0.10)
    assert v.outcome == "unchanged"


def test_an_unstable_run_today_cannot_regress_on_its_own() -> None:
    """Rounds far noisier today than in the baseline widen today's own noise: 15% slower on a run whose
    rounds spread 60% is not enough, the same change on quiet rounds is."""
    rng = random.Random(5)
    base = runs(rng, 10, 1000.0)
    unstable = runs(rng, 2, 1000.0 / 1.15, round_cv=0.6, rounds=5)
    quiet = runs(rng, 2, 1000.0 / 1.15)
    assert compare("c", SPS, base, unstable, threshold=0.10).outcome == "inconclusive"
    assert compare("c", SPS, base, quiet, threshold=0.10).outcome == "regressed"


def test_too_noisy_case_is_inconclusive_and_says_what_it_resolves() -> None:
    rng = random.Random(6)
    base = runs(rng, 10, 1000.0, run_cv=0.25)
    cur = runs(rng, 1, 1000.0 / 1.12, run_cv=0.25)
    a = compare("c", SPS, base, cur, threshold=0.10)
    assert a.outcome == "inconclusive"
    assert a.resolves > 0.10
    assert "too noisy" in a.reason


def test_noisy_case_still_catches_a_huge_regression() -> None:
    rng = random.Random(7)
    base = runs(rng, 10, 1000.0, run_cv=0.10)
    cur = runs(rng, 2, 250.0, run_cv=0.10)
    assert compare("c", SPS, base, cur, threshold=0.10).outcome == "regressed"


def test_a_single_measurement_regression_asks_for_confirmation() -> None:
    rng = random.Random(8)
    a = compare("c", SPS, runs(rng, 10, 1000.0), runs(rng, 1, 700.0), threshold=0.10)
    assert a.outcome == "inconclusive" and a.needs_more
    assert "awaiting confirmation in a fresh process" in a.reason
    b = compare("c", SPS, runs(rng, 10, 1000.0), runs(rng, 1, 700.0), threshold=0.10, settings=Settings(confirm=0))
    assert b.outcome == "regressed" and not b.needs_more


def test_strict_power_setting_is_the_asv_rule() -> None:
    rng = random.Random(9)
    base = runs(rng, 10, 1000.0, run_cv=0.001, round_cv=0.001)
    cur = runs(rng, 2, 1000.0 / 1.08, run_cv=0.001, round_cv=0.001)
    assert compare("c", SPS, base, cur, threshold=0.10, settings=Settings(z_power=0.0)).outcome == "unchanged"


def test_lower_is_better_metric_direction() -> None:
    base = [Measurement.from_raw(values={"ttfb_s": 0.100 + 0.001 * (i % 3 - 1)}) for i in range(10)]
    slower = [Measurement.from_raw(values={"ttfb_s": v}) for v in (0.200, 0.202)]
    v = compare("c", TTFB, base, slower, threshold=0.25)
    assert v.outcome == "regressed"
    assert v.slowdown == pytest.approx(2.0, rel=0.02)
    assert v.p_value is not None and v.p_value < 1e-4  # from the processes' values, not rounds
    faster = [Measurement.from_raw(values={"ttfb_s": v}) for v in (0.040, 0.041)]
    assert compare("c", TTFB, base, faster, threshold=0.25).outcome == "improved"


def test_change_below_the_absolute_floor_is_unchanged() -> None:
    base = [Measurement.from_raw(values={"ttfb_s": v}) for v in (0.0010, 0.0010, 0.0010)]
    cur = [Measurement.from_raw(values={"ttfb_s": 0.0030})]  # 3x, but only 2 ms
    v = compare("c", TTFB, base, cur, threshold=0.25)
    assert v.outcome == "unchanged"
    assert "floor" in v.reason


def test_verdict_message_is_one_line_with_the_numbers() -> None:
    rng = random.Random(10)
    v = compare("io-cpu-w0-bs32", SPS, runs(rng, 10, 1000.0), runs(rng, 2, 800.0), threshold=0.10)
    text = v.message()
    assert "\n" not in text
    assert text.startswith("io-cpu-w0-bs32 samples_per_s: 1.2")
    assert "x slower" in text and "p=" in text and "z=" in text and text.endswith("regressed (threshold 10%)")
    assert v.as_dict()["outcome"] == "regressed"


# --- thresholds ---------------------------------------------------------------------------------


def test_parse_thresholds_forms() -> None:
    t = parse_thresholds("12%, samples_per_s=5%,ttfb_s=0.3, io-cpu-w2-bs32:samples_per_s=20%")
    assert t.default == pytest.approx(0.12)
    assert t.get("other", SPS) == pytest.approx(0.05)
    assert t.get("io-cpu-w2-bs32", SPS) == pytest.approx(0.20)
    assert t.get("x", TTFB) == pytest.approx(0.3)
    assert t.get("x", METRICS["peak_memory_bytes"]) == pytest.approx(0.12)
    assert Thresholds().get("x", TTFB) == TTFB.threshold


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("-5%", "negative"),
        ("abc", "not a number"),
        ("samples_per_sec=5%", "not a gated metric"),
        ("10", "ambiguous"),
        ("", "empty"),
        ("10%,,5%", "empty item"),
        (":samples_per_s=5%", "names no case"),
        ("nan%", "finite"),
    ],
)
def test_parse_thresholds_errors_name_the_option_and_fix(text: str, needle: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_thresholds(text)
    message = str(info.value)
    assert message.startswith(f"--loader-threshold={text!r}")
    assert needle in message


# --- the noise: sessions, rounds, one-offs --------------------------------------------------------------


def test_one_disturbed_measurement_is_not_confirmed() -> None:
    rng = random.Random(21)
    base = runs(rng, 10, 1000.0)
    disturbed, clean = runs(rng, 1, 600.0), runs(rng, 1, 1000.0)
    first = compare("c", SPS, base, disturbed, threshold=0.10)
    assert first.outcome == "inconclusive" and first.needs_more
    both = compare("c", SPS, base, disturbed + clean, threshold=0.10)
    assert both.outcome == "inconclusive"
    assert "not confirmed" in both.reason


def test_a_suspect_is_decided_on_its_fresh_process_alone() -> None:
    """Seen in a stored-gate A/A job: 1.79x slower in the session (a neighbour's burst), 1.12x in the fresh
    process; pooled, 1.43x was `regressed`.  The fresh process alone decides, and the verdict says why."""
    rng = random.Random(25)
    base = runs(rng, 10, 1000.0, run_cv=0.05)
    disturbed, fresh = runs(rng, 1, 560.0), runs(rng, 1, 890.0)
    v = compare("c", SPS, base, disturbed + fresh, threshold=0.10)
    assert v.outcome == "inconclusive" and not v.needs_more
    assert v.current == pytest.approx(fresh[0].samples_per_s)  # the estimate is the fresh process's
    pattern = r"not confirmed: 1\.\d\dx slower in this session's measurement, 1\.1\dx slower in the fresh"
    assert re.search(pattern, v.reason)
    real = compare("c", SPS, base, disturbed + runs(rng, 1, 600.0), threshold=0.10)
    assert real.outcome == "regressed" and real.current_runs == 2  # a real regression still confirms


def test_a_regression_measured_while_others_took_the_machine_is_put_down_to_the_load() -> None:
    rng = random.Random(26)
    quiet = [dataclasses.replace(r, extra={"others_busy": 0.02}) for r in runs(rng, 10, 1000.0, run_cv=0.02)]
    slow = runs(rng, 2, 700.0)
    assert compare("c", SPS, quiet, slow, threshold=0.10).outcome == "regressed"  # no load figure: decided
    calm = [dataclasses.replace(r, extra={"others_busy": 0.1}) for r in slow]
    assert compare("c", SPS, quiet, calm, threshold=0.10).outcome == "regressed"
    busy = [calm[0], dataclasses.replace(slow[1], extra={"others_busy": 0.5})]  # the deciding process was loaded
    v = compare("c", SPS, quiet, busy, threshold=0.10)
    assert v.outcome == "inconclusive" and not v.failed
    assert v.reason.startswith("other processes used 50% of the machine's CPU time while it was measured (2% at")


def test_noise_never_below_the_metrics_process_noise() -> None:
    rng = random.Random(22)
    one = runs(rng, 1, 1000.0, round_cv=0.0001)
    assert run_noise(SPS, one) == SPS.process_noise
    assert resolution(SPS, one) == math.inf  # one session: noise unknown
    tight = runs(rng, 10, 1000.0, run_cv=0.0001, round_cv=0.0001)
    zs, zp = critical_values(Settings(), 9)  # Student's t with 9 degrees of freedom (10 sessions), a job of 1
    assert zs == pytest.approx(2.821, abs=1e-3) and zp == pytest.approx(1.381, abs=1e-3)
    assert resolution(SPS, tight) == pytest.approx(math.expm1((zs + zp) * SPS.process_noise * math.sqrt(11 / 10)))
    noisy = runs(rng, 10, 1000.0, run_cv=0.2)
    assert resolution(SPS, noisy) > 0.5


def test_sessions_not_runs_measure_the_noise() -> None:
    pairs = ((900.0, "a"), (1100.0, "a"), (1000.0, "b"))
    tagged = [Measurement.from_raw(rounds={"samples_per_s": (v,) * 5}, session=s) for v, s in pairs]
    values = session_values(SPS, tagged)
    assert len(values) == 2
    assert values[1] == pytest.approx(math.log(1000.0))


def test_timing_one_offs_share_the_cases_throughput_noise() -> None:
    rng = random.Random(25)
    base = []
    for level in (700.0, 1000.0, 1400.0):  # throughput moves a lot between sessions...
        run = runs(rng, 1, level)[0]
        base.append(
            Measurement.from_raw(rounds=run.rounds, values={"ttfb_s": 0.100, "epoch_stall_s": 0.050})
        )  # ...TTFB does not
    assert run_noise(TTFB, base) == pytest.approx(run_noise(SPS, base))
    cur = [Measurement.from_raw(rounds=runs(rng, 1, 1000.0)[0].rounds, values={"ttfb_s": 0.150}) for _ in range(2)]
    assert compare("c", TTFB, base, cur, threshold=0.25).outcome == "inconclusive"
    memory = [Measurement.from_raw(rounds=r.rounds, values={"peak_memory_bytes": 3e8}) for r in base]
    assert run_noise(METRICS["peak_memory_bytes"], memory) == METRICS["peak_memory_bytes"].process_noise  # not shared


def test_a_three_session_baseline_needs_students_t_not_z() -> None:
    """With the noise estimated from 3 sessions, a job of 140 hypotheses at 1% needs 84 standard errors."""
    zs, zp = critical_values(Settings(), 2, family=140)
    assert zs == pytest.approx(83.66, abs=0.01) and zp == pytest.approx(1.886, abs=0.01)
    counts: dict[str, int] = {}
    for seed in range(60):
        rng = random.Random(seed)
        v = compare("c", SPS, runs(rng, 3, 1000.0), runs(rng, 2, 1000.0 / 1.2), threshold=0.10, family=140)
        counts[v.outcome] = counts.get(v.outcome, 0) + 1
    assert counts.get("regressed", 0) == 0  # a 20% change is beyond what 3 sessions can resolve


# --- priors: one recorded session already gates ---------------------------------------------------------


PRIOR = Prior(sigma=0.02, dof=30, between_hosts=0.03)


def test_one_session_with_a_prior_catches_20_percent_and_raises_no_false_alarm() -> None:
    """Session offsets drawn with the prior's own noise (2%): A/A never regresses, a 20% slowdown always does."""
    aa: dict[str, int] = {}
    slow: dict[str, int] = {}
    for seed in range(60):
        rng = random.Random(seed)
        base = runs(rng, 1, 1000.0, run_cv=0.02)
        same = runs(rng, 2, 1000.0 * math.exp(rng.gauss(0, 0.02)), run_cv=0.0)
        slower = runs(rng, 2, 1000.0 / 1.2 * math.exp(rng.gauss(0, 0.02)), run_cv=0.0)
        a = compare("c", SPS, base, same, threshold=0.10, prior=PRIOR).outcome
        b = compare("c", SPS, base, slower, threshold=0.10, prior=PRIOR).outcome
        aa[a] = aa.get(a, 0) + 1
        slow[b] = slow.get(b, 0) + 1
    assert aa.get("regressed", 0) == 0
    assert slow.get("regressed", 0) >= 57, slow
    without = compare("c", SPS, runs(random.Random(1), 1, 1000.0), runs(random.Random(2), 2, 800.0), threshold=0.10)
    assert without.outcome == "inconclusive" and "needs 3" in without.reason  # no prior: one session cannot fail


def test_the_prior_is_pooled_with_the_baselines_own_sessions() -> None:
    rng = random.Random(30)
    quiet = runs(rng, 10, 1000.0, run_cv=0.002)
    noisy = runs(rng, 10, 1000.0, run_cv=0.08)
    assert noise(SPS, quiet, prior=PRIOR).sigma < PRIOR.sigma < noise(SPS, noisy, prior=PRIOR).sigma
    assert noise(SPS, quiet, prior=PRIOR).dof == 9 + PRIOR.dof
    here = noise(SPS, quiet, prior=PRIOR)
    elsewhere = noise(SPS, quiet, prior=PRIOR, other_host=True)
    assert elsewhere.sigma == pytest.approx(math.hypot(here.sigma, PRIOR.between_hosts)) and elsewhere.other_host


def test_priors_file_defaults_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "noise.toml"
    path.write_text(
        "[default]\nsamples_per_s = { sigma = 0.1, dof = 10 }\nbetween_hosts = 0.04\n"
        "[workload.io]\nsamples_per_s = { sigma = 0.02, dof = 25 }\n"
    )
    priors = load_priors(path)
    assert priors.get("io", "samples_per_s") == Prior(0.02, 25, 0.04)
    assert priors.get("other", "samples_per_s") == Prior(0.1, 6.0, 0.04)  # the default weighs 6 dof at most
    assert priors.get("io", "ttfb_s") == Prior(0.02, 25, 0.04)  # TTFB's noise follows throughput's
    assert load_priors(tmp_path / "missing.toml").get("io", "samples_per_s").sigma == 0.10  # wide fallback
    path.write_text("[workload.io]\nsample_per_s = { sigma = 0.02, dof = 25 }\n")
    with pytest.raises(UsageError, match="'sample_per_s', which is not a gated metric"):
        load_priors(path)
    path.write_text("[workload.io]\nsamples_per_s = { sigma = -1, dof = 25 }\n")
    with pytest.raises(UsageError, match=re.escape("io.samples_per_s.sigma is not a non-negative number")):
        load_priors(path)


def test_the_spread_tool_writes_priors_the_gate_reads(tmp_path: Path) -> None:
    from loaderbench.tools import spread

    per_metric = {
        ("io", "io-cpu-w0-bs32", "samples_per_s"): [1000.0, 1010.0, 990.0, 1005.0],
        ("io", "io-cpu-w2-bs32", "samples_per_s"): [2000.0, 2040.0, 1960.0, 2010.0],
        ("io", "io-cpu-w0-bs32", "ttfb_s"): [0.010, 0.011, 0.009, 0.010],
    }
    table = spread.priors(per_metric)
    sigma, dof = table["io"]["samples_per_s"]
    assert dof == 6 and 0.005 < sigma < 0.05
    path = tmp_path / "noise.toml"
    path.write_text(spread.priors_toml(table, processes=4, command="python -m loaderbench.tools.spread"))
    loaded = load_priors(path)
    assert loaded.get("io", "samples_per_s").sigma == pytest.approx(sigma, abs=1e-4)
    assert loaded.get("io", "ttfb_s").dof == 3
    assert loaded.get("cpu", "samples_per_s").sigma >= 0.10  # unmeasured workloads get the wide default


def test_every_inconclusive_line_names_its_next_step_and_huge_figures_cannot_resolve() -> None:
    rng = random.Random(3)
    v = compare("c", SPS, runs(rng, 3, 1000.0), runs(rng, 1, 1000.0), threshold=0.10)
    noisy = dataclasses.replace(v, outcome="inconclusive", resolves=35858.62, noise=3.2, reason="too noisy; next: x")
    unknown = dataclasses.replace(v, outcome="inconclusive", resolves=math.inf, reason="the baseline has 1 session")
    small = dataclasses.replace(v, outcome="inconclusive", resolves=0.05, reason="not significant")
    lines = inconclusive_lines([noisy, unknown, small], max_extra=3)
    assert len(lines) == 6
    assert "cannot resolve: noise ±320.0% from 3 baseline session(s) is too large" in lines[0]
    assert "3585862" not in "\n".join(lines)
    assert "cannot resolve: the noise is unknown" in lines[2]
    assert "resolves >=5%" in lines[4]
    nexts = lines[1::2]
    assert all(line.startswith("    next: ") for line in nexts)
    assert "--loader-ab" in nexts[0] and "--loader-baseline-append" in nexts[1]
    assert "--loader-max-extra (now 3)" in nexts[2]


def test_a_next_step_shared_by_several_metrics_is_said_once_with_the_users_own_command() -> None:
    rng = random.Random(4)
    v = compare("c", SPS, runs(rng, 3, 1000.0), runs(rng, 1, 1000.0), threshold=0.10)
    a = dataclasses.replace(v, outcome="inconclusive", resolves=math.inf, reason="the baseline has 1 session")
    b = dataclasses.replace(a, case_id="d", metric="ttfb_s")
    record = "pytest --benchmark --loader-baseline-dir=perf/baselines --loader-baseline-save"
    lines = inconclusive_lines([a, b], max_extra=3, record=record)
    assert len(lines) == 3 and lines[0].startswith("  c: ") and lines[1].startswith("  d: ")
    assert lines[2].startswith("    next (the 2 above): record more baseline sessions")
    assert f"`{record} --loader-baseline-append`" in lines[2]


def test_an_undecided_change_beyond_the_threshold_is_said_prominently_in_either_mode() -> None:
    rng = random.Random(4)
    v = compare("c", SPS, runs(rng, 3, 1000.0), runs(rng, 1, 1000.0), threshold=0.10)
    large = dataclasses.replace(v, outcome="inconclusive", slowdown=1.42, resolves=1.01, reason="too noisy")
    small = dataclasses.replace(v, outcome="inconclusive", slowdown=1.04, resolves=0.5, reason="too noisy")
    ab = dataclasses.replace(large, mode="ab", pairs=8, ci_low=0.5, ci_high=0.9, ratio=0.7)
    assert undecided_large([large, small, v]) == [large]
    lines = undecided_lines([large, small], how="stopped: the budget")
    assert lines[0].startswith("UNDECIDED (1): worse than the threshold") and "stopped: the budget" in lines[0]
    assert "1.42x slower" in "\n".join(lines) and "baseline" in lines[1]
    ab_lines = undecided_lines([ab], how="x")
    assert "head/base [95% CI]" in ab_lines[1] and "[0.50x, 0.90x]" in "\n".join(ab_lines)
    assert undecided_lines([small], how="x") == []
