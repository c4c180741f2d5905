"""The A/B scheduler: the ABBA schedule of child processes, the budget, and the decisions after each block.

Schedule: block ``i`` runs every still-undecided case once in a fresh base process and once in a fresh
head process, base first in odd blocks and head first in even ones (A B, B A, A B, ...), so a drift
across the job (a warming machine, a neighbour's load) favours neither arm: with a linear drift, pair
``i``'s log ratio is off by ``+d`` in odd blocks and ``-d`` in even ones, and the mean cancels it.
After each block every case with a new pair is decided (:mod:`loaderbench.ab.paired`, per metric);
a case leaves the schedule once no metric is ``inconclusive``.  The scheduler stops when every case is
decided, after ``max_pairs`` blocks, or before a block that the budget cannot fit (predicted from the
last block); at least 3 blocks always run (a change is decided from 3 pairs on), and the block
the budget stops after is the last look, which spends what the earlier looks left.

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
import os
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from loaderbench.ab.errors import ABError
from loaderbench.ab.paired import ABVerdict, decide_runs
from loaderbench.ab.process import run_grouped
from loaderbench.ab.records import TEST_PREFIX, ChildOutput, ChildSpec, read_records, variable_changes
from loaderbench.decision.rules import Levels
from loaderbench.decision.sequential import DEFAULT_MAX_PAIRS, MIN_PAIRS
from loaderbench.gate.priors import NoisePriors
from loaderbench.gate.thresholds import Thresholds
from loaderbench.measurement import Measurement
from loaderbench.metrics import METRICS
from loaderbench.store.environment import Environment, changes
from loaderbench.workloads.calibration import CALIBRATION_ENV, spin_loops_per_s

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
    #: The arm's own copy of the invocation directory (``--loader-ab-base-dir``: a checkout of the base
    #: commit), where its children run, so its tests, conftest and scenario file are its own; None: the
    #: invocation directory.
    directory: Path | None = None


@dataclass(frozen=True, slots=True)
class Schedule:
    """How far the A/B may go: ``max_pairs`` blocks, ``budget_s`` seconds; the thresholds and levels of
    its decisions."""

    max_pairs: int = DEFAULT_MAX_PAIRS
    budget_s: float = 900.0
    thresholds: Thresholds = field(default_factory=Thresholds)
    levels: Levels = field(default_factory=Levels)
    #: The stored between-process priors the pairs' noise is pooled with (None: the pairs alone).
    priors: NoisePriors | None = None


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


def family_size(pairs: Mapping[str, Sequence[tuple[Measurement, Measurement]]]) -> int:
    """The job's hypotheses: every case x metric measured in both arms of the first pair (at least 1)."""
    count = 0
    for ps in pairs.values():
        if ps:
            b, h = ps[0]
            count += sum(m.present([b]) and m.present([h]) and m.applies([b]) for m in METRICS.values())
    return max(1, count)


def decide_case(
    case_id: str,
    pairs: Sequence[tuple[Measurement, Measurement]],
    schedule: Schedule,
    *,
    family: int = 1,
    final: bool = False,
) -> list[ABVerdict]:
    """Every metric present in all runs of both arms, decided from the pairs at this look (``final``: the
    job's last); each hypothesis has ``job_alpha / family`` of the job's level to spend over its looks."""
    base = [b for b, _ in pairs]
    head = [h for _, h in pairs]
    out = []
    for metric in METRICS.values():
        prior = None
        if schedule.priors is not None and base:
            first = base[0]
            over = first.config.loading_processes > first.cpus
            prior = schedule.priors.get(first.workload, metric.name, oversubscribed=over)
        v = decide_runs(
            case_id,
            metric,
            base,
            head,
            threshold=schedule.thresholds.get(case_id, metric),
            alpha=schedule.levels.job_alpha / family,
            max_pairs=schedule.max_pairs,
            prior=prior,
            levels=schedule.levels,
            final=final,
        )
        if v is not None:
            out.append(v)
    return out


