"""The benchmark cases themselves: one per (workload, LoaderConfig, device) of the tier.

They run only under ``pytest --benchmark``; plain ``pytest`` skips them.
"""

from __future__ import annotations

from typing import Any

from loaderbench.plugin import LoaderbenchSession
from loaderbench.tiers import Case


def test_pipeline(loaderbench_case: Case, loaderbench_session: LoaderbenchSession, benchmark: Any) -> None:
    m = loaderbench_session.run(loaderbench_case, benchmark)
    assert m.rounds["samples_per_s"], "no steady-state round was measured"
