"""The per-job checks' machinery: the exact upper bound, the whole-job A/A driver's summary, and the
simulation of jobs from measured noise (seeded: its rates are properties of the gate, not timings)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import psutil
import pytest

from loaderbench.selfcheck.common import upper_95
from loaderbench.tools import aa_jobs, simulate_jobs


def test_the_upper_bound_is_clopper_pearsons() -> None:
    assert upper_95(0, 20) == pytest.approx(1 - 0.05 ** (1 / 20))  # 13.9%: what 0 in 20 can claim
    assert upper_95(0, 300) == pytest.approx(0.00994, abs=1e-4)  # 300 clean jobs to claim 1 per 100
    assert upper_95(3, 3) == 1.0 and upper_95(0, 0) == 1.0
    assert upper_95(1, 20) > upper_95(0, 20)


def test_the_driver_summary_counts_red_jobs_and_names_their_regressions() -> None:
    jobs = [
        {"name": "job-001", "rc": 0, "wall_s": 160.0, "load": [1.0, 1.5], "at": 0.0, "regressed": [], "tail": []},
        {"name": "job-002", "rc": 1, "wall_s": 170.0, "load": [1.2, 1.9], "at": 3600.0, "tail": ["1 regressed"],
         "regressed": ["io-cpu-w0-bs32 samples_per_s: 1.20x slower"]},
        {"name": "job-003", "rc": 3, "wall_s": 10.0, "load": [0.5, 0.5], "at": 7200.0, "regressed": [], "tail": []},
    ]  # fmt: skip
    lines = aa_jobs.summary(jobs)
    assert lines[0].startswith("1 red of 2 A/A jobs (95% upper bound") and "over 2.0 h" in lines[0]
    assert any("job-003: exit 3 (not a verdict" in line for line in lines)
    assert any("job-002: io-cpu-w0-bs32 samples_per_s: 1.20x slower" in line for line in lines)


def test_hog_jobs_are_counted_apart_and_every_hog_is_reaped() -> None:
    jobs = [
        {"name": "job-001", "rc": 0, "wall_s": 160.0, "load": [1.0, 1.5], "at": 0.0, "regressed": [], "tail": []},
        {"name": "job-002", "rc": 1, "wall_s": 170.0, "load": [2.2, 3.1], "at": 60.0, "hog": 1, "tail": [],
         "regressed": ["io-cpu-w2-bs32 samples_per_s: 1.30x slower"]},
    ]  # fmt: skip
    lines = aa_jobs.summary(jobs)
    assert lines[0].startswith("1 red of 2 A/A jobs")
    assert "of which 1 ran beside a CPU hog (the drift scenario): 1 red" in lines
    with aa_jobs.hogging(2):
        spinning = [p for p in psutil.Process().children() if "while True" in " ".join(p.cmdline())]
        assert len(spinning) == 2
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in spinning)


def _noise(cases: int, sd: float) -> dict[str, object]:
    return {
        "jobs": 20,
        "offset_sd": {"samples_per_s": 0.02},
        "cases": {
            f"c{i}|samples_per_s": {"process_sd": sd, "se": sd * math.sqrt(1 / 3 + 1), "threshold": 0.10}
            for i in range(cases)
        },
    }


@pytest.mark.slow
def test_simulated_jobs_on_the_gates_own_noise_model_stay_green_and_catch_a_large_slowdown() -> None:
    result = simulate_jobs.simulate(_noise(15, 0.02), jobs=150, sessions=3, offset_prior=0.03, slowdown=0.3, seed=1)
    assert result["red"] <= 2  # Holm at 1% per job
    assert min(result["power"].values()) >= 0.9


@pytest.mark.slow
def test_one_case_noisier_than_the_gate_assumes_shows_up_as_false_reds_and_many_are_widened_away() -> None:
    kw = {"jobs": 100, "sessions": 3, "offset_prior": 0.03, "slowdown": 0.1, "seed": 2}
    one = _noise(15, 0.02)
    one["cases"]["c0|samples_per_s"]["process_sd"] = 0.15  # type: ignore[index]
    assert simulate_jobs.simulate(one, **kw)["red"] >= 5  # type: ignore[arg-type]
    every = _noise(15, 0.02)
    for c in every["cases"].values():  # type: ignore[attr-defined]
        c["process_sd"] = 0.06  # every case scatters 3x its model: the job widens its noise and stays green
    assert simulate_jobs.simulate(every, **kw)["red"] <= 2  # type: ignore[arg-type]


def test_the_noise_is_measured_from_the_jobs_verdicts(tmp_path: Path) -> None:
    for j, (off, resid) in enumerate([(0.01, 0.02), (-0.01, -0.02), (0.03, 0.0)]):
        gate = [{"case_id": "a", "metric": "samples_per_s", "z": resid / 0.05, "noise": 0.05, "offset": off,
                 "threshold": 0.1}]  # fmt: skip
        doc = {"benchmarks": [{"extra_info": {"gate": gate}}]}
        (tmp_path / f"job-{j:03d}.json").write_text(json.dumps(doc))
    noise = simulate_jobs.measure(simulate_jobs._verdicts(tmp_path))
    assert noise["jobs"] == 3
    assert noise["offset_sd"]["samples_per_s"] == pytest.approx(0.02)
    assert noise["cases"]["a|samples_per_s"]["process_sd"] == pytest.approx(0.02)
    assert simulate_jobs.main([str(tmp_path / "none")]) == 2  # no jobs: a clear error, not a traceback