def _keep_decided(before: Sequence[ABVerdict], now: Sequence[ABVerdict]) -> list[ABVerdict]:
    """``now``, except that a metric decided at an earlier look keeps that verdict (a sequential boundary
    once crossed decides the hypothesis; later pairs of the case's other metrics do not reopen it)."""
    decided = {v.metric: v for v in before if v.outcome != "inconclusive"}
    return [decided.get(v.metric, v) for v in now]


def child_timeout(spec: ChildSpec) -> float | None:
    """A child's time limit: generous (each case may use its watchdog several times), None without a watchdog."""
    if not math.isfinite(spec.timeout_s):
        return None
    return 120.0 + len(spec.cases) * (3 * spec.timeout_s + 60.0)


def moved(path: str, cwd: Path, directory: Path | None) -> str:
    """``path`` (the spec's rootdir or scenario file, as the head sees it) in the arm's ``directory``: the
    same place relative to the invocation directory ``cwd``, where that exists there; else unchanged
    (a packaged scenario file, or one the base commit does not have)."""
    if directory is None or not path:
        return path
    there = Path(os.path.normpath(directory / os.path.relpath(path, cwd)))
    return str(there) if there.exists() else path


def run_arm(arm: Arm, block: int, spec: ChildSpec, *, workdir: Path, cwd: Path) -> ChildOutput:
    """One child of ``arm`` measuring ``spec.cases``; :class:`ABError` when it crashes.  It runs in the arm's
    own directory when it has one (:attr:`Arm.directory`), with the spec's paths moved there."""
    if arm.directory is not None:
        spec = dataclasses.replace(
            spec,
            rootdir=moved(spec.rootdir, cwd, arm.directory),
            scenarios=moved(spec.scenarios, cwd, arm.directory),
        )
        cwd = arm.directory
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
    block, last_s, family = 0, 0.0, 1
    stopped = f"the --loader-ab-pairs limit of {schedule.max_pairs} pairs"
    final = False
    while active and block < schedule.max_pairs and not final:
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
        last_s = clock() - began
        if block == 1:
            firsts = {c: [p] for c in active if (p := _peek(c, outputs)) is not None}
            family = family_size(firsts)
        # the last look spends what the earlier ones left: at max_pairs, or when the budget cannot fit another
        # block (decided on time, never on the data)
        if block >= MIN_PAIRS and clock() - start + last_s > schedule.budget_s:
            final = True
            stopped = f"the --loader-ab-budget of {schedule.budget_s:g} s (another block would pass it)"
        for case_id in list(active):
            pair = _pair(case_id, block, outputs, failures, not_compared)
            if pair is None:
                active.remove(case_id)
                verdicts.pop(case_id, None)
                continue
            pairs[case_id].append(pair)
            now = decide_case(
                case_id, pairs[case_id], schedule, family=family, final=final or block == schedule.max_pairs
            )
            verdicts[case_id] = _keep_decided(verdicts.get(case_id, []), now)
            if not verdicts[case_id]:
                not_compared[case_id] = "no metric was measured in every run of both arms"
                active.remove(case_id)
            elif not any(v.needs_more for v in verdicts[case_id]):  # decided, or futile (never regressed)
                active.remove(case_id)
    if not active:
        stopped = "every case was decided"
    decided = []
    for case_id, vs in verdicts.items():
        for v in vs:
            if v.outcome == "inconclusive" and case_id in active:
                v = dataclasses.replace(v, reason=f"{v.reason}; stopped at {v.pairs} pairs by {stopped}".lstrip("; "))
            decided.append(v)
    notes = _calibration_notes(first, calibration)
    shutil.rmtree(workdir, ignore_errors=True)
    return ABResult(
        verdicts=tuple(decided),
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


def _peek(case_id: str, outputs: Mapping[str, ChildOutput]) -> tuple[Measurement, Measurement] | None:
    base, head = outputs["base"].measurements.get(case_id), outputs["head"].measurements.get(case_id)
    return (base, head) if base is not None and head is not None else None


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
        why = (
            "a test the head adds or renames"
            if case_id.startswith(TEST_PREFIX)
            else "its loaderbench or scenarios make other cases"
        )
        not_compared[case_id] = f"the {missing[0]} arm has no such case ({why})"
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
