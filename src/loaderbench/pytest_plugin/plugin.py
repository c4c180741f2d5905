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

import dataclasses
import functools
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

from loaderbench.ab.pytest_hooks import ABSession
from loaderbench.cuda.spec import cuda_available
from loaderbench.engine import decode
from loaderbench.engine.cases import Case, simulated_ranks_reason
from loaderbench.engine.plan import Plan
from loaderbench.engine.tiers import DEVICES, TIERS
from loaderbench.gate.runner import DEFAULT_MAX_EXTRA
from loaderbench.options import choice, number
from loaderbench.pipelines.registry import unavailable_reason
from loaderbench.pytest_plugin import exits, fixture, ordering
from loaderbench.pytest_plugin.session import LoaderbenchSession, threshold_option
from loaderbench.report.files import write_report_files
from loaderbench.report.format import terminal_width
from loaderbench.report.terminal import terminal_report
from loaderbench.testing.simulated_gpu import SIMULATED_GPU_NAME, SimulatedGpuSpec

CASE_FIXTURE = fixture.CASE_FIXTURE


#: The harness's defaults, which the options' defaults are.
_PLAN = Plan()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("loaderbench", "loaderbench: DataLoader performance regression suite")
    group.addoption(
        "--benchmark",
        action="store_true",
        default=False,
        help="Run the DataLoader benchmark cases (and only them). Default: off, they are skipped.",
    )
    group.addoption(
        "--loader-tier",
        type=choice("--loader-tier", TIERS),
        default="smoke",
        help="How much of the settings space to cover: smoke|standard|full. Default: smoke.",
    )
    group.addoption(
        "--loader-device",
        type=choice("--loader-device", DEVICES),
        default="all",
        help="cpu|cuda|all. CUDA cases skip with a reason when no GPU is present. Default: all.",
    )
    group.addoption(
        "--loader-simulated-gpu",
        action="store_true",
        default=False,
        help=f"Run the CUDA cases (and loader_benchmark(..., device='cuda') tests) on the {SIMULATED_GPU_NAME}, a "
        "model of a copy engine, streams, events and _sleep in real time, to test the suite on a machine without a "
        "GPU. Never a fallback: its records say simulated_gpu, its case ids end in -simgpu and its baseline is "
        "keyed apart from any real GPU's. Default: off (CUDA cases skip without a GPU).",
    )
    group.addoption(
        "--loader-workloads",
        default=None,
        metavar="NAMES",
        help="Comma-separated workload names to keep (default: every workload of the tier).",
    )
    group.addoption(
        "--loader-config",
        default=None,
        metavar="ID",
        help="Run one explicit config id (e.g. w2-bs64-spawn-persist) on the tier's workloads "
        "instead of the tier's configs. Default: none.",
    )
    group.addoption(
        "--loader-scenarios",
        default=None,
        metavar="PATH",
        help="Workload scenario file (TOML). Default: fixtures/workloads.toml under the rootdir if it exists, "
        "else the suite's own, packaged with loaderbench.",
    )
    group.addoption(
        "--loader-rounds",
        type=number("--loader-rounds", int, fix="Use e.g. 5"),
        default=_PLAN.rounds,
        help=f"Timed steady-state rounds per case. Default: {_PLAN.rounds}.",
    )
    group.addoption(
        "--loader-round-seconds",
        type=number("--loader-round-seconds", float, fix="Use e.g. 0.25"),
        default=_PLAN.round_s,
        help=f"Target duration of one round in seconds (sizes the epoch). Default: {_PLAN.round_s:g}.",
    )
    group.addoption(
        "--loader-ranks",
        type=number("--loader-ranks", int, minimum=1, exclusive=False, fix="Use e.g. 2 (on CUDA: the GPU count)"),
        default=1,
        metavar="N",
        help="Run each case in N ranks started by torch.distributed.run (gloo on CPU, NCCL on CUDA, one rank per "
        "GPU), each over a DistributedSampler, in lockstep at a per-step all-reduce. Default: 1 (one process).",
    )
    group.addoption(
        "--loader-batch-timeout",
        type=number("--loader-batch-timeout", float, fix="Use e.g. 120"),
        default=_PLAN.batch_timeout_s,
        help="Seconds without a batch after which a case counts as hung: its workers are killed and the case "
        "fails with the stuck phase named. Default: 120.",
    )
    group.addoption(
        "--loader-report",
        default=None,
        metavar="DIR",
        help="Write report.md, results.json and PNG plots (plots need loaderbench[plot]) to DIR; report.md is "
        "also appended to $GITHUB_STEP_SUMMARY when that is set. Default: none.",
    )
    group.addoption(
        "--loader-baseline-dir",
        default=None,
        metavar="DIR",
        help="Where baselines live. Default: fixtures/baselines under the rootdir.",
    )
    group.addoption(
        "--loader-baseline-save",
        action="store_true",
        default=False,
        help="Record this machine's baseline from this run's cases (replacing their entries; other cases are "
        "kept). A case gates only once recorded in 3 sessions: see --loader-baseline-append. Default: off.",
    )
    group.addoption(
        "--loader-baseline-append",
        action="store_true",
        default=False,
        help="With --loader-baseline-save: add this run as one more recording session (the last 10 are kept) "
        "instead of replacing. Default: off.",
    )
    group.addoption(
        "--loader-baseline-prune",
        action="store_true",
        default=False,
        help="With --loader-baseline-save: drop stored cases that this run did not measure. Default: off.",
    )
    group.addoption(
        "--loader-require-baseline",
        action="store_true",
        default=False,
        help="Fail the run (exit 1) when no baseline matches this machine or a measured case has no matching "
        "baseline entry, instead of only saying so. For gating CI jobs. Default: off.",
    )
    group.addoption(
        "--loader-threshold",
        type=threshold_option,
        default=None,
        metavar="SPEC",
        help="Regression threshold: the tolerated change in the bad direction (10%%: up to 1.10x slower passes; "
        "at most 100%%, a 2x change). '10%%', per metric 'samples_per_s=5%%,ttfb_s=25%%', per case "
        "'CASE:METRIC=20%%' (CASE must be a case id of the run). Default: 10%% for throughput, feed rate and "
        "memory, 25%% for ttfb_s and epoch_stall_s.",
    )
    group.addoption(
        "--loader-compare-anyway",
        action="store_true",
        default=False,
        help="Compare against the closest baseline even when it was recorded on a different machine. Default: off.",
    )
    group.addoption(
        "--loader-max-extra",
        type=number("--loader-max-extra", int, exclusive=False, fix="Use e.g. 3, or 0 for none"),
        default=DEFAULT_MAX_EXTRA,
        help="Extra measurements the gate may take per case before answering 'inconclusive'. "
        f"Default: {DEFAULT_MAX_EXTRA}.",
    )
    group.addoption(
        "--loader-env-packages",
        default="",
        metavar="NAMES",
        help="Comma-separated distributions whose versions the environment records and every comparison "
        "names when they change (e.g. numpy,pillow). Default: none (torch is always recorded).",
    )
    group.addoption(
        "--loader-ab",
        default=None,
        metavar="BASE",
        help="Interleaved A/B: compare this interpreter (the head) with BASE, a Python interpreter or a wrapper "
        'script that ends with exec python "$@", in fresh processes per block in ABBA order, with paired '
        "statistics; exits 1 on a regression. Runs no test items and records no baseline. Default: none.",
    )
    group.addoption(
        "--loader-ab-pairs",
        type=number("--loader-ab-pairs", int, minimum=3, exclusive=False, fix="Use e.g. 16"),
        default=16,
        metavar="N",
        help="With --loader-ab: at most N pairs (blocks) per case; pairs are added only while a case is "
        "undecided, and a change is decided from 3 pairs on (at least 3). Default: 16.",
    )
    group.addoption(
        "--loader-ab-budget",
        type=number("--loader-ab-budget", float, fix="Give the seconds to spend, e.g. 900"),
        default=900.0,
        metavar="SECONDS",
        help="With --loader-ab: no new block starts that would end past this many seconds (2 blocks always "
        "run). Default: 900.",
    )


