"""The suite's own tiers from the installed package, in a directory with none of this repository's files, and a
user's own scenario file there (pytester)."""

from __future__ import annotations

from pathlib import Path

import pytest

from loaderbench import data

MINE = """
[[workload]]
name = "mine"
kind = "sleep"
latency_s = 0.001
shape = [4]
batch_size = 8
"""


@pytest.mark.slow
def test_the_packaged_tiers_are_collected_in_any_directory(pytester: pytest.Pytester) -> None:
    assert not (pytester.path / "fixtures").exists()
    result = pytester.runpytest_subprocess("--benchmark", "--pyargs", "loaderbench.suite", "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.stdout.fnmatch_lines(["*test_pipeline[[]io-cpu-w0-bs*", "*test_harness_overhead*"])


@pytest.mark.slow
def test_a_users_scenario_file_runs_through_the_packaged_cases(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", mine=MINE)  # no tiers key: in every tier
    result = pytester.runpytest_subprocess(
        "--benchmark",
        "--pyargs",
        "loaderbench.suite",
        "--loader-scenarios=mine.toml",
        "--loader-config=w0-bs8",
        "--loader-rounds=3",
        "--loader-round-seconds=0.03",
        "-k",
        "not harness_overhead and not harness_agreement and not round_length_agreement",
        "-p",
        "no:cacheprovider",
    )
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.assert_outcomes(passed=1, deselected=3)
    result.stdout.fnmatch_lines(["*mine-cpu-w0-bs8*"])


def test_the_suite_data_exists_once() -> None:
    """The scenario and noise-prior files live in the package only: no copy to keep in step."""
    repo = Path(__file__).parents[2]
    copies = sorted(
        str(p.relative_to(repo))
        for top in ("fixtures", "src", "tests")
        for name in ("workloads.toml", "noise.toml")
        for p in (repo / top).rglob(name)
    )
    assert copies == ["src/loaderbench/data/noise.toml", "src/loaderbench/data/workloads.toml"]
    assert data.local_or_packaged(repo, data.WORKLOADS) == data.WORKLOADS
