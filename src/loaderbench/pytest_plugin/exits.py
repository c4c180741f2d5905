"""How a benchmark run ends: run-level failures (a regression, an unsaved baseline, --loader-require-baseline)
become exit 1 *and* a word on pytest's final line, so the line never reads all-green when the exit is not 0;
pytest-benchmark's --benchmark-compare-fail becomes exit 1 and one line instead of a traceback."""

from __future__ import annotations

from typing import Any

import pytest
from pytest_benchmark.session import PerformanceRegression


class RunFailure:
    """One entry of pytest's summary counts for a run-level failure (other plugins read entries' ``__dict__``)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.count_towards_summary = True


class CompareFailGuard:
    """pytest-benchmark's --benchmark-compare-fail raises out of the summary (a traceback, exit 3): this
    wrapper turns it into one red line and exit 1 (registered by :func:`pytest_configure`)."""

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> Any:
        try:
            return (yield)
        except PerformanceRegression:
            terminalreporter.write_line(
                "pytest-benchmark: performance has regressed beyond --benchmark-compare-fail "
                "(see its comparison above)",
                red=True,
            )
            terminalreporter.stats.setdefault("compare-fail", []).append(RunFailure("compare-fail"))
            session = getattr(terminalreporter, "_session", None)
            if session is not None and session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
            return None


def fail_run(session: pytest.Session, failures: list[tuple[str, int, str]]) -> None:
    """Exit 1 for ``failures`` (``(summary key, count, reason)`` each), counted on pytest's final line
    (``2 passed, 1 regressed``) and said in red just above it."""
    if not failures:
        return
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        for key, count, _ in failures:
            reporter.stats.setdefault(key, []).extend(RunFailure(key) for _ in range(count))
    session.shouldfail = "loaderbench: the run fails: " + "; ".join(reason for _, _, reason in failures)


def note_run(session: pytest.Session, notes: list[tuple[str, int]]) -> None:
    """Count ``notes`` (``(summary key, count)`` each) on pytest's final line (``38 passed, 3 not compared``)
    without failing the run: a passing job that judged fewer cases than it measured says so where CI logs
    are read."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    for key, count in notes:
        if count:
            reporter.stats.setdefault(key, []).extend(RunFailure(key) for _ in range(count))
