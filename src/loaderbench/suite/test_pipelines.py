"""The suite's own benchmark cases: one per (workload, LoaderConfig, device) of the tier.

They run only under ``pytest --benchmark``; plain ``pytest`` skips them.  From an installed package:
``pytest --benchmark --pyargs loaderbench.suite``; this repository collects them through tests/bench.
"""

from __future__ import annotations

from typing import Any

import pytest

from loaderbench.engine.cases import Case
from loaderbench.pytest_plugin.session import LoaderbenchSession
from loaderbench.tools.overhead import NEAR_ZERO, harness_overhead


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
    assert result.ratio > 0
