"""The A/B in pytest: ``pytest --benchmark --loader-ab=BASE`` runs the interleaved A/B instead of the test
items, prints its summary, writes the report files and sets the exit status.

The plugin registers :class:`ABSession` when ``--loader-ab`` is given.  It selects the cases from the
usual options (``--loader-tier``, ``--loader-device``, ``--loader-workloads``, ``--loader-config``,
``--loader-scenarios``, ``--loader-rounds``, ``--loader-round-seconds``, ``--loader-batch-timeout``,
``--loader-threshold``, ``--loader-report``) when the suite's own test is collected (or nothing is),
adds every collected ``loader_benchmark`` test (by its node id: :mod:`loaderbench.ab.user_tests`),
deselects every item, probes BASE, and runs the A/B (:mod:`loaderbench.ab.schedule`) between BASE and
this interpreter (``sys.executable``, the head).  The
cases run in child processes, not as pytest-benchmark items, so there is no ``extra_info`` and
``--benchmark-json`` has no cases; the report files (``--loader-report``) hold every measurement of
both arms and every verdict.  Exit status: 1 on a regression or on a case that failed in the head
arm, 0 otherwise; a bad ``--loader-ab``, a base that cannot run the A/B or a child that crashes is a
usage error (4) with one paragraph naming the path and the fix.  With ``--loader-history=DIR`` the head arm's
cases are appended to this machine's history as one run (each case's blocks make one record); with
``--loader-history-fail`` a regression the newest runs opened there fails the run too
(:mod:`loaderbench.pytest_plugin.history`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from loaderbench.ab.child import select_cases
from loaderbench.ab.errors import ABError
from loaderbench.ab.process import check_interpreter, probe
from loaderbench.ab.records import BASE_ENVIRON, TEST_PREFIX
from loaderbench.ab.render import markdown_section, progress_line, representatives, summary_lines, verdict_texts
from loaderbench.ab.schedule import ABResult, Arm, Schedule, Step, run_ab
from loaderbench.cuda.spec import cuda_available
from loaderbench.data import NOISE, local_or_packaged
from loaderbench.errors import LoaderbenchError, ReportError
from loaderbench.gate.job import DEFAULT_MAX_EXTRA
from loaderbench.gate.priors import load_priors
from loaderbench.gate.thresholds import Thresholds
from loaderbench.pytest_names import CASE_FIXTURE, FIXTURE
from loaderbench.pytest_plugin import exits
from loaderbench.pytest_plugin.confirm import child_spec
from loaderbench.pytest_plugin.history import HistoryKeeper
from loaderbench.pytest_plugin.run_options import RunOptions, run_options
from loaderbench.report.files import prepare_report_dir, write_report_files
from loaderbench.report.verdicts import undecided_large
from loaderbench.store import environment, fingerprint


def _stored_gate_options(opts: RunOptions) -> list[tuple[str, bool]]:
    """The stored gate's options, each with whether this run set it away from its default."""
    return [
        (f"--loader-baseline-dir={opts.baseline_dir}", opts.baseline_dir is not None),
        ("--loader-baseline-append", bool(opts.baseline_append)),
        ("--loader-baseline-prune", bool(opts.baseline_prune)),
        ("--loader-compare-anyway", bool(opts.compare_anyway)),
        ("--loader-require-baseline", opts.require_baseline),
        (f"--loader-max-extra={opts.max_extra}", opts.max_extra != DEFAULT_MAX_EXTRA),
    ]


