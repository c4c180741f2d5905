"""The benchmark session: built once per pytest run, it runs cases, gates them against the
baseline and records baselines.  ``plugin.py`` holds the options and hooks; this holds the work."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from loaderbench.config import LoaderConfig
from loaderbench.cuda.spec import fork_hazard, parent_cuda_initialized
from loaderbench.engine import allocator
from loaderbench.engine.cases import Case, run_case
from loaderbench.engine.consumers import default_runner
from loaderbench.engine.plan import Plan
from loaderbench.engine.tiers import Tier, build_tier, explicit_tier
from loaderbench.engine.workloads import calibrated, load_scenarios, spin_loops_per_s, use_calibration
from loaderbench.errors import CaseFailed, LoaderbenchError
from loaderbench.gate.model import Verdict
from loaderbench.gate.priors import load_priors
from loaderbench.gate.runner import Gate
from loaderbench.gate.thresholds import parse_thresholds
from loaderbench.measurement import Measurement
from loaderbench.report.terminal import verdict_texts
from loaderbench.report.verdicts import summary_lines
from loaderbench.store import environment, fingerprint
from loaderbench.store.baseline import SPIN_CALIBRATION, BaselineDoc, BaselineStore


def threshold_option(text: str) -> Any:
    """argparse type for ``--loader-threshold``: bad specs are usage errors."""
    try:
        return parse_thresholds(text)
    except LoaderbenchError as exc:
        raise argparse.ArgumentTypeError(f"Could not parse value: {exc}") from None


class LoaderbenchSession:
    """Runs cases, keeps their measurements, gates them, and records the baseline."""

    def __init__(self, config: pytest.Config) -> None:
        opt = config.option
        self.enabled: bool = opt.benchmark
        root = Path(str(config.rootpath))
        self.scenarios_path = (
            Path(opt.loader_scenarios) if opt.loader_scenarios else root / "fixtures" / "workloads.toml"
        )
        self.baseline_dir = (
            Path(opt.loader_baseline_dir) if opt.loader_baseline_dir else root / "fixtures" / "baselines"
        )
        self.device: str = opt.loader_device
        self.plan = Plan(
            rounds=opt.loader_rounds, round_s=opt.loader_round_seconds, batch_timeout_s=opt.loader_batch_timeout
        )
        self.saving: bool = opt.loader_baseline_save
        self.append: bool = opt.loader_baseline_append
        self.prune: bool = opt.loader_baseline_prune
        self.measurements: list[Measurement] = []
        self.failures: list[CaseFailed] = []
        self.tier: Tier | None = None
        self.gate: Gate | None = None
        self.saved: Path | None = None
        self.save_note: str = ""
        self.calibration_note: str = ""
        self.malloc: str = ""
        if not self.enabled:
            return
        if (self.append or self.prune) and not self.saving:
            flag = "--loader-baseline-append" if self.append else "--loader-baseline-prune"
            raise pytest.UsageError(f"{flag} only applies when recording: add --loader-baseline-save.")
        self.malloc = allocator.pin()  # before any case: batches allocate alike in every process
        try:
            workloads = load_scenarios(self.scenarios_path)
            only = opt.loader_workloads.split(",") if opt.loader_workloads else None
            tier = build_tier(opt.loader_tier, workloads, only=only)
            if opt.loader_config:
                tier = explicit_tier(tier, workloads, LoaderConfig.from_id(opt.loader_config))
            self.fingerprint = fingerprint.current()
            packages = [p.strip() for p in opt.loader_env_packages.split(",") if p.strip()]
            self.environment = environment.current(packages=packages, repo=root)
            self.priors = load_priors(root / "fixtures" / "noise.toml")
            self.store = BaselineStore(self.baseline_dir)
            if not self.saving:
                self.gate = Gate(
                    self.store,
                    self.fingerprint,
                    thresholds=opt.loader_threshold,
                    allow_mismatch=opt.loader_compare_anyway,
                    max_extra_measurements=opt.loader_max_extra,
                    environment=self.environment,
                    priors=self.priors,
                )
                reference = self.gate.doc
            else:
                reference = self.store.load(self.fingerprint) if self.append else None
            self._reuse_calibration(reference)
        except LoaderbenchError as exc:
            raise pytest.UsageError(str(exc)) from None
        self.tier = tier

    def _reuse_calibration(self, doc: BaselineDoc | None) -> None:
        """Run the cpu workload with the baseline's spin calibration, when it recorded one: a process whose own
        calibration came out a few percent off would otherwise make every cpu case look changed."""
        loops = doc.calibration(SPIN_CALIBRATION) if doc is not None else None
        if loops is not None and not calibrated():
            use_calibration(loops)
            self.calibration_note = f"cpu workload: the baseline's spin calibration ({loops:.4g} loops/s) reused"

    def cases(self) -> list[Case]:
        if self.tier is None:
            return []
        return [c for c in self.tier.cases if self.device == "all" or c.device == self.device]

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
        if failure is not None:  # outside the except block: pytest prints the message once, not chained
            self.failures.append(failure)
            pytest.fail(str(failure), pytrace=False)
        benchmark.extra_info.update(m.extra_info())
        if case.device == "cpu" and case.config.start_method == "fork":
            # evidence that fork-started workers came from a process without a CUDA context
            benchmark.extra_info["parent_cuda_initialized"] = parent_cuda_initialized()
            hazard = fork_hazard(case.config)
            if hazard:
                benchmark.extra_info["warnings"] = [*benchmark.extra_info.get("warnings", []), hazard]
        if self.gate is not None and self.gate.active:
            # extra measurements use the plain runner, so they stay out of pytest-benchmark's stats
            verdicts = self.gate.check(m, lambda: run_case(case, self.plan, runner=default_runner))
            benchmark.extra_info["gate"] = [v.as_dict() for v in verdicts]
        self.measurements.append(m)
        return m

    # --- end of session ---------------------------------------------------------------------
    def finish(self, interrupted: bool) -> None:
        """Record the baseline (never after an interrupted run) and return."""
        if not (self.enabled and self.saving):
            return
        if interrupted:
            self.save_note = "the run was interrupted: the baseline was not touched"
            return
        if not self.measurements:
            self.save_note = "no case was measured: the baseline was not touched"
            return
        try:
            calibration = {SPIN_CALIBRATION: spin_loops_per_s()} if calibrated() else {}
            self.saved = self.store.record(
                self.fingerprint,
                self.measurements,
                prune=self.prune,
                append=self.append,
                environment=self.environment,
                calibration=calibration,
            )
        except LoaderbenchError as exc:
            self.save_note = f"the baseline was NOT saved: {exc}"
            return
        how = "added a session to" if self.append else "recorded"
        self.save_note = (
            f"{how} {len(self.measurements)} case(s) in {self.saved}"
            + (" (pruned cases absent from this run)" if self.prune else "")
            + f"; its cases now hold {self._sessions()} recording session(s). The gate compares from one session on, "
            "starting from each workload's noise prior; each further session "
            "(--loader-baseline-save --loader-baseline-append, in a separate run) narrows the noise to the case's own."
        )

    def _sessions(self) -> str:
        """How many recording sessions the saved cases now hold: ``3``, or ``1 to 3``."""
        doc = self.store.load(self.fingerprint)
        counts = sorted({e.sessions for e in doc.cases.values()}) if doc is not None else [0]
        return str(counts[0]) if counts[0] == counts[-1] else f"{counts[0]} to {counts[-1]}"

    @property
    def failed_gate(self) -> bool:
        return self.gate is not None and self.gate.failed

    def verdicts(self) -> tuple[Verdict, ...]:
        return self.gate.verdicts if self.gate is not None else ()

    def verdict_texts(self) -> dict[str, str] | None:
        if self.gate is None or not self.gate.active:
            return None
        return verdict_texts(self.gate.verdicts)

    def gate_lines(self) -> list[str]:
        notes = [f"loaderbench: {self.calibration_note}"] if self.calibration_note else []
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
