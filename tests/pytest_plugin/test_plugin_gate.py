"""The gate through the plugin: recording sessions, comparing, exit codes and bad input (pytester)."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

RunResultOf = Callable[..., pytest.RunResult]


@pytest.fixture
def project(suite_project: Any) -> pytest.Pytester:
    return suite_project(0.001)


@pytest.fixture
def run(run_suite: RunResultOf) -> RunResultOf:
    return functools.partial(run_suite, rounds=4, round_s=0.04)


@pytest.mark.slow
def test_no_baseline_reports_and_says_how_to_record(project: pytest.Pytester, run: RunResultOf) -> None:
    result = run(project)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        [
            "*no baseline for this machine*To record one with: pytest --benchmark --loader-scenarios=workloads.toml "
            "--loader-baseline-dir=baselines --loader-config=w0-bs8 --loader-baseline-save*"
        ]
    )


@pytest.mark.slow
def test_record_then_catch_a_real_slowdown_and_fail_with_exit_1(
    project: pytest.Pytester, run: RunResultOf, suite_project: Any
) -> None:
    first = run(project, "--loader-baseline-save")
    assert first.ret == pytest.ExitCode.OK
    # no noise prior of its own (a TOML workload): measured again in 2 fresh processes at this one save
    first.stdout.fnmatch_lines(
        ["*recorded 1 case(s) in *baselines*fresh process(es)*3 recording session(s). The gate * threshold*"]
    )
    (doc_path,) = (project.path / "baselines").glob("*.json")
    doc = json.loads(doc_path.read_text())
    assert doc["format"] == "loaderbench-baseline"

    same = run(project)
    assert same.ret == pytest.ExitCode.OK, same.stdout.str()
    same.stdout.fnmatch_lines(["*comparing against*environment changes since the baseline: none*", "*0 regressed*"])

    # every sample now takes 3x as long: one save (three processes) already gates it
    project.makefile(".toml", workloads=suite_project.scenario(0.003))
    slower = run(project, "--benchmark-json=out.json")
    assert slower.ret == pytest.ExitCode.TESTS_FAILED
    # pytest's own final line agrees with the exit code: not an all-green "1 passed"
    assert "1 passed, 1 regressed" in slower.stdout.lines[-1]
    slower.stdout.fnmatch_lines(["*loaderbench: the run fails: 1 case(s) regressed*"])
    slower.stdout.fnmatch_lines(
        [
            "*REGRESSIONS: 1 case, *",
            "*tiny-io-cpu-w0-bs8*samples_per_s*slower*",
            "*environment changes since the baseline*",
        ]
    )
    info = json.loads((project.path / "out.json").read_text())["benchmarks"][0]["extra_info"]
    outcomes = {v["metric"]: v["outcome"] for v in info["gate"]}
    assert outcomes["samples_per_s"] == "regressed"
    assert json.loads(doc_path.read_text()) == doc  # comparing never writes the baseline


@pytest.mark.slow
def test_a_corrupt_baseline_is_a_clear_error_naming_the_file(project: pytest.Pytester, run: RunResultOf) -> None:
    assert run(project, "--loader-baseline-save").ret == pytest.ExitCode.OK
    (doc_path,) = (project.path / "baselines").glob("*.json")
    doc_path.write_text('{"format": "loaderbench-baseline", "version": 1, "cases": {')  # truncated
    result = run(project)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    result.stderr.fnmatch_lines([f"*{doc_path.name}*"])
    assert "Traceback" not in result.stderr.str()


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--loader-threshold=-5%", "*--loader-threshold*-5%*"),
        ("--loader-threshold=abc", "*--loader-threshold*abc*"),
        ("--loader-threshold=nosuchmetric=5%", "*nosuchmetric*"),
        ("--loader-max-extra=-1", "*--loader-max-extra='-1' must be 0 or more*"),
        # checked before anything is measured, not a traceback after the last case
        ("--loader-report=/dev/null/report", "*--loader-report=/dev/null/report: cannot create or write files*"),
        ("--loader-scenarios=.", "*scenarios='.': cannot be read as a text file (IsADirectoryError*"),
    ],
)
def test_bad_gate_options_are_usage_errors(project: pytest.Pytester, option: str, message: str) -> None:
    result = project.runpytest("--benchmark", option)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_append_without_save_is_a_usage_error(project: pytest.Pytester) -> None:
    result = project.runpytest("--benchmark", "--loader-scenarios=workloads.toml", "--loader-baseline-append")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--loader-baseline-append only applies when recording*"])


@pytest.mark.slow
def test_a_baseline_dir_that_does_not_exist_is_created_on_save(project: pytest.Pytester, run: RunResultOf) -> None:
    target = Path(project.path) / "deep" / "new"
    assert run(project, "--loader-baseline-save", f"--loader-baseline-dir={target}").ret == pytest.ExitCode.OK
    assert list(target.glob("*.json"))


@pytest.mark.slow
def test_a_misspelled_per_case_threshold_is_a_usage_error_listing_the_cases(
    project: pytest.Pytester, run: RunResultOf
) -> None:
    typo = run(project, "--loader-threshold=typo-case-w2:samples_per_s=5%", "--collect-only")
    assert typo.ret == pytest.ExitCode.USAGE_ERROR
    typo.stderr.fnmatch_lines(
        ["*--loader-threshold: case 'typo-case-w2' is not a case of this run*Known case ids: tiny-io-cpu-w0-bs8*"]
    )
    assert "Traceback" not in typo.stderr.str()
    right = run(project, "--loader-threshold=tiny-io-cpu-w0-bs8:samples_per_s=5%", "--collect-only")
    assert right.ret == pytest.ExitCode.OK, right.stdout.str() + right.stderr.str()


def test_a_threshold_above_100_percent_is_refused_and_the_help_says_what_it_means(project: pytest.Pytester) -> None:
    result = project.runpytest("--benchmark", "--loader-threshold=200%")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*'200%' would tolerate more than a 2x change*Use at most 100%*"])
    helped = project.runpytest("--help")
    text = " ".join(helped.stdout.str().split())  # argparse wraps the help
    assert "the tolerated change in the bad direction (10%: up to 1.10x slower passes; at most 100%" in text


@pytest.mark.slow
def test_the_baselines_spin_calibration_is_reused_when_comparing(project: pytest.Pytester, run: RunResultOf) -> None:
    """A baseline that recorded the cpu workload's spin calibration lends it to the comparing process (whose own
    calibration could come out a few percent off and move every cpu case); the run says so."""
    assert run(project, "--loader-baseline-save").ret == pytest.ExitCode.OK
    (doc_path,) = (project.path / "baselines").glob("*.json")
    doc = json.loads(doc_path.read_text())
    assert len(doc["sessions"]) == 3  # one save: this process and 2 fresh ones
    for session, loops in zip(doc["sessions"].values(), [12000.0, 12345.0, 99000.0], strict=True):
        session["calibration"] = {"spin_loops_per_s": loops}  # their median is what is reused
    doc_path.write_text(json.dumps(doc))
    result = run(project)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.stdout.fnmatch_lines(["*cpu workload: the baseline's spin calibration (1.234e+04 loops/s) reused*"])