_SESSION_KEY = pytest.StashKey[LoaderbenchSession]()
#: The name the A/B's hooks object is registered under (with --loader-ab).
AB_PLUGIN = "loaderbench-ab"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "loaderbench(device='cpu'|'cuda'): a benchmark case; runs only under --benchmark. A loader_benchmark test "
        "that measures on CUDA says device='cuda' (or passes it literally), so it runs after every CPU case",
    )
    if config.option.loader_ab is not None:
        # the A/B runs the cases in child processes instead of this session: this process's own benchmark
        # session stays off (no tier of items, no gate, no baseline), and ABSession reports and sets the exit
        config.pluginmanager.register(ABSession(config), AB_PLUGIN)
        config.option.benchmark = False
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
    return [
        f"loaderbench: {s.tier.summary()}",
        f"loaderbench: device={s.device}, rounds={s.plan.rounds}, ranks={s.ranks}, "
        f"round_s={s.plan.round_s:g}, scenarios={s.scenarios_path}",
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
    if simulated_gpu(metafunc.config):
        spec = SimulatedGpuSpec()
        cases = [dataclasses.replace(c, simulated_gpu=spec) if c.device == "cuda" else c for c in cases]
    params = [pytest.param(c, id=c.id, marks=_marks(c)) for c in cases]
    if not params:
        params = [pytest.param(None, id="no-cases", marks=pytest.mark.skip(reason=s.no_case_reason()))]
    metafunc.parametrize(CASE_FIXTURE, params)


def simulated_gpu(config: pytest.Config) -> bool:
    """Whether ``--loader-simulated-gpu`` was given."""
    return bool(getattr(config.option, "loader_simulated_gpu", False))


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
    items[:] = ordering.cuda_last(config, keep)


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
    if item.get_closest_marker("loaderbench") is not None:
        session_of(item.config).ran += 1  # reached its call phase: not skipped
    return (yield)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    s = session_of(session.config)
    if not s.enabled:
        return
    interrupted = exitstatus == pytest.ExitCode.INTERRUPTED or bool(session.shouldstop)
    s.finish(interrupted=interrupted)
    if interrupted or exitstatus not in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        return
    if session.config.option.collectonly:
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
    report_dir = config.option.loader_report
    if report_dir and s.measurements:
        files = write_report_files(
            report_dir,
            s.measurements,
            verdicts=verdicts,
            context=s.context(),
            step_summary=os.environ.get("GITHUB_STEP_SUMMARY") or None,
        )
        tr.write_line(f"loaderbench: wrote {files.markdown}, {files.results} and {len(files.plots)} plot(s)")
        for note in files.plot_notes:
            tr.write_line(f"  {note}")
