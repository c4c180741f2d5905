"""Exit codes CI can trust (issue 14, item 5 and 3): a failed save, --loader-require-baseline and a run that
benchmarks nothing all exit non-zero, and pytest's final line says why (pytester)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import psutil
import pytest

RunResultOf = Callable[..., pytest.RunResult]


@pytest.fixture
def project(suite_project: Any) -> pytest.Pytester:
    return suite_project(0.001)


@pytest.mark.slow
def test_a_failed_save_exits_1_and_the_final_line_says_so(project: pytest.Pytester, run_suite: RunResultOf) -> None:
    assert run_suite(project, "--loader-baseline-save").ret == pytest.ExitCode.OK
    (doc_path,) = (project.path / "baselines").glob("*.json")
    doc_path.write_text('{"format": "loaderbench-baseline", "version": 1, "cases": {')  # truncated
    result = run_suite(project, "--loader-baseline-save")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    result.stdout.fnmatch_lines(["*the baseline was NOT saved*"])
    assert "1 baseline not saved" in result.stdout.lines[-1]


@pytest.mark.slow
def test_require_baseline_fails_a_run_without_one(project: pytest.Pytester, run_suite: RunResultOf) -> None:
    result = run_suite(project, "--loader-require-baseline")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    result.stdout.fnmatch_lines(["*--loader-require-baseline: no baseline matches this machine*"])
    assert "1 passed, 1 no baseline" in result.stdout.lines[-1]
    # without the option the same run only says so
    assert run_suite(project).ret == pytest.ExitCode.OK


@pytest.mark.slow
def test_require_baseline_passes_once_recorded(project: pytest.Pytester, run_suite: RunResultOf) -> None:
    assert run_suite(project, "--loader-baseline-save").ret == pytest.ExitCode.OK
    result = run_suite(project, "--loader-require-baseline")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()


@pytest.mark.slow
def test_a_run_comparing_fewer_cases_than_it_measured_says_so_on_its_last_line(
    project: pytest.Pytester, run_suite: RunResultOf, suite_project: Any
) -> None:
    assert run_suite(project, "--loader-baseline-save").ret == pytest.ExitCode.OK  # w0-bs8 only
    project.makefile(".toml", workloads=suite_project.scenario(name="other-io"))
    both = project.path / "both.toml"
    both.write_text((project.path / "workloads.toml").read_text() + suite_project.scenario())
    result = run_suite(project, "--loader-scenarios=both.toml")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    assert "2 passed, 1 not compared" in result.stdout.lines[-1]
    result = run_suite(project, "--loader-scenarios=both.toml", "--loader-require-baseline")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    assert "1 not compared" in result.stdout.lines[-1]
    result.stdout.fnmatch_lines(["*--loader-require-baseline: 1 case(s) have no matching baseline entry (other-io-*"])


@pytest.mark.slow
def test_a_selection_with_no_case_exits_5_with_the_reason(project: pytest.Pytester, suite_project: Any) -> None:
    project.makefile(".toml", workloads=suite_project.scenario(tiers=["full"]))
    result = project.runpytest_subprocess("--benchmark", "--loader-scenarios=workloads.toml", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED, result.stdout.str()
    result.stdout.fnmatch_lines(["*no benchmark case ran (exit 5): the selection has no case*"])


GPU_ONLY = """
import torch
from torch.utils.data import TensorDataset

from loaderbench.config import LoaderConfig


def test_gpu(loader_benchmark):
    loader_benchmark(TensorDataset(torch.zeros(64, 4)), LoaderConfig(batch_size=8), device="cuda")
"""


@pytest.mark.slow
def test_a_run_whose_every_case_skipped_exits_5_without_a_benchmark_warning(pytester: pytest.Pytester) -> None:
    """A ``loader_benchmark`` test skips inside its call (``device="cuda"`` on a machine without a GPU): a run that
    benchmarked nothing must not look green to CI (before: exit 0, and pytest-benchmark's "fixture was not used"
    warning beside the skip)."""
    pytester.makepyfile(test_gpu=GPU_ONLY)
    result = pytester.runpytest_subprocess("--benchmark", "-p", "no:cacheprovider", "-rs")
    out = result.stdout.str()
    if "no CUDA GPU" not in out:
        pytest.skip("this machine has a CUDA GPU: the test does not skip here")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED, out
    result.stdout.fnmatch_lines(["*no benchmark case ran (exit 5): every selected benchmark case was skipped*"])
    assert "fixture was not used" not in out


@pytest.mark.slow
def test_an_interrupted_run_exits_2_and_leaves_the_baseline_and_no_process(
    project: pytest.Pytester, run_suite: RunResultOf
) -> None:
    """Ctrl-C in the middle of a case (SIGINT to pytest): exit 2, the stored baseline untouched, no worker left."""
    assert run_suite(project, "--loader-baseline-save").ret == pytest.ExitCode.OK
    (stored,) = (project.path / "baselines").glob("*.json")
    before = stored.read_bytes()
    log = project.path / "run.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest", "--benchmark", "--loader-scenarios=workloads.toml",
             "--loader-config=w2-bs8", "--loader-rounds=200", "--loader-round-seconds=0.2",
             "--loader-baseline-dir=baselines", "--loader-baseline-save", "--loader-baseline-append",
             "-p", "no:cacheprovider"],
            cwd=project.path, stdout=out, stderr=subprocess.STDOUT,
            # a shell's background job ignores SIGINT, and so would this pytest (Python then installs no
            # KeyboardInterrupt handler): the child gets the default, as from a terminal
            preexec_fn=_default_sigint,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while len(psutil.Process(proc.pid).children()) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)  # the case's two DataLoader workers: it is measuring
            time.sleep(0.5)
            workers = psutil.Process(proc.pid).children(recursive=True)
            assert workers, "the case never started its workers"
            proc.send_signal(signal.SIGINT)
            code = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log.read_text()
    assert code == pytest.ExitCode.INTERRUPTED, text
    assert "nterrupted" in text, text
    assert stored.read_bytes() == before
    assert not [w.pid for w in workers if _alive(w)]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
