"""Exit codes CI can trust (issue 14, item 5 and 3): a failed save, --loader-require-baseline and a run that
benchmarks nothing all exit non-zero, and pytest's final line says why (pytester)."""

from __future__ import annotations

import pytest

BENCH = """
def test_pipeline(loaderbench_case, loaderbench_session, benchmark):
    loaderbench_session.run(loaderbench_case, benchmark)
"""

SCENARIO = """
[[workload]]
name = "tiny-io"
kind = "sleep"
latency_s = 0.001
shape = [4]
batch_size = 8
tiers = {tiers}
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makefile(".toml", workloads=SCENARIO.format(tiers='["smoke"]'))
    pytester.makepyfile(test_bench=BENCH)
    return pytester


def run(p: pytest.Pytester, *args: str) -> pytest.RunResult:
    return p.runpytest_subprocess(
        "--benchmark",
        "--loader-scenarios=workloads.toml",
        "--loader-config=w0-bs8",
        "--loader-rounds=3",
        "--loader-round-seconds=0.03",
        "--loader-baseline-dir=baselines",
        "-p",
        "no:cacheprovider",
        *args,
    )


def test_a_failed_save_exits_1_and_the_final_line_says_so(project: pytest.Pytester) -> None:
    assert run(project, "--loader-baseline-save").ret == pytest.ExitCode.OK
    (doc_path,) = (project.path / "baselines").glob("*.json")
    doc_path.write_text('{"format": "loaderbench-baseline", "version": 1, "cases": {')  # truncated
    result = run(project, "--loader-baseline-save")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    result.stdout.fnmatch_lines(["*the baseline was NOT saved*"])
    assert "1 baseline not saved" in result.stdout.lines[-1]


def test_require_baseline_fails_a_run_without_one(project: pytest.Pytester) -> None:
    result = run(project, "--loader-require-baseline")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    result.stdout.fnmatch_lines(["*--loader-require-baseline: no baseline matches this machine*"])
    assert "1 passed, 1 no baseline" in result.stdout.lines[-1]
    # without the option the same run only says so
    assert run(project).ret == pytest.ExitCode.OK


def test_require_baseline_passes_once_recorded(project: pytest.Pytester) -> None:
    assert run(project, "--loader-baseline-save").ret == pytest.ExitCode.OK
    result = run(project, "--loader-require-baseline")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()


def test_a_run_comparing_fewer_cases_than_it_measured_says_so_on_its_last_line(project: pytest.Pytester) -> None:
    assert run(project, "--loader-baseline-save").ret == pytest.ExitCode.OK  # w0-bs8 only
    project.makefile(".toml", workloads=SCENARIO.format(tiers='["smoke"]').replace("tiny-io", "other-io"))
    both = project.path / "both.toml"
    both.write_text((project.path / "workloads.toml").read_text() + SCENARIO.format(tiers='["smoke"]'))
    result = run(project, "--loader-scenarios=both.toml")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    assert "2 passed, 1 not compared" in result.stdout.lines[-1]
    result = run(project, "--loader-scenarios=both.toml", "--loader-require-baseline")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    assert "1 not compared" in result.stdout.lines[-1]
    result.stdout.fnmatch_lines(["*--loader-require-baseline: 1 case(s) have no matching baseline entry (other-io-*"])


def test_a_selection_with_no_case_exits_5_with_the_reason(project: pytest.Pytester) -> None:
    project.makefile(".toml", workloads=SCENARIO.format(tiers='["full"]'))
    result = project.runpytest_subprocess("--benchmark", "--loader-scenarios=workloads.toml", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED, result.stdout.str()
    result.stdout.fnmatch_lines(["*no benchmark case ran (exit 5): the selection has no case*"])
