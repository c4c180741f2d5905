"""Confirmation where the noise lives: a suspected regression is measured again in a fresh process.

A process carries an offset of its own (CPU calibration, allocator state, where its pages landed) that
every measurement it takes shares, so a second measurement in the same process cannot tell a real
regression from an unlucky process.  :func:`fresh_process` runs the suspected cases in one new
interpreter through the A/B's child protocol (``python -m loaderbench.ab.child``: the suite's cases
rebuilt from the same options, a user's ``loader_benchmark`` tests through pytest) and returns what it
measured.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pytest

from loaderbench.ab.process import run_grouped
from loaderbench.ab.records import TEST_PREFIX, ChildSpec, read_records
from loaderbench.engine.case import Case
from loaderbench.errors import LoaderbenchError, UsageError
from loaderbench.gate.job import Confirm
from loaderbench.measurement import Measurement
from loaderbench.pytest_plugin.run_options import run_options
from loaderbench.ranks.launch import several_nodes
from loaderbench.workloads.calibration import CALIBRATION_ENV, calibrated, spin_loops_per_s


def fresh_process(spec: ChildSpec, requests: Mapping[str, str], case_ids: Sequence[str]) -> dict[str, Measurement]:
    """Measure ``case_ids`` once each in a fresh interpreter.  ``requests`` maps a gate case id to what the
    child is asked for (the tier's case id, or ``test:`` plus a ``loader_benchmark`` test's node id).
    Raises :class:`UsageError` (a :class:`~loaderbench.errors.LoaderbenchError`) when the child crashes."""
    wanted = {requests[c]: c for c in case_ids if c in requests}
    if not wanted:
        return {}
    workdir = Path(tempfile.mkdtemp(prefix="loaderbench-confirm-"))
    try:
        spec_path, records, log = workdir / "spec.json", workdir / "records.jsonl", workdir / "child.log"
        run = dataclasses.replace(spec, cases=tuple(wanted))
        spec_path.write_text(json.dumps(run.to_json()), encoding="utf-8")
        env = dict(os.environ)
        env.pop("PYTEST_CURRENT_TEST", None)
        if calibrated():
            env[CALIBRATION_ENV] = repr(spin_loops_per_s())  # the same cpu calibration as this process
        timeout = None if not math.isfinite(spec.timeout_s) else 120.0 + len(wanted) * (3 * spec.timeout_s + 60.0)
        argv = [sys.executable, "-m", "loaderbench.ab.child", str(spec_path), str(records)]
        done = run_grouped(
            argv, label="the confirming process", env=env, cwd=Path(spec.rootdir or "."), log=log, timeout_s=timeout
        )
        out = read_records(records, where="the confirming process")
        if out.error or not out.done:
            raise UsageError(
                f"the confirming process {done.status()}: {out.error or done.output or 'no output'}; the suspected "
                "regressions stay inconclusive"
            )
        return {wanted[k]: m for k, m in out.measurements.items() if k in wanted}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def on_this_node(case_ids: Sequence[str], measured: Iterable[Measurement]) -> list[str]:
    """Those of ``case_ids`` that a fresh process can measure on this node alone: not a ranked case when
    ``LOADERBENCH_TORCHRUN_ARGS`` spreads the ranks over several nodes (its fresh process would wait for
    the other nodes' ranks, whose pytest runs are over)."""
    if not several_nodes():
        return list(case_ids)
    ranked = {m.case_id for m in measured if m.config.ranks > 1}
    return [c for c in case_ids if c not in ranked]


def confirmer(spec: ChildSpec, requests: Mapping[str, str], measured: Sequence[Measurement]) -> Confirm:
    """The gate's confirmation: :func:`fresh_process`, refused with the reason (the suspects stay
    inconclusive) for a ranked case spread over several nodes (:func:`on_this_node`)."""

    def confirm(case_ids: Sequence[str]) -> Mapping[str, Measurement]:
        if len(on_this_node(case_ids, measured)) < len(case_ids):
            raise LoaderbenchError(
                "their ranks run on several nodes (LOADERBENCH_TORCHRUN_ARGS), and a fresh process would wait for "
                "the other nodes' ranks, whose runs are over; they stay inconclusive: rerun every node to confirm"
            )
        return fresh_process(spec, requests, case_ids)

    return confirm


def request_of(case: Case) -> str:
    """What a fresh process is asked for to measure ``case`` again: the tier's case id, or a user's
    ``loader_benchmark`` test by its node id (the test running now)."""
    if case.workload.kind != "user":
        return case.id
    current = os.environ.get("PYTEST_CURRENT_TEST", "")
    return TEST_PREFIX + current.rsplit(" (", 1)[0] if current else case.id


def child_spec(config: pytest.Config, scenarios: Path, ranks: int) -> ChildSpec:
    """This run's selection as the A/B child protocol's spec (for a fresh confirming process)."""
    opts = run_options(config)
    timeout = opts.batch_timeout_s
    return ChildSpec(
        scenarios=str(scenarios.resolve()),
        tier=opts.tier,
        device=opts.device,
        rounds=opts.rounds,
        round_s=opts.round_s,
        batch_timeout_s=timeout if math.isfinite(timeout) else None,
        workloads=opts.workloads,
        config=opts.config,
        rootdir=str(config.rootpath),
        ranks=ranks,
        simulated_gpu=opts.simulated_gpu,
    )
