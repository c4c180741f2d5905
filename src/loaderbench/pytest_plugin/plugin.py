"""The pytest plugin (registered through the ``pytest11`` entry point).

* ``pytest`` runs the correctness tests; benchmark cases are skipped.
* ``pytest --benchmark`` runs only the benchmark cases of the chosen tier and
  device, through pytest-benchmark's pedantic mode, with every metric in
  ``extra_info``.

All options live in one group, ``loaderbench``; parse functions raise
``argparse.ArgumentTypeError`` so bad values are usage errors (exit 4) without
a traceback.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from loaderbench.cuda.spec import cuda_available
from loaderbench.engine.case import Case, simulated_ranks_reason
from loaderbench.errors import ReportError
from loaderbench.formatting import terminal_width
from loaderbench.pipelines.registry import unavailable_reason
from loaderbench.pytest_plugin import exits, fixture, options, ordering, parallel, timeouts
from loaderbench.pytest_plugin.ab_hooks import ABSession
from loaderbench.pytest_plugin.run_options import run_options
from loaderbench.pytest_plugin.session import LoaderbenchSession
from loaderbench.report.files import write_report_files
from loaderbench.report.terminal import terminal_report
from loaderbench.workloads import decode

CASE_FIXTURE = fixture.CASE_FIXTURE


_SESSION_KEY = pytest.StashKey[LoaderbenchSession]()
#: The name the A/B's hooks object is registered under (with --loader-ab).
AB_PLUGIN = "loaderbench-ab"


def pytest_addoption(parser: pytest.Parser) -> None:
    options.add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    refusal = parallel.refusal(config)  # first: before any measurement, and before xdist starts its workers
    if refusal:
        raise pytest.UsageError(refusal)
    config.addinivalue_line(
        "markers",
        "loaderbench(device='cpu'|'cuda'): a benchmark case; runs only under --benchmark. A loader_benchmark test "
        "that measures on CUDA says device='cuda' (or passes it literally), so it runs after every CPU case",
    )
    opts = run_options(config)
    if opts.ab is not None:
        # the A/B runs the cases in child processes instead of this session: this process's own benchmark
        # session stays off (no tier of items, no gate, no baseline), and ABSession reports and sets the exit
        config.pluginmanager.register(ABSession(config), AB_PLUGIN)
    elif opts.ab_base_dir is not None:
        raise pytest.UsageError(
            f"--loader-ab-base-dir={opts.ab_base_dir}: only applies to an A/B. Add --loader-ab=BASE, "
            "or use `loaderbench ab --base-ref=REF`, which sets both."
        )
    config.stash[_SESSION_KEY] = LoaderbenchSession(config)
    if not config.pluginmanager.has_plugin("loaderbench-compare-fail"):
        config.pluginmanager.register(exits.CompareFailGuard(), "loaderbench-compare-fail")


def session_of(config: pytest.Config) -> LoaderbenchSession:
    return config.stash[_SESSION_KEY]


def pytest_report_header(config: pytest.Config) -> list[str]:
    if config.pluginmanager.has_plugin(AB_PLUGIN):
        return []  # the A/B's own header says what runs
    s = session_of(config)
    if s.tier is None:
        return ["loaderbench: benchmark cases skipped (run `pytest --benchmark` for the main job)"]
    return [  # the tier's summary comes after collection, where it runs (pytest_collection_finish)
        f"loaderbench: device={s.device}, rounds={s.plan.rounds}, ranks={s.ranks}, "
        f"round_s={s.plan.round_s:g}, scenarios={s.scenarios_path}",
        *timeouts.header(config, s.plan, s.ranks),
    ]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if CASE_FIXTURE not in metafunc.fixturenames:
        return
    s = session_of(metafunc.config)
    if not s.enabled:
        metafunc.parametrize(
            CASE_FIXTURE,
            [
                pytest.param(
                    None,
                    id="benchmark-cases",
                    marks=pytest.mark.skip(reason="benchmark cases run only under `pytest --benchmark`"),
                )
            ],
        )
        return
    cases = s.cases()
    params = [pytest.param(c, id=c.id, marks=_marks(c)) for c in cases]
    if not params:
        params = [pytest.param(None, id="no-cases", marks=pytest.mark.skip(reason=s.no_case_reason()))]
    metafunc.parametrize(CASE_FIXTURE, params)


def simulated_gpu(config: pytest.Config) -> bool:
    """Whether ``--loader-simulated-gpu`` was given."""
    return run_options(config).simulated_gpu


@functools.cache
def _cuda_skip() -> pytest.MarkDecorator | None:
    """One skip mark for every CUDA case when there is no GPU (asked once; creates no CUDA context)."""
    ok, reason = cuda_available()
    return None if ok else pytest.mark.skip(reason=reason)


def _marks(case: Case) -> list[pytest.MarkDecorator]:
    marks = [pytest.mark.loaderbench(device=case.device)]
    skip = _cuda_skip() if case.device == "cuda" and case.simulated_gpu is None else None
    if case.simulated_gpu is not None and case.config.ranks > 1:
        skip = pytest.mark.skip(reason=simulated_ranks_reason(case.config.ranks))
    if skip is not None:
        marks.append(skip)
    missing = unavailable_reason(case.config.pipeline)  # a rival pipeline that is not installed: one reason
    if case.workload.kind == "decode" and case.workload.params.get("cache") == "cold":
        where = decode.cold_unavailable(Path(tempfile.gettempdir()))
        missing = missing or (where and f"cache='cold' cannot drop pages here: {where}; point TMPDIR at a disk")
    if missing:
        marks.append(pytest.mark.skip(reason=missing))
    return marks


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:  # a user's own benchmark: treated as a case (kept by --benchmark, skipped without it)
        if fixture.FIXTURE in getattr(item, "fixturenames", ()) and item.get_closest_marker("loaderbench") is None:
            item.add_marker(pytest.mark.loaderbench)
    if not session_of(config).enabled:
        skip = pytest.mark.skip(reason="benchmark cases run only under `pytest --benchmark`")
        for item in items:
            if item.get_closest_marker("loaderbench") is not None:
                item.add_marker(skip)
        return
    keep = [
        i
        for i in items
        if i.get_closest_marker("loaderbench") is not None or CASE_FIXTURE in getattr(i, "fixturenames", ())
    ]
    users = [fixture.workload_name(i.name) for i in keep if fixture.FIXTURE in getattr(i, "fixturenames", ())]
    problem = session_of(config).unknown_threshold_case(users)
    if problem:
        raise pytest.UsageError(problem)
    deselected = [i for i in items if i not in keep]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
    timeouts.fit(config, keep, session_of(config).plan, session_of(config).ranks)  # a global --timeout: one to fit
    items[:] = ordering.cuda_last(config, keep)


def pytest_collection_finish(session: pytest.Session) -> None:
    """What this run really measures: the tier's cases where the suite's own test is collected, the repository's
    ``loader_benchmark`` tests, or both (the header cannot know: it comes before collection)."""
    s = session_of(session.config)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if s.tier is None or reporter is None or session.config.pluginmanager.has_plugin(AB_PLUGIN):
        return
    items = session.items
    users = sum(fixture.FIXTURE in getattr(i, "fixturenames", ()) for i in items)
    suite = sum(CASE_FIXTURE in getattr(i, "fixturenames", ()) for i in items)
    said = [f"{suite} case(s) of {s.tier.summary()}"] if suite else []
    if users:
        said.append(f"{users} loader_benchmark test(s) of this repository")
    reporter.write_line(f"loaderbench: measuring {' and '.join(said) or 'nothing (no benchmark case collected)'}")


@pytest.fixture
def loaderbench_session(request: pytest.FixtureRequest) -> LoaderbenchSession:
    """The session object: ``loaderbench_session.run(case, benchmark)`` measures a case."""
    return session_of(request.config)


@pytest.fixture
def loader_benchmark(request: pytest.FixtureRequest) -> fixture.LoaderBenchmark:
    """Benchmark your own dataset: ``loader_benchmark(dataset_or_factory, LoaderConfig(...), device="cpu")``.
    Measured, recorded and gated like the suite's own cases; skipped without ``pytest --benchmark``."""
    node = request.node
    return fixture.make(
        request,
        session_of(request.config),
        simulated_gpu=simulated_gpu(request.config),
        cuda_problem=lambda: ordering.cuda_order_problem(node),
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    """Count the benchmark items that ran (passed or failed, not skipped: a ``loader_benchmark`` test skips in its
    call phase, e.g. ``device="cuda"`` without a GPU), so that a run whose every case skipped exits 5; a test that
    failed after measuring (an assertion on the figures) is not a run the history keeps."""
    if item.get_closest_marker("loaderbench") is None:
        return (yield)
    s = session_of(item.config)
    measured = len(s.measurements)
    try:
        result = yield
    except pytest.skip.Exception:
        raise
    except BaseException:
        s.ran += 1
        s.failed_cases.update(m.case_id for m in s.measurements[measured:])
        raise
    s.ran += 1
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """A benchmark item that pytest-timeout stopped (its own marker fired): one paragraph naming the case and the
    phase, listed with the run's failed cases, instead of a traceback from wherever the alarm landed."""
    report = yield
    excinfo = call.excinfo
    if excinfo is not None and item.get_closest_marker("loaderbench") is not None and timeouts.is_timeout(excinfo):
        s = session_of(item.config)
        failure = timeouts.explain(item, excinfo, s.plan)
        s.failures.append(failure)
        report.longrepr = str(failure)
        report.sections = timeouts.without_stack_dump(report.sections)
        benchmark = getattr(item, "funcargs", {}).get("benchmark")
        if benchmark is not None:
            benchmark.skipped = True  # no "Benchmark fixture was not used" warning on top of the failure
    return report


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> Generator[None, None, None]:
    """Decide the job before pytest-benchmark's own hook writes --benchmark-json (a wrapper too), so the
    job's verdicts, not the provisional ones, are what its ``extra_info`` holds."""
    _finish(session, exitstatus)
    return (yield)


def _finish(session: pytest.Session, exitstatus: int) -> None:
    s = session_of(session.config)
    if not s.enabled:
        return
    interrupted = exitstatus == pytest.ExitCode.INTERRUPTED or bool(session.shouldstop)
    s.finish(interrupted=interrupted)
    if interrupted or exitstatus not in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        return
    if run_options(session.config).collect_only:
        return
    if not s.ran:
        # a benchmark run that benchmarked nothing must not look green to CI
        session.exitstatus = pytest.ExitCode.NO_TESTS_COLLECTED
        s.nothing_ran = "loaderbench: no benchmark case ran (exit 5): " + (
            s.no_case_reason() or "every selected benchmark case was skipped or deselected"
        )
        session.shouldfail = s.nothing_ran
        return
    exits.fail_run(session, s.run_failures())
    exits.note_run(session, s.shortfall())


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    s = session_of(config)
    if not s.enabled:
        return

    tr = terminalreporter
    tr.section("loaderbench")
    gate_lines = s.gate_lines()
    regressions = s.failed_gate
    if regressions:  # the regressions table first
        for line in gate_lines:
            tr.write_line(line, red=True, bold=line.startswith("REGRESSIONS"))
        tr.write_line("")
    verdicts = s.verdict_texts()
    for line in terminal_report(
        s.measurements, width=terminal_width(getattr(tr._tw, "fullwidth", None)), verdicts=verdicts
    ):
        tr.write_line(line)
    if s.failures:
        tr.write_line("")
        tr.write_line(f"{len(s.failures)} case(s) failed:")
        for failure in s.failures:
            tr.write_line(f"  {failure}")
    if not regressions:
        tr.write_line("")
        for line in gate_lines:
            tr.write_line(line)
    report_dir = run_options(config).report
    if report_dir and s.measurements:
        try:
            files = write_report_files(
                report_dir,
                s.measurements,
                verdicts=verdicts,
                context=s.context(),
                step_summary=os.environ.get("GITHUB_STEP_SUMMARY") or None,
            )
        except ReportError as exc:  # checked writable at the start; it vanished or filled up since
            tr.write_line(f"loaderbench: {exc}", red=True)
            return
        tr.write_line(f"loaderbench: wrote {files.markdown}, {files.results} and {len(files.plots)} plot(s)")
        for note in files.plot_notes:
            tr.write_line(f"  {note}")
