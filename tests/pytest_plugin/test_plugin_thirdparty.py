"""The plugins real repositories carry, run for real in a user's repository (pytester, a subprocess each):
pytest-xdist never measures nor records benchmark cases (a usage error before any worker starts; plain ``-n`` keeps
the unit tests parallel), a global pytest-timeout setting does not cut a case short (and a test's own timeout
marker that fires reads as the suite's paragraph, no worker left), pytest-randomly changes nothing in kind.

The suite's own conftest keeps pytest-randomly out of every inner run (``PYTEST_ADDOPTS``); the randomly test
lets it back in."""

from __future__ import annotations

import functools
import json
import os
import signal
import time
from collections.abc import Callable
from types import FrameType

import pytest

from loaderbench.engine.cleanup import alarm_held
from loaderbench.pytest_plugin import parallel

#: The user's benchmark tests (after ``user_repo``'s dataset ``Slow`` and unit test).
BENCHMARKS = """

def test_first_pipeline(loader_benchmark):
    loader_benchmark(Slow, LoaderConfig(num_workers=0, batch_size=4))


def test_second_pipeline(loader_benchmark):
    loader_benchmark(Slow, LoaderConfig(num_workers=0, batch_size=4))
"""

#: The baseline case ids of the two benchmark tests (test name, config id, device, config id).
CASE_IDS = {"test_first_pipeline-cpu-w0-bs4", "test_second_pipeline-cpu-w0-bs4"}
#: What xdist prints once it has started its workers.
WORKERS_STARTED = "created: "
RunResultOf = Callable[..., pytest.RunResult]


@pytest.fixture
def make_repo(user_repo: Callable[..., None]) -> Callable[..., None]:
    """``make_repo(delay=0.001)``: the user's repository, a unit test and two benchmark tests in test_repo.py."""
    return functools.partial(user_repo, BENCHMARKS)


@pytest.fixture
def run(run_fast: RunResultOf) -> RunResultOf:
    return functools.partial(run_fast, rounds=2, round_s=0.05)


def baseline_case_ids(p: pytest.Pytester) -> dict[str, int]:
    """The recorded case ids, each with how many recording sessions it holds."""
    (doc,) = (p.path / "baselines").glob("*.json")
    cases = json.loads(doc.read_text())["cases"]
    return {case: len({r["session"] for r in entry["runs"]}) for case, entry in cases.items()}


