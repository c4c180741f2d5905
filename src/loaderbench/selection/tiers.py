"""Tiers: which cases (workload x LoaderConfig x device) a run covers, and why.

* ``smoke`` (default): a representative slice that finishes in about two
  minutes on a 2-core machine: every smoke workload at 0 and 2 workers, then
  the knobs that matter most, each varied once on the workload where it bites.
* ``standard``: every value of every knob at least once, one factor at a time
  against a base config, on the io, cpu and transfer workloads.
* ``full``: every *pair* of knob values at least once (a greedy covering array
  that skips invalid combinations), plus the advice scenarios.

Invalid combinations are never generated: every config goes through
``LoaderConfig`` validation and pairs that no valid config can hold are left
out of the covering requirement.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from loaderbench.config import PIPELINES, TORCH_HAS_IN_ORDER, LoaderConfig
from loaderbench.engine.case import Case
from loaderbench.errors import InvalidConfig, LoaderbenchError, UsageError
from loaderbench.selection.cuda_tiers import CUDA_DESCRIPTIONS, cuda_smoke, cuda_standard
from loaderbench.workloads.recipes import TIER_NAMES, Workload

TIERS = TIER_NAMES
DEVICES = ("cpu", "cuda", "all")


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    cases: tuple[Case, ...]
    description: str

    def summary(self) -> str:
        by_device: dict[str, int] = {}
        for case in self.cases:
            by_device[case.device] = by_device.get(case.device, 0) + 1
        counts = ", ".join(f"{n} {d}" for d, n in sorted(by_device.items()))
        return f"tier {self.name}: {len(self.cases)} cases ({counts}): {self.description}"


def _cfg(workload: Workload, **changes: Any) -> LoaderConfig:
    changes.setdefault("batch_size", workload.batch_size)
    return LoaderConfig(**changes)


def _in_tier(workloads: Mapping[str, Workload], tier: str) -> list[Workload]:
    """The workloads of ``tier``: those that list it under ``tiers``, and those without a ``tiers`` key."""
    return [w for w in workloads.values() if tier in w.params.get("tiers", TIERS)]


def smoke(workloads: Mapping[str, Workload]) -> list[Case]:
    cases: list[Case] = []
    names = {w.name for w in _in_tier(workloads, "smoke")}

    def add(name: str, why: str, **changes: Any) -> None:
        if name in names:
            cases.append(Case(workloads[name], _cfg(workloads[name], **changes), why=why))

    for w in _in_tier(workloads, "smoke"):
        add(w.name, "every workload, in-process", num_workers=0)
        add(w.name, "every workload, 2 workers (fork)", num_workers=2)
    for n in (1, 4):
        add("io", f"io scales past the core count: {n} workers", num_workers=n)
        add("cpu", f"GIL-bound work scales only to the CPU count: {n} workers", num_workers=n)
    add("transfer", "transfer: one worker pays IPC with no parallelism", num_workers=1)
    add("io", "start method: spawn", num_workers=2, multiprocessing_context="spawn")
    add("io", "start method: forkserver", num_workers=2, multiprocessing_context="forkserver")
    add("io", "persistent workers remove the next-epoch stall", num_workers=2, persistent_workers=True)
    add(
        "io",
        "persistent spawn workers: the stall spawn would pay each epoch",
        num_workers=2,
        multiprocessing_context="spawn",
        persistent_workers=True,
    )
    add("io", "prefetch 1", num_workers=2, prefetch_factor=1)
    add("io", "prefetch 4", num_workers=2, prefetch_factor=4)
    add("transfer", "pin_memory on the transfer-bound workload", num_workers=2, pin_memory=True)
    add("transfer", "pin_memory in-process", num_workers=0, pin_memory=True)
    if TORCH_HAS_IN_ORDER:
        add("skewed", "in_order=False under a heavy-tailed load", num_workers=2, in_order=False)
    for pipeline in RIVALS:
        add("decode", f"decode through {PIPELINES[pipeline]}, 2 workers or threads", num_workers=2, pipeline=pipeline)
    if "big-index-1m" in workloads:  # the canary: a 10^6-path index pickled into each spawn worker
        w = workloads["big-index-1m"]
        cases.append(Case(w, _cfg(w, num_workers=2, multiprocessing_context="spawn"), why="big-index canary, spawn"))
    return cases


#: The pipelines other than DataLoader (a case of one that is not installed skips with one reason).
RIVALS = tuple(p for p in PIPELINES if p != "dataloader")

#: Standard-tier axes beyond the knobs: the decode workloads' workers (or threads) for every pipeline,
#: the big-index canary's start methods, and ranks x workers per rank on io and cpu.
DECODE_WORKERS = (0, 1, 2, 4)
BIG_INDEX_START_METHODS = ("fork", "spawn", "forkserver")
RANK_AXIS = {"ranks": (2,), "num_workers": (0, 1, 2)}


def _axes(workloads: Mapping[str, Workload]) -> list[tuple[Workload, str, dict[str, Any]]]:
    out: list[tuple[Workload, str, dict[str, Any]]] = []
    for w in workloads.values():
        if w.kind == "decode":
            out += [
                (w, f"{PIPELINES[p]}, {n} workers or threads", {"pipeline": p, "num_workers": n})
                for p in PIPELINES
                for n in DECODE_WORKERS
            ]
        elif w.kind == "big-index":
            out += [
                (w, f"index start-up under {m}", {"num_workers": 2, "multiprocessing_context": m})
                for m in BIG_INDEX_START_METHODS
            ]
    for name in ("io", "cpu"):
        if name in workloads:
            out += [
                (workloads[name], f"{r} ranks x {n} workers per rank", {"ranks": r, "num_workers": n})
                for r in RANK_AXIS["ranks"]
                for n in RANK_AXIS["num_workers"]
            ]
    return out


#: Knob values for the standard and full tiers (base: 2 workers, natural batch size).
KNOB_VALUES: dict[str, tuple[Any, ...]] = {
    "num_workers": (0, 1, 2, 4, 8),
    "prefetch_factor": (None, 1, 2, 4, 8),
    "persistent_workers": (False, True),
    "multiprocessing_context": (None, "fork", "spawn", "forkserver"),
    "pin_memory": (False, True),
    "in_order": (True, False) if TORCH_HAS_IN_ORDER else (True,),
    "shuffle": (False, True),
    "drop_last": (False, True),
    "batching": ("auto", "sampler"),
    "batch_size": ("natural", None, 1, 8, 128),
    "timeout": (0, 30.0),
    "collate": ("default", "list"),
    "sharing_strategy": ("file_descriptor", "file_system"),
}


def _resolve(workload: Workload, settings: Mapping[str, Any]) -> LoaderConfig:
    kwargs = dict(settings)
    if kwargs.get("batch_size", "natural") == "natural":
        kwargs["batch_size"] = workload.batch_size
    kwargs.setdefault("num_workers", 2)
    return LoaderConfig(**kwargs)


def _valid(workload: Workload, settings: Mapping[str, Any]) -> LoaderConfig | None:
    try:
        cfg = _resolve(workload, settings)
        if workload.is_iterable and (cfg.shuffle or cfg.batching == "sampler"):
            return None
        return cfg
    except InvalidConfig:
        return None


def standard(workloads: Mapping[str, Workload]) -> list[Case]:
    cases: list[Case] = []
    seen: set[str] = set()
    for w in _in_tier(workloads, "standard"):
        base: list[tuple[str, dict[str, Any]]] = [("base: 0 workers", {"num_workers": 0}), ("base: 2 workers", {})]
        if w.name in ("io", "cpu", "transfer"):
            for knob, values in KNOB_VALUES.items():
                base.extend((f"{knob}={v!r} against the base", {knob: v}) for v in values)
        for why, settings in base:
            cfg = _valid(w, settings)
            if cfg is not None and (key := f"{w.name}/{cfg.id}") not in seen:
                seen.add(key)
                cases.append(Case(w, cfg, why=why))
    in_standard = {w.name: w for w in _in_tier(workloads, "standard")}
    for w, why, settings in _axes(in_standard):
        cfg = _valid(w, settings)
        if cfg is not None and (key := f"{w.name}/{cfg.id}") not in seen:
            seen.add(key)
            cases.append(Case(w, cfg, why=why))
    return cases


def covering_pairs(factors: Mapping[str, Sequence[Any]], valid: Any, *, seed: int = 0) -> list[dict[str, Any]]:
    """A greedy pairwise covering array: every pair of factor values that some
    valid assignment can hold appears in at least one returned assignment.

    ``valid(assignment) -> bool`` rejects invalid assignments.  Deterministic
    for a given seed.
    """
    names = list(factors)
    rng = random.Random(seed)
    defaults = {n: factors[n][0] for n in names}

    def coverable(a: str, va: Any, b: str, vb: Any) -> bool:
        return bool(valid({**defaults, a: va, b: vb}))

    uncovered = {
        ((a, va), (b, vb))
        for a, b in itertools.combinations(names, 2)
        for va in factors[a]
        for vb in factors[b]
        if coverable(a, va, b, vb)
    }
    rows: list[dict[str, Any]] = []
    while uncovered:
        (a, va), (b, vb) = min(uncovered, key=repr)
        row = {**defaults, a: va, b: vb}
        order = [n for n in names if n not in (a, b)]
        rng.shuffle(order)
        for n in order:
            best, best_gain = row[n], -1
            for v in factors[n]:
                trial = {**row, n: v}
                if not valid(trial):
                    continue
                gain = sum(1 for m in names if m != n and (_pair(n, v, m, trial[m], names) in uncovered))
                if gain > best_gain:
                    best, best_gain = v, gain
            row[n] = best
        if not valid(row):  # pragma: no cover - the seed pair is coverable, so defaults elsewhere are valid
            uncovered.discard(((a, va), (b, vb)))
            continue
        rows.append(row)
        uncovered -= {_pair(x, row[x], y, row[y], names) for x, y in itertools.combinations(names, 2)}
    return rows


def _pair(a: str, va: Any, b: str, vb: Any, names: Sequence[str]) -> tuple[tuple[str, Any], tuple[str, Any]]:
    return ((a, va), (b, vb)) if names.index(a) < names.index(b) else ((b, vb), (a, va))


def full(workloads: Mapping[str, Workload]) -> list[Case]:
    cases: list[Case] = []
    for w in _in_tier(workloads, "full"):
        advice = w.params.get("advice_workers")
        if advice:
            for n in advice:
                extra: dict[str, Any] = {}
                if w.kind == "tensor" and w.params.get("rows") == 10000 and n > 0:
                    extra = {"prefetch_factor": 2, "pin_memory": True}
                cases.append(Case(w, _cfg(w, num_workers=n, **extra), why=f"advice scenario at {n} workers"))
            cases.append(
                Case(
                    w,
                    _cfg(w, num_workers=4 if 4 in advice else max(advice), multiprocessing_context="spawn"),
                    why="advice: spawn vs fork",
                )
            )
            continue
        if w.name not in ("io", "cpu", "transfer"):
            cases.append(Case(w, _cfg(w, num_workers=0), why="base: 0 workers"))
            cases.append(Case(w, _cfg(w, num_workers=2), why="base: 2 workers"))
            continue
        rows = covering_pairs(KNOB_VALUES, lambda row, w=w: _valid(w, row) is not None)
        seen: set[str] = set()
        for row in rows:
            cfg = _resolve(w, row)
            if cfg.id not in seen:
                seen.add(cfg.id)
                cases.append(Case(w, cfg, why="pairwise covering array"))
    return cases


DESCRIPTIONS = {
    "smoke": "every smoke workload at 0 and 2 workers, plus 1/4 workers, fork/spawn/forkserver, "
    "persistent on/off, prefetch 1/2/4, pin on/off and in_order off, each on the workload where it bites; "
    "decode through every pipeline at 2 workers or threads; the big-index canary (10^6 paths, spawn)",
    "standard": "every value of every knob at least once, one factor at a time against a 2-worker base, "
    "on io, cpu and transfer; the other workloads at 0 and 2 workers; decode (warm and cold) at 0/1/2/4 "
    "workers or threads through every pipeline; big-index at each index size and start method; io and cpu "
    "at 2 ranks x 0/1/2 workers per rank",
    "full": "every pair of knob values at least once (greedy covering array, invalid pairs skipped) on io, "
    "cpu and transfer, plus the advice scenarios",
}


def build_tier(
    name: str,
    workloads: Mapping[str, Workload],
    *,
    only: Iterable[str] | None = None,
) -> Tier:
    """The cases of tier ``name``, optionally restricted to the workloads in ``only``."""
    if name not in TIERS:
        raise UsageError(f"tier={name!r}: unknown tier. Use one of {', '.join(TIERS)}.")
    cases = {"smoke": smoke, "standard": standard, "full": full}[name](workloads)
    cases += {"smoke": cuda_smoke, "standard": cuda_standard, "full": cuda_standard}[name](workloads)
    if only is not None:
        wanted = set(only)
        unknown = wanted - set(workloads)
        if unknown:
            raise UsageError(
                f"workloads={','.join(sorted(unknown))!r}: unknown workload. Known: {', '.join(sorted(workloads))}."
            )
        cases = [c for c in cases if c.workload.name in wanted]
    return Tier(name, tuple(cases), f"{DESCRIPTIONS[name]}; {CUDA_DESCRIPTIONS[name]}")


def with_ranks(cases: Iterable[Case], ranks: int) -> tuple[Case, ...]:
    """``cases`` with each run in ``ranks`` ranks (``--loader-ranks``; 1 leaves them as they are).  A tier's
    own multi-rank cases and its one-rank cases rewritten to ``ranks`` can name the same case: it runs once."""
    if ranks == 1:
        return tuple(cases)
    out: dict[str, Case] = {}
    for case in cases:
        ranked = dataclasses.replace(case, config=case.config.replace(ranks=ranks))
        out.setdefault(ranked.id, ranked)
    return tuple(out.values())


def tier_in_ranks(tier: Tier, ranks: int) -> Tier:
    """``tier`` with every case run in ``ranks`` ranks (``--loader-ranks``; 1 leaves it as it is)."""
    if ranks == 1:
        return tier
    cases = with_ranks(tier.cases, ranks)
    return dataclasses.replace(tier, cases=cases, description=f"{tier.description}; in {ranks} ranks each")


def explicit_tier(tier: Tier, workloads: dict[str, Workload], config: LoaderConfig) -> Tier:
    """``--loader-config``: the one explicit config on each workload of the tier (for the pytest
    session and the A/B children)."""
    names = dict.fromkeys(c.workload.name for c in tier.cases)
    cases = []
    for name in names:
        w = workloads[name]
        try:
            config.check_kind(iterable=w.is_iterable)
        except LoaderbenchError as exc:
            raise UsageError(f"--loader-config={config.id} on workload {name}: {exc}") from None
        cases.append(Case(w, config, why="--loader-config"))
    return Tier(tier.name, tuple(cases), f"the explicit config {config.id} on each workload of the tier")
