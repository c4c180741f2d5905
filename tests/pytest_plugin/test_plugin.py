"""The pytest plugin, driven through pytester in a fresh directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parents[2]
UNIT = """
def test_unit():
    assert True
"""


@pytest.fixture
def project(suite_project: Any) -> pytest.Pytester:
    return suite_project(0.0002, suite_project.ALL_TIERS, more_tests=UNIT)


def test_without_benchmark_the_cases_are_skipped(project: pytest.Pytester) -> None:
    result = project.runpytest("--loader-scenarios=workloads.toml")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*benchmark cases skipped*pytest --benchmark*"])


@pytest.mark.slow
def test_benchmark_runs_only_the_cases_and_records_extra_info(project: pytest.Pytester) -> None:
    result = project.runpytest_subprocess(
        "--benchmark",
        "--loader-scenarios=workloads.toml",
        "--loader-rounds=2",
        "--loader-round-seconds=0.02",
        "--loader-workloads=tiny-io",
        "--loader-config=w0-bs8",
        "--benchmark-json=out.json",
    )
    result.assert_outcomes(passed=1, deselected=1)
    result.stdout.fnmatch_lines(["*tier smoke: 1 cases*", "*tiny-io on cpu*", "*w0-bs8*"])
    data = json.loads((project.path / "out.json").read_text())
    info = data["benchmarks"][0]["extra_info"]
    for key in ("workload", "device", "config", "samples_per_s", "ttfb_s", "peak_memory_bytes", "ideal_samples_per_s"):
        assert key in info, key
    assert info["workload"] == "tiny-io" and info["device"] == "cpu"
    assert info["config"]["batch_size"] == 8 and info["config"]["num_workers"] == 0
    assert info["samples_per_s"] > 0 and info["peak_memory_bytes"] > 0
    assert len(info["rounds"]["samples_per_s"]) == 2


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--loader-tier=huge", "*--loader-tier='huge' is not one of smoke, standard, full*"),
        ("--loader-device=tpu", "*--loader-device='tpu' is not one of cpu, cuda, all*"),
        ("--loader-rounds=0", "*--loader-rounds='0' must be positive*"),
        ("--loader-round-seconds=abc", "*--loader-round-seconds='abc' is not a number*"),
    ],
)
def test_bad_option_values_are_usage_errors(project: pytest.Pytester, option: str, message: str) -> None:
    result = project.runpytest("--benchmark", option)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "Traceback" not in result.stderr.str()


def test_an_invalid_explicit_config_names_the_rule(project: pytest.Pytester) -> None:
    result = project.runpytest("--benchmark", "--loader-scenarios=workloads.toml", "--loader-config=w0-bs8-pf4")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*prefetch_factor=4: only applies to worker processes*Set num_workers>=1*"])


def test_a_missing_scenario_file_is_a_usage_error(project: pytest.Pytester) -> None:
    result = project.runpytest("--benchmark", "--loader-scenarios=nope.toml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*scenarios='nope.toml': file not found*"])


def test_help_lists_the_options_with_defaults(project: pytest.Pytester) -> None:
    result = project.runpytest("--help")
    result.stdout.fnmatch_lines(
        ["*loaderbench*", "*--benchmark*", "*--loader-tier*", "*smoke|standard|full. Default: smoke.*"]
    )
