"""The suite's own benchmark cases: one per (workload, LoaderConfig, device) of the tier.

They run only under ``pytest --benchmark``; plain ``pytest`` skips them.  From an installed package:
``pytest --benchmark --pyargs loaderbench.suite``; this repository collects them through tests/bench.
"""

from __future__ import annotations

from typing import Any

import pytest

from loaderbench.config import LoaderConfig
from loaderbench.engine.case import Case
from loaderbench.engine.plan import Plan
from loaderbench.pytest_plugin.session import LoaderbenchSession
from loaderbench.selfcheck.meter import agreement, round_length_agreement
from loaderbench.selfcheck.overhead import NEAR_ZERO, harness_overhead
from loaderbench.workloads.recipes import Workload

#: How far a self-check ratio may stray from 1 before the harness is broken, not noisy: measured within 3% on a
#: quiet machine (docs/figures.md), so this bound only catches gross errors (a harness that undercounts by half), on any
#: machine CI lands on (the pairs are interleaved, so a busy neighbour slows both sides).
GROSS = 2.0


def _sane(name: str, ratio: float) -> None:
    assert 1 / GROSS < ratio < GROSS, (
        f"{name} = {ratio:.3f}: the harness bends what it measures by {GROSS:g}x or more (measured within 3% on a "
        "quiet machine); look for work inside the timed rounds"
    )


def test_pipeline(loaderbench_case: Case, loaderbench_session: LoaderbenchSession, benchmark: Any) -> None:
    m = loaderbench_session.run(loaderbench_case, benchmark)
    assert m.rounds["samples_per_s"], "no steady-state round was measured"


@pytest.mark.loaderbench
def test_harness_overhead(benchmark: Any, loaderbench_session: LoaderbenchSession) -> None:
    """The suite's own benchmark: harness samples/s over a bare loop's, same loader, same run."""
    if loaderbench_session.device == "cuda":
        pytest.skip("the harness-overhead benchmark is a CPU case; it runs with --loader-device=cpu or all")
    result = benchmark.pedantic(harness_overhead, kwargs={"repeats": 3}, rounds=1, iterations=1)
    benchmark.extra_info.update(
        workload=NEAR_ZERO.name,
        device="cpu",
        harness_over_bare_ratio=result.ratio,
        harness_samples_per_s=list(result.harness_samples_per_s),
        bare_samples_per_s=list(result.bare_samples_per_s),
    )
    _sane("harness_over_bare_ratio", result.ratio)


@pytest.mark.loaderbench
def test_harness_agreement(benchmark: Any, loaderbench_session: LoaderbenchSession) -> None:
    """The suite's own benchmark with workers: the harness against an independently written timing loop
    (:mod:`loaderbench.tools.meter`) on the 2-worker transfer case, the one a memory sampler inside the timed
    rounds once slowed by 14%.  ``extra_info["harness_over_meter_ratio"]``: 1.0 means the harness bends nothing."""
    s = loaderbench_session
    transfer = _cpu_workload(s, "transfer", "harness-agreement")
    config = LoaderConfig(batch_size=transfer.batch_size, num_workers=2)
    result = benchmark.pedantic(
        agreement, args=(transfer, config), kwargs={"pairs": 2, "plan": Plan(rounds=s.plan.rounds)}, rounds=1
    )
    benchmark.extra_info.update(
        workload=transfer.name,
        device="cpu",
        case_id=result.case_id,
        harness_over_meter_ratio=result.ratio,
        harness_samples_per_s=list(result.a),
        meter_samples_per_s=list(result.b),
    )
    _sane("harness_over_meter_ratio", result.ratio)


@pytest.mark.loaderbench
def test_round_length_agreement(benchmark: Any, loaderbench_session: LoaderbenchSession) -> None:
    """Round length must not change the answer: the 2-worker decode case (real JPEG decode, the kind of
    worker case whose short rounds once undercounted workers) at the default round length and at 4x it,
    paired.  ``extra_info["default_over_long_ratio"]``: 1.0 means the round length does not matter."""
    s = loaderbench_session
    decode = _cpu_workload(s, "decode", "round-length")
    config = LoaderConfig(batch_size=decode.batch_size, num_workers=2)
    plan = Plan(rounds=s.plan.rounds, round_s=s.plan.round_s)
    result = benchmark.pedantic(
        round_length_agreement, args=(decode, config), kwargs={"factor": 4, "pairs": 1, "plan": plan}, rounds=1
    )
    benchmark.extra_info.update(
        workload=decode.name,
        device="cpu",
        case_id=result.case_id,
        default_over_long_ratio=result.ratio,
        default_samples_per_s=list(result.a),
        long_samples_per_s=list(result.b),
    )
    _sane("default_over_long_ratio", result.ratio)


def _cpu_workload(session: LoaderbenchSession, name: str, benchmark: str) -> Workload:
    """Workload ``name`` of this run's selection, for a suite benchmark that needs it on CPU (else a skip)."""
    found = next((c.workload for c in session.cases() if c.workload.name == name), None)
    if session.device == "cuda" or found is None:
        pytest.skip(f"the {benchmark} benchmark needs the {name} workload on CPU in this run's selection")
    return found
