"""The Gate over a baseline store: a case checked against its recorded sessions, confirmed in fake fresh
processes, and the summary it leaves (a baseline missing, from another machine, too short, or from another
torch).  The decision rules on their own are in test_gate.py.

Every measurement comes from a seeded ``random.Random``; nothing here measures time.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest

from loaderbench.config import LoaderConfig
from loaderbench.errors import CaseFailed, UsageError
from loaderbench.gate.job import Gate
from loaderbench.gate.model import Settings, Verdict
from loaderbench.gate.priors import NoisePriors, Prior
from loaderbench.measurement import Measurement
from loaderbench.report.verdicts import summary_lines
from loaderbench.store.baseline import BaselineStore
from loaderbench.store.environment import Environment
from loaderbench.store.fingerprint import Fingerprint

#: The noise prior the torch-upgrade case is gated with (one session of baseline).
PRIOR = Prior(sigma=0.02, dof=30, between_hosts=0.03)


def fingerprint(**changes: object) -> Fingerprint:
    fields: dict[str, object] = {
        "machine": "x86_64",
        "cpu_model": "Test CPU",
        "affinity_cpus": 2,
        "cpu_quota": None,
        "ram_bytes": 8 * 2**30,
        "gpus": (),
    }
    fields.update(changes)
    return Fingerprint(**fields)  # type: ignore[arg-type]


def measurement(rng: random.Random, level: float, *, workers: int = 0, ttfb: float = 0.05) -> Measurement:
    sps = tuple(level * math.exp(rng.gauss(0, 0.005)) for _ in range(5))
    return Measurement(
        workload="io",
        device="cpu",
        config=LoaderConfig(batch_size=32, num_workers=workers),
        rounds={"samples_per_s": sps, "round_s": tuple(6400 / s for s in sps)},
        phases={"ttfb_s": ttfb * math.exp(rng.gauss(0, 0.01)), "epoch_stall_s": 0.04},
        steady_batches=100,
        bytes_per_sample=12288,
        peak_memory_bytes=300 * 2**20,
        memory_kind="pss",
        ideal_samples_per_s=None,
        torch_threads=1,
        cpus=2,
    )


@pytest.fixture
def recorded(tmp_path: Path) -> BaselineStore:
    store = BaselineStore(tmp_path)
    rng = random.Random(11)
    for _ in range(10):  # ten recording sessions
        store.record(fingerprint(), [measurement(rng, 1000.0)], append=True)
    return store


class Confirm:
    """A fake fresh process: measures every asked case at ``level``."""

    def __init__(self, level: float, seed: int = 12) -> None:
        self.rng, self.level, self.calls = random.Random(seed), level, 0

    def __call__(self, case_ids: Sequence[str]) -> dict[str, Measurement]:
        self.calls += 1
        return {cid: measurement(self.rng, self.level) for cid in case_ids}


def judged(gate: Gate, m: Measurement, confirm: Callable[[Sequence[str]], Mapping[str, Measurement]]) -> list[Verdict]:
    """One case through the gate as a session does: kept, then the job decided."""
    gate.check(m)
    gate.finalize(confirm=confirm)
    return list(gate.verdicts)


def test_gate_passes_an_unchanged_case_without_extra_measurements(recorded: BaselineStore) -> None:
    gate = Gate(recorded, fingerprint())
    again = Confirm(1000.0)
    verdicts = judged(gate, measurement(random.Random(13), 1000.0), again)
    assert {v.metric for v in verdicts} == {"samples_per_s", "ttfb_s", "epoch_stall_s", "peak_memory_bytes"}
    assert all(v.outcome == "unchanged" for v in verdicts)
    assert again.calls == 0
    assert not gate.failed
    assert gate.status().startswith("comparing against")


def test_gate_confirms_then_fails_a_regression(recorded: BaselineStore) -> None:
    gate = Gate(recorded, fingerprint(), max_extra_measurements=3)
    again = Confirm(700.0)
    first = gate.check(measurement(random.Random(14), 700.0))
    assert next(v for v in first if v.metric == "samples_per_s").needs_more  # provisional: one process
    gate.finalize(confirm=again)
    sps = next(v for v in gate.verdicts if v.metric == "samples_per_s")
    assert sps.outcome == "regressed"
    assert 1 <= again.calls <= 3
    assert sps.current_runs == 1 + again.calls
    assert gate.failed
    lines = summary_lines(gate)
    assert lines[1] == "REGRESSIONS: 1 case, 1 metric:"
    assert "io-cpu-w0-bs32" in lines[3] and "1.43x slower" in lines[3]


def test_gate_extra_measurements_are_bounded(recorded: BaselineStore) -> None:
    gate = Gate(recorded, fingerprint(), max_extra_measurements=2, settings=Settings(confirm=5))
    again = Confirm(700.0)
    judged(gate, measurement(random.Random(15), 700.0), again)
    assert again.calls == 2


def test_gate_survives_a_failing_extra_measurement(recorded: BaselineStore) -> None:
    def broken(case_ids: Sequence[str]) -> dict[str, Measurement]:
        raise CaseFailed("case io-cpu-w0-bs32: worker killed")

    gate = Gate(recorded, fingerprint())
    verdicts = judged(gate, measurement(random.Random(16), 700.0), broken)
    sps = next(v for v in verdicts if v.metric == "samples_per_s")
    assert sps.outcome == "inconclusive" and "fresh process" in sps.reason  # never confirmed: not red
    assert any("in a fresh process failed" in line for line in summary_lines(gate))


def test_gate_skips_new_cases_and_absent_metrics(recorded: BaselineStore) -> None:
    gate = Gate(recorded, fingerprint())
    assert gate.check(measurement(random.Random(17), 1000.0, workers=2)) == []
    assert "no baseline entry (1): io-cpu-w2-bs32" in "\n".join(summary_lines(gate))
    verdicts = gate.check(measurement(random.Random(18), 1000.0))
    assert "feed_samples_per_s" not in {v.metric for v in verdicts}


def test_gate_without_baseline_says_how_to_record(tmp_path: Path) -> None:
    gate = Gate(BaselineStore(tmp_path / "missing"), fingerprint())
    assert not gate.active
    assert "--loader-baseline-save" in gate.status()
    assert gate.check(measurement(random.Random(19), 1.0)) == []
    assert gate.finalize(confirm=Confirm(1.0)) is None
    assert not gate.failed


def test_gate_on_another_machine_says_what_differs_and_does_not_compare(recorded: BaselineStore) -> None:
    other = fingerprint(affinity_cpus=4)
    gate = Gate(recorded, other)
    assert not gate.active
    assert "CPUs in the affinity mask: 2 (baseline) vs 4 (this machine)" in gate.status()
    assert "--loader-compare-anyway" in gate.status()
    anyway = Gate(recorded, other, allow_mismatch=True)
    assert anyway.active
    assert anyway.status().startswith("comparing anyway")
    assert anyway.check(measurement(random.Random(20), 1000.0))


def test_gate_rejects_negative_extra_budget(recorded: BaselineStore) -> None:
    with pytest.raises(UsageError, match="max_extra_measurements=-1"):
        Gate(recorded, fingerprint(), max_extra_measurements=-1)


def test_gate_does_not_remeasure_when_session_noise_is_the_limit(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    rng = random.Random(23)
    for level in (700.0, 1000.0, 1300.0):
        store.record(fingerprint(), [measurement(rng, level)], append=True)
    gate = Gate(store, fingerprint())
    again = Confirm(900.0)
    verdicts = judged(gate, measurement(rng, 900.0), again)
    sps = next(v for v in verdicts if v.metric == "samples_per_s")
    assert sps.outcome == "inconclusive"
    assert "too noisy" in sps.reason or "needs 3" in sps.reason
    assert again.calls == 0


def test_a_baseline_from_too_few_sessions_cannot_fail_the_run(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    rng = random.Random(24)
    store.record(fingerprint(), [measurement(rng, 1000.0) for _ in range(3)])  # one session, 3 runs
    gate = Gate(store, fingerprint())
    verdicts = judged(gate, measurement(rng, 500.0), Confirm(500.0))
    sps = next(v for v in verdicts if v.metric == "samples_per_s")
    assert sps.outcome == "inconclusive"
    assert sps.baseline_sessions == 1
    assert "--loader-baseline-append" in sps.reason
    assert not gate.failed
    assert "cannot fail the run yet" in gate.status()
    expected = "not gated, baseline from fewer than 3 sessions (1): io-cpu-w0-bs32"
    assert any(line.startswith(expected) for line in summary_lines(gate))
    unchanged = judged(Gate(store, fingerprint()), measurement(rng, 1000.0), Confirm(1000.0))
    assert all(v.outcome == "unchanged" for v in unchanged)


def test_a_torch_upgrade_is_compared_and_named(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    rng = random.Random(31)
    old = Environment(torch="2.13.0+cpu", kernel="6.18.44-fc-v669", host_id="aaa")
    store.record(fingerprint(), [measurement(rng, 1000.0)], environment=old)
    new = Environment(torch="2.14.1+cpu", kernel="6.18.44-fc-v857", host_id="aaa")
    gate = Gate(store, fingerprint(), environment=new, priors=NoisePriors(default={"samples_per_s": PRIOR}))
    assert gate.active and not gate.other_host
    assert "torch 2.13.0+cpu -> 2.14.1+cpu; kernel 6.18.44-fc-v669 -> 6.18.44-fc-v857" in gate.status()
    verdicts = judged(gate, measurement(rng, 700.0), Confirm(700.0))
    assert {v.metric: v.outcome for v in verdicts}["samples_per_s"] == "regressed"
    lines = summary_lines(gate)
    assert "  environment changes since the baseline: torch 2.13.0+cpu -> 2.14.1+cpu; kernel" in "\n".join(lines)
    elsewhere = Gate(store, fingerprint(), environment=Environment(host_id="bbb"), priors=NoisePriors())
    assert elsewhere.other_host and "not one the baseline was recorded on" in elsewhere.status()


def test_memory_measured_another_way_than_the_baseline_is_not_compared_and_says_so(recorded: BaselineStore) -> None:
    gate = Gate(recorded, fingerprint())
    now = dataclasses.replace(measurement(random.Random(13), 1000.0), memory_kind="pss-anon", peak_memory_bytes=2**20)
    verdicts = judged(gate, now, Confirm(1000.0))
    assert {v.metric for v in verdicts} == {"samples_per_s", "ttfb_s", "epoch_stall_s"}  # no memory verdict
    assert not gate.failed
    assert any("peak memory was measured as pss in the baseline and pss-anon now" in n for n in gate.notes)
