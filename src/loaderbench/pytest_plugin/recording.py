"""Recording a baseline for tests that have no noise prior of their own: their noise is measured, not assumed.

The suite's own workloads come with a measured between-process noise prior (``noise.toml``), so one
recorded session is enough to judge them.  A user's ``loader_benchmark`` test has none: judged by the
wide default prior, a 1-session baseline resolves only very large changes.  So when a save leaves such a
case with fewer than ``min_sessions`` sessions, :func:`add_noise_sessions` measures it again in fresh
processes (where the between-process noise lives) and appends each as a recording session of its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from loaderbench.errors import LoaderbenchError
from loaderbench.formatting import fmt_change
from loaderbench.gate.model import resolution, sessions_to_resolve
from loaderbench.gate.priors import NoisePriors
from loaderbench.measurement import Measurement
from loaderbench.metrics import METRICS
from loaderbench.store.baseline import BaselineStore
from loaderbench.store.environment import Environment
from loaderbench.store.fingerprint import Fingerprint

#: At most this many fresh processes are added at one save (each measures every case that needs it).
NOISE_PROCESSES = 2


def needing_noise(store: BaselineStore, fp: Fingerprint, case_ids: Sequence[str], *, min_sessions: int) -> list[str]:
    """Those of ``case_ids`` whose stored entry holds fewer than ``min_sessions`` sessions."""
    doc = store.load(fp)
    if doc is None:
        return []
    return [c for c in case_ids if c in doc.cases and doc.cases[c].sessions < min_sessions]


def add_noise_sessions(
    store: BaselineStore,
    fp: Fingerprint,
    case_ids: Sequence[str],
    measure: Callable[[Sequence[str]], Mapping[str, Measurement]],
    *,
    min_sessions: int,
    environment: Environment,
    calibration: Mapping[str, float],
    processes: int = NOISE_PROCESSES,
) -> str:
    """Measure ``case_ids`` in up to ``processes`` fresh processes (``measure``), appending each process as
    a session, until each holds ``min_sessions``.  Returns a note for the save line ("" when none ran)."""
    added = 0
    for _ in range(processes):
        todo = needing_noise(store, fp, case_ids, min_sessions=min_sessions)
        if not todo:
            break
        try:
            measured = measure(todo)
        except LoaderbenchError as exc:
            return f"measuring their noise in a fresh process failed ({exc}); they gate on the default prior"
        if not measured:
            break
        keys = list(measured)
        try:
            store.record(
                fp,
                [measured[k] for k in keys],
                append=True,
                case_ids=keys,
                environment=environment,
                calibration=calibration,
            )
        except LoaderbenchError as exc:
            return f"their fresh-process session was not saved ({exc}); they gate on what is recorded"
        added += 1
    if not added:
        return ""
    return (
        f"{len(case_ids)} case(s) without a noise prior of their own ({', '.join(case_ids)}) were measured "
        f"again in {added} fresh process(es), each a recording session, so the gate judges them by their own "
        "between-process noise"
    )


def sessions_held(store: BaselineStore, fp: Fingerprint) -> str:
    """How many recording sessions the stored cases hold: ``3``, or ``1 to 3``."""
    doc = store.load(fp)
    counts = sorted({e.sessions for e in doc.cases.values()}) if doc is not None else [0]
    return str(counts[0]) if counts[0] == counts[-1] else f"{counts[0]} to {counts[-1]}"


def resolution_note(store: BaselineStore, fp: Fingerprint, saved: Sequence[Measurement], priors: NoisePriors) -> str:
    """What the gate can now resolve on the ``saved`` cases (the smallest samples/s change it could flag, within
    the job's whole family of hypotheses), and, where that is above the threshold, plainly that it cannot yet
    and how many sessions in all it would take at today's noise (or that no number of sessions would)."""
    doc = store.load(fp)
    metric = METRICS["samples_per_s"]
    entries = [(m.workload, doc.cases[m.case_id]) for m in saved if doc is not None and m.case_id in doc.cases]
    # the job judges every gated metric of every case at once (Holm): resolve within that family
    family = max(1, sum(1 for _, e in entries for x in METRICS.values() if x.present(e.runs) and x.applies(e.runs)))
    figures: list[float] = []
    needed: list[int | None] = []
    for workload, entry in entries:
        if not metric.present(entry.runs):
            continue
        prior = priors.get(workload, metric.name)
        figure = resolution(metric, entry.runs, prior=prior, family=family)
        figures.append(figure)
        if not figure <= metric.threshold:
            needed.append(sessions_to_resolve(metric, entry.runs, metric.threshold, prior=prior, family=family))
    threshold = fmt_change(metric.threshold)
    known = [f for f in figures if math.isfinite(f) and f <= 10]
    resolves = f"it resolves samples/s changes of {_span(known)} or more" if known else "it resolves no change yet"
    if not needed:
        return f"The gate is active for them: {resolves} (threshold {threshold})."
    reachable = [n for n in needed if n is not None]
    how = (
        f"about {max(reachable)} sessions in all would reach it at today's noise"
        if len(reachable) == len(needed)
        else "no number of sessions would reach it at today's noise: compare base and head with --loader-ab, "
        "or set a larger --loader-threshold for them"
    )
    return (
        f"The gate cannot yet resolve the {threshold} threshold on {len(needed)} of {len(figures)} case(s) "
        f"({resolves}; {how}): a smaller regression there stays inconclusive."
    )


def _span(values: Sequence[float]) -> str:
    lo, hi = fmt_change(min(values)), fmt_change(max(values))
    return lo if lo == hi else f"{lo} to {hi}"
