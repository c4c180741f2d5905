"""Repository wiring: hypothesis profiles (HYPOTHESIS_PROFILE=ci|dev|nightly); inner pytest runs without
pytest-randomly."""

from __future__ import annotations

import os

import pytest
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


#: Added to PYTEST_ADDOPTS for every pytest this suite starts (pytester's inner runs, fresh confirming processes):
#: pytest-randomly, a test dependency, would otherwise shuffle their order and reseed their random state.
#: tests/pytest_plugin/test_plugin_thirdparty.py opts back in where it tests pytest-randomly itself.
INNER_ADDOPTS = "-p no:randomly"


@pytest.fixture(autouse=True)
def _inner_runs_unshuffled(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if "pytester" in request.fixturenames:
        request.getfixturevalue("pytester")  # it clears PYTEST_ADDOPTS when it starts: set it after
    addopts = os.environ.get("PYTEST_ADDOPTS", "")
    if INNER_ADDOPTS not in addopts:
        monkeypatch.setenv("PYTEST_ADDOPTS", f"{addopts} {INNER_ADDOPTS}".strip())
