"""The benchmark session: built once per pytest run, it runs cases, gates them against the
baseline and records baselines.  ``plugin.py`` holds the options and hooks; this holds the work."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
from pathlib import Path
from typing import Any

import pytest

from loaderbench import data
from loaderbench.cuda.spec import fork_hazard, parent_cuda_initialized
from loaderbench.engine import allocator, control
from loaderbench.engine.case import Case
from loaderbench.engine.plan import Plan
from loaderbench.errors import CaseFailed, LoaderbenchError
from loaderbench.gate.job import Gate
from loaderbench.gate.model import Verdict
from loaderbench.gate.priors import load_priors
from loaderbench.gate.thresholds import parse_thresholds
from loaderbench.gate.verdict import DEFAULT_SETTINGS
from loaderbench.measurement import Measurement
from loaderbench.pytest_plugin.confirm import child_spec, confirmer, fresh_process, on_this_node, request_of
from loaderbench.pytest_plugin.history import HistoryKeeper
from loaderbench.pytest_plugin.recording import add_noise_sessions, resolution_note, sessions_held
from loaderbench.pytest_plugin.run_options import RunOptions, run_options
from loaderbench.ranks.launch import OTHER_NODE
from loaderbench.report.files import prepare_report_dir
from loaderbench.report.terminal import verdict_texts
from loaderbench.report.verdicts import summary_lines
from loaderbench.selection.run import run_case
from loaderbench.selection.tiers import Tier
from loaderbench.store import environment, fingerprint
from loaderbench.store.baseline import SPIN_CALIBRATION, BaselineDoc, BaselineStore
from loaderbench.testing.simulated_gpu import SimulatedGpuSpec
from loaderbench.workloads.calibration import calibrated, spin_loops_per_s, use_calibration
from loaderbench.workloads.recipes import load_scenarios


def threshold_option(text: str) -> Any:
    """argparse type for ``--loader-threshold``: bad specs are usage errors."""
    try:
        return parse_thresholds(text)
    except LoaderbenchError as exc:
        raise argparse.ArgumentTypeError(f"Could not parse value: {exc}") from None


def per_sample_times(benchmark: Any, m: Measurement) -> None:
    """Make pytest-benchmark's own figures the steady-state seconds per sample of each round (1/samples_per_s),
    not the round's length, which the harness sizes to --loader-round-seconds in every run: then
    ``pytest-benchmark compare`` and ``--benchmark-compare-fail`` move with samples_per_s."""
    stats = getattr(getattr(benchmark, "stats", None), "stats", None)
    values = [1.0 / v for v in m.rounds.get("samples_per_s", ()) if v > 0]
    if stats is None or not values:
        return
    stats.data[:] = values
    for cached in [k for k in vars(stats) if k != "data"]:  # its cached_property figures, computed afresh
        delattr(stats, cached)


def record_command(opts: RunOptions) -> str:
    """The command that records a baseline for this run's selection, keeping the user's own options."""
    args = ["pytest", "--benchmark"]
    for flag, value, default in (
        ("--loader-scenarios", opts.scenarios, None),
        ("--loader-baseline-dir", opts.baseline_dir, None),
        ("--loader-tier", opts.tier, "smoke"),
        ("--loader-device", opts.device, "all"),
        ("--loader-workloads", ",".join(opts.workloads) if opts.workloads else None, None),
        ("--loader-config", opts.config, None),
        ("--loader-ranks", opts.ranks, 1),
    ):
        if value is not None and value != default:
            args.append(shlex.quote(f"{flag}={value}"))
    if opts.simulated_gpu:
        args.append("--loader-simulated-gpu")
    return " ".join([*args, "--loader-baseline-save"])


class LoaderbenchSession:
    """Runs cases, keeps their measurements, gates them, and records the baseline."""

    def __init__(self, config: pytest.Config) -> None:
        opts = run_options(config)
        self.config = config
        self.enabled: bool = opts.benchmark
        root = Path(str(config.rootpath))
        self.scenarios_path = opts.scenario_file(root)
        self.baseline_dir = Path(opts.baseline_dir) if opts.baseline_dir else root / "fixtures" / "baselines"
        self.device: str = opts.device
        self.selection = opts.selection
        self.ranks: int = opts.ranks
        self.plan = Plan(rounds=opts.rounds, round_s=opts.round_s, batch_timeout_s=opts.batch_timeout_s)
        self.saving: bool = opts.baseline_save
        self.append: bool = opts.baseline_append
        self.prune: bool = opts.baseline_prune
        self.require_baseline: bool = opts.require_baseline
        self.save_failed: bool = False
        self.ran: int = 0  # benchmark items that reached their call phase (not skipped)
        self.nothing_ran: str = ""
        self.measurements: list[Measurement] = []
        self.failures: list[CaseFailed] = []
        self.failed_cases: set[str] = set()  # measured, but their test failed after: kept out of the history
        self.history: HistoryKeeper | None = None
        self.tier: Tier | None = None
        self.gate: Gate | None = None
        self.saved: Path | None = None
        self.save_note: str = ""
        self.calibration_note: str = ""
        self.malloc: str = ""
        self.control: control.ControlReading | None = None
        self._requests: dict[str, str] = {}  # gate case id -> what a fresh process is asked to measure
        self._extra_infos: dict[str, dict[str, Any]] = {}
        if not self.enabled:
            return
        if (self.append or self.prune) and not self.saving:
            flag = "--loader-baseline-append" if self.append else "--loader-baseline-prune"
            raise pytest.UsageError(f"{flag} only applies when recording: add --loader-baseline-save.")
        self.malloc = allocator.pin()  # before any case: batches allocate alike in every process
        try:
            if opts.report and not opts.collect_only:
                prepare_report_dir(opts.report, option="--loader-report")
            workloads = load_scenarios(self.scenarios_path)
            tier = self.selection.tier_of(workloads)
            self.fingerprint = fingerprint.current(simulated_gpu=opts.simulated_gpu)
            packages = list(opts.env_packages)
            self.environment = environment.current(packages=packages, repo=root)
            self.priors = load_priors(data.local_or_packaged(root, data.NOISE))
            self.store = BaselineStore(self.baseline_dir)
            self.history = HistoryKeeper.of(config, self.fingerprint, self.environment)
            if not self.saving:
                self.gate = Gate(
                    self.store,
                    self.fingerprint,
                    thresholds=opts.threshold,
                    allow_mismatch=opts.compare_anyway,
                    max_extra_measurements=opts.max_extra,
                    environment=self.environment,
                    priors=self.priors,
                    record_command=record_command(opts),
                    drift=self.history.drift() if self.history is not None else None,
                    offset_drift=self.history.offset_drift() if self.history is not None else None,
                )
                reference = self.gate.doc
            else:
                reference = self.store.load(self.fingerprint) if self.append else None
            self._reuse_calibration(reference)
        except LoaderbenchError as exc:
            raise pytest.UsageError(str(exc)) from None
        self.tier = tier
        if not opts.collect_only:
            self.control = control.measure()  # the control case, before any loader ran

    def _reuse_calibration(self, doc: BaselineDoc | None) -> None:
        """Run the cpu workload with the baseline's spin calibration, when it recorded one: a process whose own
        calibration came out a few percent off would otherwise make every cpu case look changed."""
        loops = doc.calibration(SPIN_CALIBRATION) if doc is not None else None
        if loops is not None and not calibrated():
            use_calibration(loops)
            self.calibration_note = f"cpu workload: the baseline's spin calibration ({loops:.4g} loops/s) reused"

    def no_case_reason(self) -> str:
        """Why the selection has no case (empty when it has some)."""
        if self.tier is None or self.cases():
            return ""
        return (
            f"the selection has no case: {self.tier.summary()}, --loader-device={self.device}; "
            f"workloads from {self.scenarios_path}"
        )

    def unknown_threshold_case(self, fixture_names: list[str]) -> str:
        """A usage message when ``--loader-threshold`` names a case no test of this run can measure (empty when all
        are known): the tier's case ids, and ``NAME-...`` for each ``loader_benchmark`` test named ``NAME``."""
        thresholds = run_options(self.config).threshold
        if thresholds is None or self.tier is None:
            return ""
        sim = SimulatedGpuSpec.from_env() if getattr(self.config.option, "loader_simulated_gpu", False) else None
        known = [
            dataclasses.replace(c, simulated_gpu=sim).id if sim and c.device == "cuda" else c.id
            for c in self.tier.cases
        ]
        for case, _ in thresholds.cases:
            if case in known or any(case.startswith(f"{name}-") for name in fixture_names):
                continue
            listed = [*known[:12], *(f"{n}-DEVICE-CONFIG" for n in fixture_names[:12])]
            more = (
                f" (and {len(known) + len(fixture_names) - len(listed)} more)"
                if len(listed) < len(known) + len(fixture_names)
                else ""
            )
            return (
                f"--loader-threshold: case {case!r} is not a case of this run, so its threshold would never apply. "
                f"Known case ids: {', '.join(listed) or 'none'}{more}. Fix the spelling (pytest --benchmark "
                "--collect-only -q lists them)."
            )
        return ""

    def cases(self) -> list[Case]:
        if self.tier is None:
            return []
        return self.selection.cases_of(self.tier)

    # --- one case ----------------------------------------------------------------------
    def run(self, case: Case, benchmark: Any) -> Measurement:
        """Measure ``case`` through pytest-benchmark's pedantic mode, then gate it."""

        def runner(round_fn: Any, rounds: int, between: Any) -> None:
            benchmark.pedantic(round_fn, setup=between, rounds=rounds, iterations=1, warmup_rounds=0)

        failure: CaseFailed | None = None
        try:
            m = run_case(case, self.plan, runner=runner)
        except CaseFailed as exc:
            failure = exc
        if failure is not None and failure.kind == OTHER_NODE:
            benchmark.skipped = True
            self.ran += 1  # its ranks here did run the case: a skip of the item, not of the job (no exit 5)
            pytest.skip(str(failure))
        if failure is not None:  # outside the except block: pytest prints the message once, not chained
            self.failures.append(failure)
            benchmark.skipped = True  # no "Benchmark fixture was not used" warning on top of the failure
            pytest.fail(str(failure), pytrace=False)
        per_sample_times(benchmark, m)
        benchmark.extra_info.update(m.extra_info())
        if case.device == "cpu" and case.config.start_method == "fork":  # evidence: forked from a CUDA-free process
            benchmark.extra_info["parent_cuda_initialized"] = parent_cuda_initialized()
            hazard = fork_hazard(case.config)
            if hazard:
                benchmark.extra_info["warnings"] = [*benchmark.extra_info.get("warnings", []), hazard]
        self._requests[m.case_id] = request_of(case)
        if self.gate is not None and self.gate.active:
            # provisional (the case alone); finish() replaces them with the job's verdicts
            verdicts = self.gate.check(m)
            benchmark.extra_info["gate"] = [v.as_dict() for v in verdicts]
            self._extra_infos[m.case_id] = benchmark.extra_info
        self.measurements.append(m)
        return m

    # --- end of session ---------------------------------------------------------------------
    def finish(self, interrupted: bool) -> None:
        """Decide the job (the gate, with the control case and fresh-process confirmations) or record the
        baseline (never after an interrupted run)."""
        if not self.enabled or self.tier is None:
            return
        if not interrupted and self.measurements:
            self.control = self.control.merged(control.measure()) if self.control is not None else control.measure()
        if self.history is not None:
            kept = [m for m in self.measurements if m.case_id not in self.failed_cases]
            self.history.keep(kept, interrupted=interrupted)
        if not self.saving:
            self._decide(interrupted)
            return
        if interrupted:
            self.save_note = "the run was interrupted: the baseline was not touched"
            return
        if not self.measurements:
            self.save_note = "no case was measured: the baseline was not touched"
            return
        try:
            calibration = {SPIN_CALIBRATION: spin_loops_per_s()} if calibrated() else {}
            if self.control is not None:
                calibration.update(self.control.as_calibration())
            self.saved = self.store.record(
                self.fingerprint,
                self.measurements,
                prune=self.prune,
                append=self.append,
                environment=self.environment,
                calibration=calibration,
            )
        except LoaderbenchError as exc:
            self.save_failed = True
            self.save_note = f"the baseline was NOT saved (the run fails): {exc}"
            return
        own = on_this_node(
            [m.case_id for m in self.measurements if not self.priors.has_own(m.workload)], self.measurements
        )
        noise_note = add_noise_sessions(
            self.store,
            self.fingerprint,
            own,
            lambda ids: fresh_process(child_spec(self.config, self.scenarios_path, self.ranks), self._requests, ids),
            min_sessions=DEFAULT_SETTINGS.min_sessions,
            environment=self.environment,
            calibration=calibration,
        )
        how = "added a session to" if self.append else "recorded"
        resolves = resolution_note(self.store, self.fingerprint, self.measurements, self.priors)
        self.save_note = (
            f"{how} {len(self.measurements)} case(s) in {self.saved}"
            + (" (pruned cases absent from this run)" if self.prune else "")
            + (f"; {noise_note}" if noise_note else "")
            + f"; its cases now hold {sessions_held(self.store, self.fingerprint)} recording session(s). "
            + f"{resolves} Each further "
            "session (--loader-baseline-save --loader-baseline-append, in a separate run) narrows the noise to the "
            "case's own."
        )

    def _decide(self, interrupted: bool) -> None:
        gate = self.gate
        if gate is None or not gate.active or interrupted:
            return
        gate.use_control(self.control)
        spec = child_spec(self.config, self.scenarios_path, self.ranks)
        gate.finalize(confirm=confirmer(spec, self._requests, self.measurements))
        for v in gate.verdicts:
            info = self._extra_infos.get(v.case_id)
            if info is not None:
                info["gate"] = [w.as_dict() for w in gate.verdicts if w.case_id == v.case_id]

    @property
    def failed_gate(self) -> bool:
        return self.gate is not None and self.gate.failed

    def run_failures(self) -> list[tuple[str, int, str]]:
        """Why this run fails although its tests passed: ``(summary key, count, reason)`` each; empty when it
        does not.  The plugin turns these into exit code 1 and a word on pytest's final line."""
        out: list[tuple[str, int, str]] = []
        if self.failed_gate and self.gate is not None:
            regressed = sorted({v.case_id for v in self.gate.verdicts if v.failed})
            out.append(("regressed", len(regressed), f"{len(regressed)} case(s) regressed (see REGRESSIONS above)"))
        if self.save_failed:
            out.append(("baseline not saved", 1, "the baseline was NOT saved (see the loaderbench section)"))
        out += self.history.failures() if self.history is not None else []
        if self.require_baseline and not self.saving and self.gate is not None:
            uncompared = self.gate.uncompared()
            if not self.gate.active:
                out.append(
                    (
                        "no baseline",
                        1,
                        "--loader-require-baseline: no baseline matches this machine; "
                        "record one with --loader-baseline-save, or pass --loader-compare-anyway",
                    )
                )
            elif uncompared:
                out.append(
                    (
                        "not compared",
                        len(uncompared),
                        f"--loader-require-baseline: {len(uncompared)} case(s) have "
                        f"no matching baseline entry ({', '.join(uncompared)}); record them with "
                        "--loader-baseline-save",
                    )
                )
        return out

    def shortfall(self) -> list[tuple[str, int]]:
        """What pytest's last line must say although the run passes: measured cases that a baseline was
        found for but could not be compared (no entry, or another config).  ``--loader-require-baseline``
        turns the same shortfall into a failure (:meth:`run_failures`) instead."""
        if self.saving or self.require_baseline or self.gate is None or not self.gate.active:
            return []
        uncompared = self.gate.uncompared()
        return [("not compared", len(uncompared))] if uncompared else []

    def verdicts(self) -> tuple[Verdict, ...]:
        return self.gate.verdicts if self.gate is not None else ()

    def verdict_texts(self) -> dict[str, str] | None:
        if self.gate is None or not self.gate.active:
            return None
        return verdict_texts(self.gate.verdicts)

    def gate_lines(self) -> list[str]:
        notes = [f"loaderbench: {self.calibration_note}"] if self.calibration_note else []
        notes += self.history.lines if self.history is not None else []
        if self.saving:
            return [*notes, f"loaderbench baseline: {self.save_note}"] if self.save_note else notes
        if self.gate is None:
            return notes
        return [*summary_lines(self.gate), *notes]

    def context(self) -> dict[str, Any]:
        return {
            "tier": self.tier.name if self.tier else None,
            "device": self.device,
            "rounds": self.plan.rounds,
            "round_s": self.plan.round_s,
            "fingerprint": self.fingerprint.as_dict() if self.tier is not None else None,
            "environment": self.environment.as_dict() if self.tier is not None else None,
            "malloc": self.malloc if self.enabled else None,
            "gate": self.gate.status() if self.gate is not None else None,
        }
