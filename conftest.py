"""Repository wiring: hypothesis profiles (HYPOTHESIS_PROFILE=ci|dev|nightly)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# ci: bounded so `pytest` stays within a few minutes on 2 cores; no deadline, since
# examples that start worker processes take a variable, machine-dependent time.
# Every profile prints the reproduction blob of a failing example (@reproduce_failure).
# ci is derandomized, so a CI run is deterministic; dev and nightly explore new examples.
settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=10, deadline=None, print_blob=True)
settings.register_profile(
    "nightly", max_examples=1000, deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
