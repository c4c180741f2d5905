"""The A/B runner: the ABBA schedule of child processes, the budget, and the decisions after each block.

Schedule: block ``i`` runs every still-undecided case once in a fresh base process and once in a fresh
head process, base first in odd blocks and head first in even ones (A B, B A, A B, ...), so a drift
across the job (a warming machine, a neighbour's load) favours neither arm: with a linear drift, pair
``i``'s log ratio is off by ``+d`` in odd blocks and ``-d`` in even ones, and the mean cancels it.
After each block every case with a new pair is decided (:mod:`loaderbench.ab.paired`, per metric);
a case leaves the schedule once no metric is ``inconclusive``.  The runner stops when every case is
decided, after ``max_pairs`` blocks, or before a block that the budget cannot fit (predicted from the
last block, scaled by the cases left); at least 2 blocks always run.

Both arms get the same spin calibration (``$LOADERBENCH_SPIN_LOOPS_PER_S``), measured once here, so a
process's calibration noise cannot look like a difference between the arms.  A child that crashes
(non-zero exit, or no ``done`` record) ends the A/B with an :class:`ABError`; its spec, records and
log are kept for the user to rerun (after a KeyboardInterrupt they are removed).  A case that fails
(``CaseFailed``) in either arm leaves the schedule; one that fails in the head arm fails the run, as
it would without ``--loader-ab``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from loaderbench.ab.errors import ABError
from loaderbench.ab.paired import MIN_PAIRS, ABVerdict, Levels, decide_runs
from loaderbench.ab.process import run_grouped
from loaderbench.ab.records import ChildOutput, ChildSpec, read_records, variable_changes
from loaderbench.engine.workloads import CALIBRATION_ENV, spin_loops_per_s
from loaderbench.gate.thresholds import Thresholds
from loaderbench.measurement import Measurement
from loaderbench.metrics import METRICS
from loaderbench.store.environment import Environment, changes

ARMS = ("base", "head")
#: The module each arm runs as a child.
CHILD_MODULE = "loaderbench.ab.child"


def arm_order(block: int) -> tuple[str, str]:
    """The arms of block ``block`` (1-based) in the order they run: ABBA (base first in odd blocks)."""
    return ("base", "head") if block % 2 == 1 else ("head", "base")


@dataclass(frozen=True, slots=True)
class Arm:
    """One side of the A/B: the executable its children run with, their environment, and how the user
    named it (the prefix of every message about it)."""

    name: str
    executable: str
    env: Mapping[str, str]
    label: str


@dataclass(frozen=True, slots=True)
class Schedule:
    """How far the A/B may go: ``max_pairs`` blocks, ``budget_s`` seconds; the thresholds and levels of
    its decisions."""

    max_pairs: int = 8
    budget_s: float = 900.0
    thresholds: Thresholds = field(default_factory=Thresholds)
    levels: Levels = field(default_factory=Levels)

    @property
    def looks(self) -> int:
        """How many times a case can be decided regressed or improved: once per block from :data:`MIN_PAIRS`
        pairs on (the significance level is split over them)."""
        return max(1, self.max_pairs - MIN_PAIRS + 1)


@dataclass(frozen=True, slots=True)
class Step:
    """One child about to start, for the progress line."""

    block: int
    blocks: int
    arm: str
    position: int
    cases: int
    elapsed_s: float


@dataclass(frozen=True, slots=True)
class CaseFailure:
    case_id: str
    arm: str
    block: int
    message: str


@dataclass(frozen=True, slots=True)
class ABResult:
    """Everything the A/B found: the verdicts, the pairs behind them, the arms' environments."""

    verdicts: tuple[ABVerdict, ...]
    pairs: Mapping[str, tuple[tuple[Measurement, Measurement], ...]]
    failures: tuple[CaseFailure, ...]
    not_compared: Mapping[str, str]
    environments: Mapping[str, Environment | None]
    variables: Mapping[str, Mapping[str, str]]
    executables: Mapping[str, str]
    calibration: float
    blocks: int
    elapsed_s: float
    stopped: str
    notes: tuple[str, ...] = ()

    @property
    def regressions(self) -> list[ABVerdict]:
        return [v for v in self.verdicts if v.outcome == "regressed"]

    @property
    def head_failures(self) -> list[CaseFailure]:
        return [f for f in self.failures if f.arm == "head"]

    @property
    def failed(self) -> bool:
        """Whether the run fails: a regression, or a case that failed in the head arm."""
        return bool(self.regressions or self.head_failures)

    def changes(self) -> list[str]:
        """What differs between the arms' environments and environment variables, in words."""
        base, head = self.environments.get("base"), self.environments.get("head")
        out = changes(base, head) if base is not None and head is not None else []
        return out + variable_changes(self.variables.get("base", {}), self.variables.get("head", {}))


