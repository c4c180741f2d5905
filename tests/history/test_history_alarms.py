"""Failing a job on its history (open regressions: a step, a creep) and the history's drift as the gate's prior.
Synthetic histories, written directly: deterministic, no measuring."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from loaderbench.config import LoaderConfig
from loaderbench.gate.job import Gate
from loaderbench.gate.priors import NoisePriors, Prior, pooled
from loaderbench.gate.thresholds import parse_thresholds
from loaderbench.history import alarms, drift, store
from loaderbench.history.changepoints import ChangePoint
from loaderbench.history.record import Figure, RunRecord
from loaderbench.history.store import History
from loaderbench.measurement import Measurement
from loaderbench.store.baseline import BaselineStore
from loaderbench.store.environment import Environment
from loaderbench.store.fingerprint import Fingerprint

FP = Fingerprint(machine="x86_64", cpu_model="Test CPU", affinity_cpus=2, cpu_quota=None, ram_bytes=2**33, gpus=())
CASE = "io-cpu-w2-bs32"
#: A flat series' wobble: +-0.4%, deterministic.
WOBBLE = [1 + 0.002 * ((i * 7) % 5 - 2) for i in range(60)]


def history(
    tmp_path: Path,
    values: list[float],
    *,
    metric: str = "samples_per_s",
    torch_from: int | None = None,
    kinds: list[str] | None = None,
) -> History:
    records = []
    for i, v in enumerate(values):
        env = Environment(
            torch="2.14.1" if torch_from is not None and i >= torch_from else "2.13.0", git_commit=f"c{i:04d}"
        )
        records.append(
            RunRecord(
                run=f"r{i}",
                time=f"2026-10-{1 + i // 24:02d}T{i % 24:02d}:00:00+00:00",
                commit=env.git_commit,
                environment=env,
                case=CASE,
                workload="io",
                device="cpu",
                simulated=False,
                metrics={metric: Figure(v, v * 0.995, v * 1.005)},
                memory_kind=kinds[i] if kinds else "",
            )
        )
    store.append(tmp_path, FP, records)
    return store.read(tmp_path)


def flat(n: int, level: float = 1000.0) -> list[float]:
    return [level * w for w in WOBBLE[:n]]


def test_a_flat_history_opens_no_regression(tmp_path: Path) -> None:
    assert alarms.open_regressions(history(tmp_path, flat(30))) == []


def test_a_step_is_named_with_its_size_commits_and_environment_change(tmp_path: Path) -> None:
    values = flat(20) + [v * 0.85 for v in flat(25)[20:]]
    (found,) = alarms.open_regressions(history(tmp_path, values, torch_from=20))
    assert (found.case, found.metric, found.first_run, found.runs_since) == (CASE, "samples_per_s", "r20", 5)
    assert found.commits == ("c0019", "c0020")
    assert found.environment_changes == ("torch 2.13.0 -> 2.14.1",)  # the commit range says the commit
    assert found.slowdown_lo < found.slowdown < found.slowdown_hi
    assert math.isclose(found.slowdown, 1 / 0.85, rel_tol=0.01)
    text = found.sentence()
    for part in (CASE, "samples_per_s", "1.18x slower", "95% CI", "c0019..c0020", "torch 2.13.0 -> 2.14.1", "r20"):
        assert part in text


def test_a_creep_of_2_percent_per_run_over_5_runs_is_caught_though_no_pair_is_beyond_the_threshold(
    tmp_path: Path,
) -> None:
    values = flat(20) + [1000.0 * WOBBLE[20 + k] * 0.98 ** (k + 1) for k in range(5)]
    pairs = [values[i] / values[i + 1] - 1 for i in range(len(values) - 1)]
    assert max(pairs) < 0.04  # no run-to-run comparison comes near the 10% threshold
    (found,) = alarms.open_regressions(history(tmp_path, values))
    assert found.slowdown > 1.10  # the newest level, not the creep's mean (about 6%)
    assert found.threshold == 0.10


def test_a_step_below_the_threshold_an_improvement_and_an_old_step_do_not_fail(tmp_path: Path) -> None:
    small = flat(20) + [v * 0.95 for v in flat(25)[20:]]
    assert alarms.open_regressions(history(tmp_path / "small", small)) == []
    better = flat(20) + [v * 1.3 for v in flat(25)[20:]]
    assert alarms.open_regressions(history(tmp_path / "better", better)) == []
    old = flat(20) + [v * 0.8 for v in flat(20 + alarms.RECENT_RUNS + 1)[20:]]
    assert alarms.open_regressions(history(tmp_path / "old", old)) == []  # absorbed as the new level


def test_the_threshold_and_direction_are_the_gates(tmp_path: Path) -> None:
    ttfb = [0.1 * w for w in WOBBLE[:20]] + [0.13 * w for w in WOBBLE[20:25]]  # lower is better: +30%
    h = history(tmp_path, ttfb, metric="ttfb_s")
    (found,) = alarms.open_regressions(h)
    assert found.metric == "ttfb_s" and "slower" in found.sentence()
    assert alarms.open_regressions(h, thresholds=parse_thresholds(f"{CASE}:ttfb_s=40%")) == []


def test_peak_memory_across_a_change_of_what_was_counted_is_not_judged(tmp_path: Path) -> None:
    values = [2e8 * w for w in WOBBLE[:20]] + [3e8 * w for w in WOBBLE[20:25]]
    kinds = ["pss"] * 20 + ["pss-anon"] * 5
    assert alarms.open_regressions(history(tmp_path, values, metric="peak_memory_bytes", kinds=kinds)) == []
    assert len(alarms.open_regressions(history(tmp_path / "same", values, metric="peak_memory_bytes"))) == 1


def test_the_detector_is_an_argument(tmp_path: Path) -> None:
    h = history(tmp_path, flat(20) + [v * 0.85 for v in flat(24)[20:]])
    seen: list[int] = []

    def stub(values: list[float], *, uncertainties: list[float]) -> tuple[ChangePoint, ...]:
        seen.append(len(values))
        assert all(u > 0 for u in uncertainties)
        return (ChangePoint(20, 19, 1000.0, 500.0, -0.5, -0.6, -0.4, 1e-6, 20, 4),)

    assert alarms.open_regressions(h, detector=lambda values, uncertainties: ()) == []
    (found,) = alarms.open_regressions(h, detector=stub)
    assert seen == [24] and found.first_run == "r20"
    assert math.isclose(found.slowdown, 1 / 0.85, rel_tol=0.01)  # measured on the series, not taken from the stub


# --- drift ---------------------------------------------------------------------------------------------


def test_drift_is_the_robust_spread_around_each_segment_not_the_steps(tmp_path: Path) -> None:
    rng = random.Random(3)
    values = [1000 * math.exp(rng.gauss(0, 0.02)) for _ in range(30)]
    values += [800 * math.exp(rng.gauss(0, 0.02)) for _ in range(30)]  # a step: a new level, not noise
    sigma, dof = drift.spread(values, [30])
    assert 0.012 < sigma < 0.03
    assert dof == pytest.approx(drift.MAD_EFFICIENCY * 58)
    assert drift.spread(values[:5]) == (pytest.approx(math.nan, nan_ok=True), 0.0)  # too few runs
    found = drift.case_drift(history(tmp_path, values))
    assert 0.012 < found[(CASE, "samples_per_s")].sigma < 0.03


def test_pooling_widens_on_a_noisier_figure_and_narrows_only_with_dof_to_back_it() -> None:
    stored = Prior(0.03, 4, between_hosts=0.02)
    assert pooled(stored, Prior(0.08, 2)) == Prior(0.08, 4, 0.02)  # noisier: always the wider
    assert pooled(stored, Prior(0.02, 3)) == stored  # quieter on 3 dof proves nothing
    narrowed = pooled(stored, Prior(0.005, 200))
    assert narrowed.sigma < 0.03 and narrowed.dof == 204 and narrowed.between_hosts == 0.02


def run(level: float, rng: random.Random) -> Measurement:
    sps = tuple(level * math.exp(rng.gauss(0, 0.003)) for _ in range(5))
    return Measurement(
        workload="io",
        device="cpu",
        config=LoaderConfig(batch_size=32),
        rounds={"samples_per_s": sps, "round_s": tuple(6400 / s for s in sps)},
        phases={},
        steady_batches=100,
        bytes_per_sample=1,
        peak_memory_bytes=None,
        memory_kind="",
        ideal_samples_per_s=None,
        torch_threads=1,
        cpus=2,
    )


def test_a_noisy_history_widens_the_gate_and_a_quiet_short_one_does_not_narrow_it(tmp_path: Path) -> None:
    rng = random.Random(5)
    baseline = BaselineStore(tmp_path)
    baseline.record(FP, [run(1000.0, rng)])
    case = run(1000.0, rng).case_id
    priors = NoisePriors(workloads={"io": {"samples_per_s": Prior(0.02, 20)}})
    today = run(1000.0, rng)

    def noise(drift_prior: Prior | None) -> float:
        gate = Gate(baseline, FP, priors=priors, drift={(case, "samples_per_s"): drift_prior} if drift_prior else None)
        (verdict,) = [v for v in gate.check(today) if v.metric == "samples_per_s"]
        return verdict.noise

    stored = noise(None)
    assert noise(Prior(0.08, 30)) > 2 * stored  # measured drift of 8%: the gate widens
    assert noise(Prior(0.012, 3)) == stored  # a quieter history of a few runs: the stored prior stands
    assert noise(Prior(0.005, 400)) < stored  # a quiet one with the dof to back it may narrow it


def test_the_common_offset_of_each_run_is_measured_and_widens_the_gates_offset_prior(tmp_path: Path) -> None:
    rng = random.Random(9)
    records = []
    for i in range(30):
        machine = rng.gauss(0, 0.04)  # every case of a run moves together: the machine's drift
        env = Environment(torch="2.13.0", git_commit=f"c{i:04d}")
        for c in range(6):
            v = 1000.0 * math.exp(machine + rng.gauss(0, 0.003))
            records.append(
                RunRecord(f"r{i}", f"2026-10-{1 + i // 24:02d}T{i % 24:02d}:00:00+00:00", env.git_commit, env,
                          f"case{c}", "io", "cpu", False, {"samples_per_s": Figure(v, v, v)})
            )  # fmt: skip
    store.append(tmp_path, FP, records)
    found = drift.offset_drift(store.read(tmp_path))
    assert 0.025 < found["samples_per_s"].sigma < 0.06
    assert found["samples_per_s"].dof == pytest.approx(drift.MAD_EFFICIENCY * 29)
    baseline = BaselineStore(tmp_path / "baselines")
    baseline.record(FP, [run(1000.0, rng)])
    priors = NoisePriors(offsets={"samples_per_s": Prior(0.015, 19)})
    plain = Gate(baseline, FP, priors=priors).offset_sigma()["samples_per_s"]
    widened = Gate(baseline, FP, priors=priors, offset_drift=found).offset_sigma()["samples_per_s"]
    assert widened > 2 * plain
