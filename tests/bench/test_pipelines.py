"""The suite's benchmark cases, collected here from the package (``loaderbench.suite.test_pipelines``), where an
installed loaderbench runs them too: ``pytest --benchmark --pyargs loaderbench.suite``."""

from __future__ import annotations

from loaderbench.suite.test_pipelines import (
    test_harness_agreement,
    test_harness_overhead,
    test_pipeline,
    test_round_length_agreement,
)

__all__ = ["test_harness_agreement", "test_harness_overhead", "test_pipeline", "test_round_length_agreement"]