def decide_case(case_id: str, pairs: Sequence[tuple[Measurement, Measurement]], schedule: Schedule) -> list[ABVerdict]:
    """Every metric present in all runs of both arms, decided from the pairs."""
    base = [b for b, _ in pairs]
    head = [h for _, h in pairs]
    out = []
    for metric in METRICS.values():
        v = decide_runs(
            case_id,
            metric,
            base,
            head,
            threshold=schedule.thresholds.get(case_id, metric),
            looks=schedule.looks,
            levels=schedule.levels,
        )
        if v is not None:
            out.append(v)
    return out


def child_timeout(spec: ChildSpec) -> float | None:
    """A child's time limit: generous (each case may use its watchdog several times), None without a watchdog."""
    if not math.isfinite(spec.timeout_s):
        return None
    return 120.0 + len(spec.cases) * (3 * spec.timeout_s + 60.0)


def run_arm(arm: Arm, block: int, spec: ChildSpec, *, workdir: Path, cwd: Path) -> ChildOutput:
    """One child of ``arm`` measuring ``spec.cases``; :class:`ABError` when it crashes."""
    stem = workdir / f"block{block}-{arm.name}"
    spec_path, records, log = (stem.with_suffix(s) for s in (".spec.json", ".records.jsonl", ".log"))
    spec_path.write_text(json.dumps(spec.to_json(), indent=1), encoding="utf-8")
    argv = [arm.executable, "-m", CHILD_MODULE, str(spec_path), str(records)]
    done = run_grouped(argv, label=arm.label, env=arm.env, cwd=cwd, log=log, timeout_s=child_timeout(spec))
    where = f"{arm.label}: the {arm.name} arm ({arm.executable}) in block {block}"
    out = read_records(records, where=where)
    if out.error:
        raise ABError(f"{where} cannot build the cases: {out.error} (its log: {log}).")
    if done.returncode != 0 or done.timed_out or not out.done:
        said = f"; its output ended with: {done.output}" if done.output else ""
        finished = "finished without its 'done' record" if done.returncode == 0 and not done.timed_out else ""
        raise ABError(
            f"{where} crashed: it {finished or done.status()} after {out.recorded} of {len(spec.cases)} case(s)"
            f"{said}. Run it alone to see why: `cd {shlex.quote(str(cwd))} && "
            f"{' '.join(shlex.quote(a) for a in argv)}` (the spec, records and log are kept in {workdir}); "
            "fix that environment or pass another interpreter, then rerun."
        )
    return out