@pytest.mark.parametrize(
    ("addopts", "args", "named"),
    [
        ("", ["-n", "2", "--benchmark"], "-n=2 (pytest-xdist) with --benchmark:"),
        ("", ["-n", "2", "--benchmark", "--loader-baseline-save"], "-n=2 (pytest-xdist) with --benchmark --loader-*"),
        ("-n auto", ["--benchmark", "--loader-baseline-save"], "-n=auto (* workers) (pytest-xdist) with --benchmark *"),
    ],
    ids=["n2-benchmark", "n2-baseline-save", "addopts-auto-baseline-save"],
)
@pytest.mark.slow
def test_xdist_with_benchmark_is_a_usage_error_before_any_worker_starts(
    pytester: pytest.Pytester,
    addopts: str,
    args: list[str],
    named: str,
    make_repo: Callable[..., None],
    run: RunResultOf,
) -> None:
    """-n N (or -n auto from addopts) with --benchmark: exit 4 in the controller, before any worker starts, naming
    the option and value, why, and what to do; no baseline (nor any other JSON) is written anywhere."""
    make_repo()
    if addopts:
        pytester.makeini(f"[pytest]\naddopts = {addopts}\n")
    result = run(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    result.stderr.fnmatch_lines([f"ERROR: {named}*one at a time, alone*record a baseline from each worker*`-n 0`*"])
    assert WORKERS_STARTED not in result.stdout.str()
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    assert not (pytester.path / "baselines").exists()
    assert list(pytester.path.rglob("*.json")) == []


def test_an_xdist_worker_asked_to_measure_refuses_whatever_the_options(pytester: pytest.Pytester) -> None:
    """Defence in depth: a process that is an xdist worker (config.workerinput) refuses --benchmark and
    --loader-baseline-save even where nothing distributes (the controller refuses first in a real run); a worker
    running plain unit tests, and a run without xdist, go on."""
    config = pytester.parseconfig("-n", "0", "--benchmark", "--loader-baseline-save")
    assert parallel.refusal(config) == ""  # -n 0: not distributed, and not a worker
    config.workerinput = {"workerid": "gw1"}  # type: ignore[attr-defined]
    message = parallel.refusal(config)
    assert message.startswith("--benchmark --loader-baseline-save in the pytest-xdist worker gw1: a worker never")
    assert "`-n 0`" in message
    assert parallel.refusal(pytester.parseconfig("-n", "2")) == ""  # unit tests in parallel: fine
    assert parallel.refusal(pytester.parseconfig("-p", "no:xdist", "--benchmark")) == ""


@pytest.mark.slow
def test_dash_n_0_overrides_an_n_in_addopts_and_the_job_runs_and_records(
    pytester: pytest.Pytester, make_repo: Callable[..., None], run: RunResultOf
) -> None:
    """addopts = -n 2 with --benchmark -n 0: measured in this one process (exit 0), and the baseline recorded,
    including the fresh-process sessions, whose pytest reads the same addopts and still runs the tests alone."""
    make_repo()
    pytester.makeini("[pytest]\naddopts = -n 2\n")
    result = run(pytester, "--benchmark", "-n", "0", "--loader-baseline-save")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
    result.assert_outcomes(passed=2, deselected=1)
    assert WORKERS_STARTED not in result.stdout.str()
    result.stdout.fnmatch_lines(["*recorded 2 case(s) in *measured again in 2 fresh process(es)*"])
    assert baseline_case_ids(pytester) == dict.fromkeys(CASE_IDS, 3)


@pytest.mark.slow
def test_plain_xdist_runs_the_unit_tests_in_parallel_and_skips_the_benchmarks(
    pytester: pytest.Pytester, make_repo: Callable[..., None], run: RunResultOf
) -> None:
    """pytest -n 2 without --benchmark: the workers run the unit test, the benchmark tests skip as they do without
    xdist, and nothing (no exit 5, no 'no benchmark case ran') contradicts the green last line."""
    make_repo()
    result = run(pytester, "-n", "2")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines(["*created: 2/2 workers*"])
    assert "no benchmark case" not in result.stdout.str()
    assert "exit 5" not in result.stdout.str()
    assert result.stdout.lines[-1].lstrip("= ").startswith("1 passed, 2 skipped")
    assert not (pytester.path / "baselines").exists()


@pytest.mark.slow
def test_a_global_timeout_smaller_than_a_case_is_raised_to_fit_its_plan(
    pytester: pytest.Pytester, make_repo: Callable[..., None], run: RunResultOf
) -> None:
    """--timeout=2 while each case sleeps at least 2.5 s (16 batches of 4 samples at 40 ms, at the least, by the
    plan's minimum of 4 batches a round): each gets a timeout that fits its plan, and both are measured."""
    make_repo(delay=0.04)
    result = run(pytester, "--benchmark", "--timeout=2")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
    result.assert_outcomes(passed=2, deselected=1)
    result.stdout.fnmatch_lines(
        [
            "loaderbench: pytest-timeout's timeout=2 s is raised to * s for benchmark cases without a timeout marker "
            "of their own, to fit --loader-rounds=2, --loader-round-seconds=0.05 and --loader-batch-timeout=120",
            "*test_first_pipeline on cpu: 1 case(s)*",
            "*test_second_pipeline on cpu: 1 case(s)*",
        ]
    )
    assert "Timeout" not in result.stdout.str() + result.stderr.str()


TIGHT_TEST = """
import time

import pytest
import torch
from torch.utils.data import Dataset

from loaderbench.config import LoaderConfig


class Slow(Dataset):
    def __len__(self):
        return 64

    def __getitem__(self, i):
        time.sleep(0.1)
        return torch.zeros(4)


@pytest.mark.timeout(1)
def test_tight(loader_benchmark):
    loader_benchmark(Slow, LoaderConfig(num_workers=2, batch_size=4))
"""

#: Counts the DataLoader workers (any process the cases started) still alive when the inner pytest ends.
LEFT_BEHIND = """
import pathlib

import psutil

from loaderbench.engine.cleanup import case_processes


def pytest_unconfigure(config):
    pathlib.Path("left_behind.txt").write_text(str(len(case_processes(psutil.Process(), ()))))
"""


@pytest.mark.slow
def test_a_tests_own_timeout_marker_that_fires_reads_as_one_paragraph_and_leaves_no_worker(
    pytester: pytest.Pytester, run: RunResultOf
) -> None:
    """A test's own @pytest.mark.timeout(1), under a case that needs over 3 s: exit 1, the failure is the suite's
    paragraph naming the case, the phase and what to do (no traceback, no dump of the harness's threads), the case is
    listed with the failed ones, and no worker process is left."""
    pytester.makepyfile(test_tight=TIGHT_TEST)
    pytester.makeconftest(LEFT_BEHIND)
    result = run(pytester, "--benchmark")
    out = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED, out
    result.assert_outcomes(failed=1)
    paragraph = (
        "case test_tight-cpu-w2-bs4 failed: pytest-timeout stopped it after 1 s while *; the harness stopped its "
        "DataLoader workers. Remedy: raise the test's timeout marker to fit the plan (at least * s at "
        "--loader-rounds=2, *), or drop it*"
    )
    result.stdout.fnmatch_lines([paragraph, "1 case(s) failed:", f"  {paragraph}"])
    assert "Traceback" not in out
    assert "psutil" not in out
    assert "+++ Timeout" not in out
    assert (pytester.path / "left_behind.txt").read_text() == "0"


class Alarm(Exception):
    """What the alarm handler of the test below raises (pytest-timeout's raises Failed)."""


def _ring(signum: int, frame: FrameType | None) -> None:
    raise Alarm


def test_an_alarm_that_lands_in_a_cases_clean_up_is_held_until_the_clean_up_is_done() -> None:
    """pytest-timeout's alarm (SIGALRM) landing while a case cleans up (stops its workers) does not cut the clean-up
    short: its handler runs once the block is done, and the handler is back in place."""
    previous = signal.signal(signal.SIGALRM, _ring)
    finished = []
    try:
        with pytest.raises(Alarm), alarm_held():
            signal.setitimer(signal.ITIMER_REAL, 0.01)
            time.sleep(0.2)  # the alarm rings in here
            finished.append(True)
        assert signal.getsignal(signal.SIGALRM) is _ring
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert finished == [True]


@pytest.mark.slow
def test_randomly_shuffles_the_order_and_changes_nothing_in_kind(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, make_repo: Callable[..., None], run: RunResultOf
) -> None:
    """pytest-randomly with a fixed seed (2: second benchmark test, unit test, first benchmark test, by its crc32 of
    the node ids): the benchmark tests run in the shuffled order, pass as without it, and the baseline holds the same
    case ids, each with its fresh-process sessions."""
    monkeypatch.setenv("PYTEST_ADDOPTS", os.environ.get("PYTEST_ADDOPTS", "").replace("-p no:randomly", ""))
    make_repo()
    result = run(pytester, "-p", "randomly", "--randomly-seed=2", "-v", "--benchmark", "--loader-baseline-save")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
    result.assert_outcomes(passed=2, deselected=1)
    result.stdout.fnmatch_lines(
        [
            "Using --randomly-seed=2",
            "test_repo.py::test_second_pipeline PASSED*",
            "test_repo.py::test_first_pipeline PASSED*",
        ]
    )
    assert baseline_case_ids(pytester) == dict.fromkeys(CASE_IDS, 3)


@pytest.mark.slow
def test_coverage_measurement_beside_the_benchmarks_runs_and_records_as_without_it(
    pytester: pytest.Pytester, make_repo: Callable[..., None], run: RunResultOf
) -> None:
    """pytest-cov (``--cov``) traces the main process, which slows it: the run still measures and records both
    benchmark tests (each with its fresh-process sessions) and prints the coverage table beside the report.
    Figures taken under coverage are slower than without it, so do not gate a baseline recorded without it."""
    make_repo()
    result = run(pytester, "-p", "pytest_cov", "--cov=test_repo", "--benchmark", "--loader-baseline-save")
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.OK, out + result.stderr.str()
    result.assert_outcomes(passed=2, deselected=1)
    assert "coverage: platform" in out or "tests coverage" in out, out
    assert "test_repo.py" in out.split("coverage", 1)[1]
    assert baseline_case_ids(pytester) == dict.fromkeys(CASE_IDS, 3)
