"""The one decision engine on synthetic evidence with known answers: Holm's procedure, the common offset,
the control case, the noise check, and the job-level false-red rate by seeded simulation."""

from __future__ import annotations

import math
import random

import pytest

from loaderbench.decision.job import EVERY_CASE, Control, decide_job, holm_levels
from loaderbench.decision.rules import Evidence, holds_in_each


def ev(case: str, x: float, se: float = 0.02, *, threshold: float = 0.10) -> Evidence:
    base = 1000.0
    return Evidence(case, "samples_per_s", x, se, math.inf, threshold, base, base / math.exp(x), unit="samples_per_s")


def test_holm_steps_down_and_stops_at_the_first_acceptance() -> None:
    rejected, levels = holm_levels([0.001, 0.04, 0.012, 0.5], 0.05)
    assert levels == pytest.approx([0.05 / 4, 0.05 / 2, 0.05 / 3, 0.05 / 1])
    assert rejected == [True, False, True, False]  # 0.012 <= 0.05/3, then 0.04 > 0.05/2 stops it


@pytest.mark.slow
def test_a_job_of_many_unchanged_cases_never_goes_red_at_the_per_test_level() -> None:
    """140 hypotheses of pure noise, 300 seeded jobs: Holm keeps red jobs near 1%, not the ~13% a per-test
    0.1% level would give."""
    red = 0
    for seed in range(300):
        rng = random.Random(seed)
        job = decide_job([ev(f"c{i}", rng.gauss(0, 0.02)) for i in range(140)])
        red += bool(job.regressed)
    assert red <= 9  # 1% of 300 is 3; the binomial's 99.9% bound is 9


def test_a_real_regression_among_many_is_found() -> None:
    rng = random.Random(1)
    cases = [ev(f"c{i}", rng.gauss(0, 0.02)) for i in range(30)] + [ev("slow", math.log(1.5))]
    job = decide_job(cases, offset_sigma={"samples_per_s": 0.03})
    assert [d.evidence.case_id for d in job.regressed] == ["slow"]


def test_a_machine_that_moved_with_its_control_is_one_line_not_many_reds() -> None:
    rng = random.Random(2)
    shift = math.log(1.2)  # every case 20% slower, and the control too
    cases = [ev(f"c{i}", shift + rng.gauss(0, 0.02)) for i in range(30)]
    job = decide_job(
        cases,
        offset_sigma={"samples_per_s": 0.03},
        control=Control(shift, 0.02, "spin 1.20x slower"),
        controlled=frozenset({"samples_per_s"}),
    )
    assert not job.regressed
    assert any("moved as much" in line for line in job.lines)


def test_every_loader_slower_while_the_control_held_fails_as_one_verdict() -> None:
    rng = random.Random(3)
    shift = math.log(1.3)  # a torch upgrade slows every fetch; the machine did not change
    cases = [ev(f"c{i}", shift + rng.gauss(0, 0.02)) for i in range(30)]
    job = decide_job(
        cases,
        offset_sigma={"samples_per_s": 0.03},
        control=Control(0.0, 0.02, "unchanged"),
        controlled=frozenset({"samples_per_s"}),
    )
    assert [d.evidence.case_id for d in job.regressed] == [EVERY_CASE]


@pytest.mark.parametrize("control_x", [math.log(1 / 1.65), math.log(1.5)])
def test_a_control_that_moved_while_the_cases_held_makes_no_verdict(control_x: float) -> None:
    """Seen on an H200: the spin loop 1.65x faster than at recording while the CUDA cases held; the offset
    hypothesis was d - c = +0.4 and three 'every case 1.00x faster' metrics were regressed."""
    rng = random.Random(5)
    cases = [ev(f"c{i}", rng.gauss(0, 0.02)) for i in range(30)]
    job = decide_job(
        cases,
        offset_sigma={"samples_per_s": 0.03},
        control=Control(control_x, 0.02, "spin moved"),
        controlled=frozenset({"samples_per_s"}),
    )
    assert not job.regressed
    every = [d for d in job.decisions if d.evidence.case_id == EVERY_CASE]
    assert len(every) == 1 and every[0].outcome != "improved"
    assert abs(every[0].evidence.x) <= abs(job.offsets[0].estimate)  # the control never enlarges the offset


def test_the_control_explains_at_most_the_cases_own_shift() -> None:
    from loaderbench.decision.job import explained

    assert explained(0.2, 0.3) == 0.2 and explained(0.2, 0.1) == 0.1
    assert explained(0.2, -0.4) == 0.0 and explained(0.0, -0.4) == 0.0
    assert explained(-0.2, -0.3) == -0.2 and explained(-0.2, 0.5) == 0.0


def test_cases_scattering_more_than_their_model_widen_every_noise_figure() -> None:
    rng = random.Random(4)
    cases = [ev(f"c{i}", rng.gauss(0, 0.08)) for i in range(40)]  # the model says 2%, the run shows 8%
    job = decide_job(cases, offset_sigma={"samples_per_s": 0.03})
    assert job.offsets[0].scale > 2.5
    assert not job.regressed


def test_futility_stops_only_what_no_number_of_pairs_could_decide() -> None:
    from loaderbench.decision.sequential import futile

    alpha = 0.01 / 100
    # time to first batch, A/A, five pairs spreading ±40%: neither outcome is within 16 pairs' reach
    assert futile(0.05, 0.40, 4, 5, 0.10, alpha, 16)
    assert not futile(0.05, 0.40, 1, 2, 0.10, alpha, 16)  # before the first look: never
    assert not futile(0.02, 0.03, 4, 5, 0.10, alpha, 16)  # quiet pairs: unchanged is within reach
    assert not futile(0.60, 0.30, 4, 5, 0.10, alpha, 16)  # a 1.8x change may still be shown
    assert not futile(0.05, 0.40, 14, 16, 0.10, alpha, 16)  # the last look is the runner's to end
    # three pairs, one of them disturbed (±24%): its spread is too uncertain to give up on the case
    assert not futile(0.02, 0.24, 2, 3, 0.10, alpha, 16)


def test_confirmation_needs_every_process_beyond_the_power_margin() -> None:
    """The one confirmation rule (the gate's fresh process and the job simulation both call it): a
    threshold-sized change in both processes confirms; one process near zero, or a NaN, does not."""
    e = ev("slow", math.log(1.2), se=0.02)
    margin = math.log(1.1) - 1.28 * 0.02  # T - z_p * se with a known se (infinite dof)
    assert holds_in_each(e, [math.log(1.2), math.log(1.15)])
    assert holds_in_each(e, [margin + 1e-9, margin + 1e-9])
    assert not holds_in_each(e, [math.log(1.2), margin - 1e-6])
    assert not holds_in_each(e, [math.log(1.2), 0.0])
    assert not holds_in_each(e, [math.log(1.2), math.nan])