def run_ab(
    spec: ChildSpec,
    arms: Mapping[str, Arm],
    schedule: Schedule,
    *,
    cwd: Path,
    progress: Callable[[Step], None] = lambda step: None,
    clock: Callable[[], float] = time.monotonic,
) -> ABResult:
    """Run the A/B of ``spec.cases`` between ``arms["base"]`` and ``arms["head"]`` (see the module docstring)."""
    calibration = spin_loops_per_s()
    arms = {n: dataclasses.replace(a, env={**a.env, CALIBRATION_ENV: repr(calibration)}) for n, a in arms.items()}
    workdir = Path(tempfile.mkdtemp(prefix="loaderbench-ab-"))
    active = list(spec.cases)
    pairs: dict[str, list[tuple[Measurement, Measurement]]] = {c: [] for c in spec.cases}
    verdicts: dict[str, list[ABVerdict]] = {}
    failures: list[CaseFailure] = []
    not_compared: dict[str, str] = {}
    first: dict[str, ChildOutput] = {}
    start = clock()
    block, last_s, last_cases = 0, 0.0, 1
    stopped = f"the --loader-ab-pairs limit of {schedule.max_pairs} pairs"
    while active and block < schedule.max_pairs:
        elapsed = clock() - start
        if block >= 2 and elapsed + last_s * len(active) / last_cases > schedule.budget_s:
            stopped = f"the --loader-ab-budget of {schedule.budget_s:g} s (another block would pass it)"
            break
        block += 1
        began = clock()
        outputs: dict[str, ChildOutput] = {}
        for position, name in enumerate(arm_order(block)):
            progress(Step(block, schedule.max_pairs, name, position, len(active), clock() - start))
            try:
                outputs[name] = run_arm(
                    arms[name], block, dataclasses.replace(spec, cases=tuple(active)), workdir=workdir, cwd=cwd
                )
            except KeyboardInterrupt:  # the child's group is already killed; its files are of no use now
                shutil.rmtree(workdir, ignore_errors=True)
                raise
            first.setdefault(name, outputs[name])
        last_s, last_cases = clock() - began, len(active)
        for case_id in list(active):
            pair = _pair(case_id, block, outputs, failures, not_compared)
            if pair is None:
                active.remove(case_id)
                verdicts.pop(case_id, None)
                continue
            pairs[case_id].append(pair)
            verdicts[case_id] = decide_case(case_id, pairs[case_id], schedule)
            if not verdicts[case_id]:
                not_compared[case_id] = "no metric was measured in every run of both arms"
                active.remove(case_id)
            elif all(v.outcome != "inconclusive" for v in verdicts[case_id]):
                active.remove(case_id)
    if not active:
        stopped = "every case was decided"
    final = []
    for case_id, vs in verdicts.items():
        for v in vs:
            if v.outcome == "inconclusive" and case_id in active:
                v = dataclasses.replace(v, reason=f"{v.reason}; stopped at {v.pairs} pairs by {stopped}".lstrip("; "))
            final.append(v)
    notes = _calibration_notes(first, calibration)
    shutil.rmtree(workdir, ignore_errors=True)
    return ABResult(
        verdicts=tuple(final),
        pairs={c: tuple(p) for c, p in pairs.items() if p and c in verdicts},
        failures=tuple(failures),
        not_compared=not_compared,
        environments={n: o.environment for n, o in first.items()},
        variables={n: o.variables for n, o in first.items()},
        executables={n: arms[n].executable for n in ARMS if n in arms},
        calibration=calibration,
        blocks=block,
        elapsed_s=clock() - start,
        stopped=stopped,
        notes=notes,
    )


def _pair(
    case_id: str,
    block: int,
    outputs: Mapping[str, ChildOutput],
    failures: list[CaseFailure],
    not_compared: dict[str, str],
) -> tuple[Measurement, Measurement] | None:
    """Block ``block``'s (base, head) runs of a case, or None (recording why) when it cannot be paired."""
    failed = [
        CaseFailure(case_id, n, block, outputs[n].failures[case_id]) for n in ARMS if case_id in outputs[n].failures
    ]
    if failed:
        failures.extend(failed)
        return None
    missing = [n for n in ARMS if case_id in outputs[n].missing]
    if missing:
        not_compared[case_id] = f"the {missing[0]} arm has no such case (its loaderbench or scenarios make other cases)"
        return None
    base, head = outputs["base"].measurements.get(case_id), outputs["head"].measurements.get(case_id)
    if base is None or head is None:
        not_compared[case_id] = f"block {block} recorded no measurement of it"
        return None
    return base, head


def _calibration_notes(first: Mapping[str, ChildOutput], calibration: float) -> tuple[str, ...]:
    out = []
    for name, output in first.items():
        used = output.calibration
        if used is not None and not math.isclose(used, calibration, rel_tol=1e-9):
            out.append(
                f"the {name} arm used its own spin calibration ({used:.4g} loops/s, handed {calibration:.4g}): "
                "its loaderbench ignores $LOADERBENCH_SPIN_LOOPS_PER_S, so cpu cases carry calibration noise"
            )
    return tuple(out)
