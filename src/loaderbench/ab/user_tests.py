"""A user's own ``loader_benchmark`` tests in an A/B child: run through pytest, recorded as A/B records.

The head's pytest collects the tests; their node ids (prefixed :data:`~loaderbench.ab.records.TEST_PREFIX`)
are cases of the A/B like the tier's.  Each child runs them with ``pytest.main`` in its own process and
environment, from the head's rootdir, so each arm imports the test module, its dataset and its conftest
from its own environment (install each checkout into its own venv, as for user workloads).  The child's
pytest runs them under ``--benchmark`` with an empty baseline directory (no gate, nothing saved) and the
A/B's rounds; :class:`TestRecorder` turns each test's ``Measurement`` (what the fixture measured) into a
``measurement`` record, a failing test into a ``failure`` record, and a test this arm did not run (not
collected, skipped) into a ``missing`` record.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any

import pytest

from loaderbench.ab.records import TEST_PREFIX, ChildSpec
from loaderbench.pytest_names import FIXTURE

Write = Callable[[dict[str, Any]], None]


class TestRecorder:
    """A pytest plugin for the child's run: one record per requested test."""

    __test__ = False  # not a test class, whatever its name says

    def __init__(self, wanted: dict[str, str], write: Write) -> None:
        self.wanted = wanted  # node id -> case id
        self.write = write
        self.answered: set[str] = set()

    @pytest.hookimpl(tryfirst=True)
    def pytest_configure(self, config: pytest.Config) -> None:
        """The tests run here, one at a time: an ``-n`` in the user's addopts must not hand them to pytest-xdist
        workers (xdist reads these options after this hook; without xdist there are none to set)."""
        if hasattr(config.option, "numprocesses"):
            config.option.numprocesses = 0
            config.option.dist = "no"
            config.option.tx = []

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        """Only the requested tests run: the child asks for their files, which may hold others (and, in the base
        arm's checkout, may lack a test the head adds: that one is recorded ``missing``, the rest still run)."""
        keep = [i for i in items if i.nodeid in self.wanted]
        if len(keep) < len(items):
            config.hook.pytest_deselected(items=[i for i in items if i.nodeid not in self.wanted])
            items[:] = keep

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
        report = yield
        case = self.wanted.get(item.nodeid)
        if case is None or case in self.answered or report.skipped:
            return report
        if report.failed:
            self.answered.add(case)
            last = (report.longreprtext.strip().splitlines() or ["the test failed"])[-1]
            self.write({"type": "failure", "case_id": case, "message": f"{call.when}: {last}"})
        elif call.when == "call":
            self.answered.add(case)
            measured = getattr(getattr(item, "funcargs", {}).get(FIXTURE), "measurement", None)
            if measured is None:
                self.write({"type": "failure", "case_id": case, "message": f"the test never called {FIXTURE}"})
            else:
                self.write({"type": "measurement", "case_id": case, "measurement": measured.to_json()})
        return report


def test_files(spec: ChildSpec, node_ids: Sequence[str]) -> list[str]:
    """The files of ``node_ids`` that exist in this arm's rootdir, as paths from it."""
    root = spec.rootdir.rstrip("/") or "."
    files = dict.fromkeys(n.split("::", 1)[0] for n in node_ids)
    return [f"{root}/{f}" for f in files if Path(root, f).exists()]


def pytest_args(spec: ChildSpec, node_ids: Sequence[str], baselines: str) -> list[str]:
    """The child's pytest command line: the files of the tests that exist here (a test file the head adds is not
    in the base's checkout: naming it would stop pytest before any test ran), from the arm's rootdir, with the
    A/B's plan; :class:`TestRecorder` keeps only the requested tests."""
    root = spec.rootdir.rstrip("/") or "."
    args = test_files(spec, node_ids)
    args += ["--benchmark", "-q", "-p", "no:cacheprovider", f"--rootdir={root}", f"--loader-baseline-dir={baselines}"]
    args += [f"--loader-rounds={spec.rounds}", f"--loader-round-seconds={spec.round_s}"]
    if spec.ranks != 1:
        args.append(f"--loader-ranks={spec.ranks}")
    if math.isfinite(spec.timeout_s):
        args.append(f"--loader-batch-timeout={spec.timeout_s}")
    if spec.simulated_gpu:
        args.append("--loader-simulated-gpu")
    return args


def run_tests(spec: ChildSpec, cases: Sequence[str], write: Write) -> int:
    """Run the ``loader_benchmark`` tests among ``cases`` and record each; pytest's exit status."""
    wanted = {c[len(TEST_PREFIX) :]: c for c in cases if c.startswith(TEST_PREFIX)}
    if not wanted:
        return 0
    recorder = TestRecorder(wanted, write)
    code = 0
    if test_files(spec, list(wanted)):  # else none of their files is here (tests the head adds): all missing
        with tempfile.TemporaryDirectory(prefix="loaderbench-ab-baselines-") as baselines:
            code = int(pytest.main(pytest_args(spec, list(wanted), baselines), plugins=[recorder]))
    for case in wanted.values():
        if case not in recorder.answered:
            write({"type": "missing", "case_id": case})
    return code