class ABSession:
    """The A/B of one pytest run (a pytest plugin object: its methods are hooks)."""

    def __init__(self, config: pytest.Config) -> None:
        opts = run_options(config)
        if opts.ab is None:
            raise ValueError("ABSession is the plugin of a run with --loader-ab")
        if opts.baseline_save:
            raise pytest.UsageError(
                "--loader-ab compares two interpreters within this job and records no baseline: drop "
                "--loader-baseline-save here, and record baselines in a run without --loader-ab."
            )
        stored_only = [name for name, given in _stored_gate_options(opts) if given]
        if stored_only:
            raise pytest.UsageError(
                f"--loader-ab={opts.ab}: {', '.join(stored_only)} belong(s) to the stored-baseline gate, which "
                "an A/B does not use (it compares two interpreters in this job; its own limits are "
                "--loader-ab-pairs and --loader-ab-budget). Drop them here, or run without --loader-ab to gate "
                "against a stored baseline."
            )
        self.config = config
        self.cwd = Path(str(config.invocation_params.dir))
        self.label = f"--loader-ab={opts.ab}"
        root = Path(str(config.rootpath))
        scenarios = opts.scenario_file(root)
        spec = child_spec(config, self.cwd / scenarios, opts.ranks)
        self.skipped: list[str] = []
        self.skip_reason = ""
        try:
            if opts.report and not opts.collect_only:
                prepare_report_dir(opts.report, option="--loader-report")
            self.base = check_interpreter(opts.ab, label=self.label, cwd=self.cwd)
            cases = select_cases(spec)
            self.history = (
                HistoryKeeper.of(
                    config, fingerprint.current(simulated_gpu=spec.simulated_gpu), environment.current(repo=root)
                )
                if opts.history is not None or opts.history_fail
                else None
            )
        except LoaderbenchError as exc:
            raise pytest.UsageError(str(exc)) from None
        self.base_dir = _base_dir(opts.ab_base_dir, self.cwd)
        if any(c.device == "cuda" for c in cases):
            ok, why = cuda_available()
            if not ok:
                self.skipped = [c.id for c in cases if c.device == "cuda"]
                self.skip_reason = why
        self.spec = dataclasses.replace(spec, cases=tuple(c.id for c in cases if c.id not in self.skipped))
        self.schedule = Schedule(
            max_pairs=opts.ab_pairs,
            budget_s=opts.ab_budget_s,
            thresholds=opts.threshold or Thresholds(),
            priors=load_priors(local_or_packaged(root, NOISE)),
        )
        environ = dict(os.environ)
        handed = environ.pop(BASE_ENVIRON, None)
        base_env = dict(json.loads(handed)) if handed else dict(environ)
        base_env.pop(BASE_ENVIRON, None)
        self.arms = {
            "base": Arm("base", self.base, base_env, self.label, directory=self.base_dir),
            "head": Arm("head", sys.executable, environ, f"the head interpreter {sys.executable}"),
        }
        self.result: ABResult | None = None
        self.files: list[str] = []

    # --- hooks ---------------------------------------------------------------------------------------
    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        s = self.spec
        where = f" (base runs in {self.base_dir})" if self.base_dir is not None else ""
        return [
            f"loaderbench ab: base {self.base} vs head {sys.executable}{where}",
            f"loaderbench ab: rounds={s.rounds}, round_s={s.round_s:g}, up to {self.schedule.max_pairs} pairs in "
            f"ABBA order, budget {self.schedule.budget_s:g} s (what it compares is said after collection)",
        ]

    def selection_line(self) -> str:
        """What the A/B will really compare: the tier's cases, the user's ``loader_benchmark`` tests, or both."""
        s = self.spec
        tests = sum(c.startswith(TEST_PREFIX) for c in s.cases)
        parts = []
        if len(s.cases) > tests:
            tier = f"{len(s.cases) - tests} case(s) of tier {s.tier}"
            parts.append(f"{tier} (device={s.device}, scenarios={s.scenarios})")
        if tests:
            parts.append(f"{tests} loader_benchmark test(s) of this repository")
        return f"loaderbench ab: comparing {' and '.join(parts)}"

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, session: pytest.Session, config: pytest.Config, items: list[Any]) -> None:
        """The A/B's cases from what was collected: the tier's cases when the suite's own test is collected (or
        nothing at all is, as in a directory with no tests), plus every ``loader_benchmark`` test by its node
        id; then every item is deselected, since the cases run in the arms' child processes, not here."""
        tests = tuple(f"{TEST_PREFIX}{i.nodeid}" for i in items if FIXTURE in getattr(i, "fixturenames", ()))
        suite = any(CASE_FIXTURE in getattr(i, "fixturenames", ()) for i in items)
        tier = self.spec.cases if suite or not items else ()
        if not tier:
            self.skipped = []  # the tier's CUDA cases are not part of this A/B at all
        self.spec = dataclasses.replace(self.spec, cases=(*tier, *tests))
        if items:
            config.hook.pytest_deselected(items=list(items))
            items[:] = []

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> bool:
        if not self.spec.cases or run_options(session.config).collect_only:
            return True
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")

        def progress(step: Step) -> None:
            if reporter is not None:
                reporter.write_line(progress_line(step))

        if reporter is not None:
            reporter.write_line(self.selection_line())

        try:
            with tempfile.TemporaryDirectory(prefix="loaderbench-ab-probe-") as tmp:
                base = self.arms["base"]
                probe(base.executable, label=self.label, env=base.env, cwd=self.cwd, workdir=Path(tmp))
            self.result = run_ab(self.spec, self.arms, self.schedule, cwd=self.cwd, progress=progress)
        except ABError as exc:
            raise pytest.UsageError(str(exc)) from None
        report = run_options(self.config).report
        if report:
            try:
                self._write_report(self.result, report)
            except ReportError as exc:  # checked writable at the start; it vanished or filled up since
                self.files = [f"loaderbench ab: {exc}"]
        if self.history is not None:  # the head arm's cases, as one run (a case that failed there is not kept)
            failed = {f.case_id for f in self.result.head_failures}
            heads = [h for c, ps in self.result.pairs.items() if c not in failed for _, h in ps]
            self.history.keep(heads, environment=self.result.environments.get("head"))
        return True

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.result is None and self.spec.cases:
            return  # interrupted or an error: its status stands
        if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED, pytest.ExitCode.TESTS_FAILED):
            failed = self.result is not None and self.result.failed
            failed = failed or bool(self.history is not None and self.history.failures())
            session.exitstatus = pytest.ExitCode.TESTS_FAILED if failed else pytest.ExitCode.OK
            if self.result is not None:
                exits.note_run(session, [("undecided", len(undecided_large(self.result.verdicts)))])

    def pytest_terminal_summary(self, terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
        tr = terminalreporter
        if self.result is None and self.spec.cases:
            return  # an error or an interrupt: pytest says which
        tr.section("loaderbench ab")
        if self.skipped:
            tr.write_line(f"{len(self.skipped)} CUDA case(s) skipped: {self.skip_reason}")
        if self.result is None:
            tr.write_line("the tier/device selection has no cases to compare")
            return
        in_table = False
        for line in summary_lines(self.result):
            in_table = line.startswith("REGRESSIONS") or (in_table and line.startswith("  "))
            tr.write_line(line, red=in_table or line.startswith("FAILED"), bold=line.startswith("REGRESSIONS"))
        for line in self.files:
            tr.write_line(line)
        for line in self.history.lines if self.history is not None else []:
            tr.write_line(line, red=line.startswith(("HISTORY", "  ")) or "NOT" in line)

    # --- report files --------------------------------------------------------------------------------
    def _write_report(self, result: ABResult, directory: str) -> None:
        measurements = representatives(result, "head") + representatives(result, "base")
        files = write_report_files(
            directory,
            measurements,
            verdicts=verdict_texts(result),
            context=self.context(result),
            title="loaderbench A/B report",
            sections=[markdown_section(result)],
            step_summary=os.environ.get("GITHUB_STEP_SUMMARY") or None,
        )
        self.files = [f"loaderbench ab: wrote {files.markdown}, {files.results} and {len(files.plots)} plot(s)"]
        self.files += [f"  {note}" for note in files.plot_notes]

    def context(self, result: ABResult) -> dict[str, Any]:
        """``results.json``'s context: the selection, and under ``ab`` the arms, every verdict as a dict and
        every run of both arms (``runs``: per case, per block, the base and head records)."""
        s = self.spec
        return {
            "tier": s.tier,
            "device": s.device,
            "rounds": s.rounds,
            "round_s": s.round_s,
            "ab": {
                "base": result.executables.get("base"),
                "head": result.executables.get("head"),
                "environments": {n: e.as_dict() if e else None for n, e in result.environments.items()},
                "changes": result.changes(),
                "calibration_loops_per_s": result.calibration,
                "max_pairs": self.schedule.max_pairs,
                "budget_s": self.schedule.budget_s,
                "blocks": result.blocks,
                "elapsed_s": result.elapsed_s,
                "stopped": result.stopped,
                "verdicts": [v.as_dict() for v in result.verdicts],
                "failures": [dataclasses.asdict(f) for f in result.failures],
                "not_compared": dict(result.not_compared),
                "notes": list(result.notes),
                "runs": {
                    c: [{"block": i + 1, "base": b.to_json(), "head": h.to_json()} for i, (b, h) in enumerate(ps)]
                    for c, ps in result.pairs.items()
                },
            },
        }


def _base_dir(value: str | None, cwd: Path) -> Path | None:
    """``--loader-ab-base-dir`` as an existing directory (relative to the invocation directory), or None."""
    if value is None:
        return None
    path = (cwd / Path(value).expanduser()).resolve()
    if not path.is_dir():
        raise pytest.UsageError(
            f"--loader-ab-base-dir={value}: {path} is not a directory. Give the base commit's copy of this "
            "directory (e.g. a `git worktree` of it), or drop the option to run both arms here."
        )
    return path
