"""The CUDA cases of each tier: how a GPU is fed (pinned or pageable memory, blocking or not, the plain
loop or a side-stream prefetcher, the step length), on a worker base of spawn, persistent and pinned."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loaderbench.config import LoaderConfig
from loaderbench.cuda.spec import CudaSpec
from loaderbench.engine.case import Case
from loaderbench.workloads.recipes import Workload

#: Worker-only knobs, dropped from the base for an in-process (0-worker) CUDA case.
_WORKER_ONLY = ("prefetch_factor", "persistent_workers", "multiprocessing_context", "timeout")


def _cfg(workload: Workload, **changes: Any) -> LoaderConfig:
    changes.setdefault("batch_size", workload.batch_size)
    return LoaderConfig(**changes)


#: The CUDA cases' worker base: spawn (never fork from a CUDA process), persistent, pinned.
_CUDA_BASE: dict[str, Any] = {
    "num_workers": 4,
    "multiprocessing_context": "spawn",
    "persistent_workers": True,
    "pin_memory": True,
}


def cuda_smoke(workloads: Mapping[str, Workload]) -> list[Case]:
    cases: list[Case] = []

    def add(name: str, why: str, spec: dict[str, Any], **changes: Any) -> None:
        if name in workloads:
            w = workloads[name]
            settings = {**_CUDA_BASE, **changes}
            if settings["num_workers"] == 0:
                settings = {k: v for k, v in settings.items() if k not in _WORKER_ONLY}
            cases.append(Case(w, _cfg(w, **settings), device="cuda", consumer=CudaSpec(**spec), why=why))

    add("transfer", "pure feed, pinned + non_blocking: the H2D path against its limit", {"step_ms": 0.0})
    add("transfer", "pure feed, pinned, blocking copies", {"step_ms": 0.0, "non_blocking": False})
    add("transfer", "pure feed, pageable memory", {"step_ms": 0.0, "non_blocking": False}, pin_memory=False)
    add("transfer", "pure feed, 8 workers", {"step_ms": 0.0}, num_workers=8)
    add("transfer", "pure feed, in-process loading", {"step_ms": 0.0}, num_workers=0)
    for step in (5.0, 20.0):
        add("transfer", f"{step:g} ms step, plain loop", {"step_ms": step})
        add("transfer", f"{step:g} ms step, side-stream prefetcher", {"step_ms": step, "pipeline": "prefetcher"})
    add(
        "transfer",
        "20 ms step, pageable, plain loop (the copy is on the critical path)",
        {"step_ms": 20.0, "non_blocking": False},
        pin_memory=False,
    )
    add(
        "transfer",
        "20 ms step, pageable, side-stream prefetcher (the copy overlaps the step)",
        {"step_ms": 20.0, "non_blocking": False, "pipeline": "prefetcher"},
        pin_memory=False,
    )
    add(
        "transfer",
        "5 ms step, forkserver, prefetch 4",
        {"step_ms": 5.0},
        multiprocessing_context="forkserver",
        prefetch_factor=4,
    )
    add("cpu", "cpu-heavy loading feeding a 5 ms step", {"step_ms": 5.0})
    add("cpu", "cpu-heavy loading, prefetcher", {"step_ms": 5.0, "pipeline": "prefetcher"})
    return cases


def cuda_standard(workloads: Mapping[str, Workload]) -> list[Case]:
    cases: list[Case] = list(cuda_smoke(workloads))
    seen = {c.id for c in cases}
    variations: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    for n in (0, 1, 2, 4, 8):
        variations.append((f"{n} workers", {"step_ms": 5.0}, {"num_workers": n}))
    for pf in (1, 2, 4, 8):
        variations.append((f"prefetch {pf}", {"step_ms": 5.0}, {"prefetch_factor": pf}))
    for step in (0.0, 1.0, 5.0, 20.0):
        for pipeline in ("plain", "prefetcher"):
            for nb in (True, False):
                variations.append(
                    (
                        f"{step:g} ms, {pipeline}, non_blocking={nb}",
                        {"step_ms": step, "pipeline": pipeline, "non_blocking": nb},
                        {},
                    )
                )
    variations.append(("pageable, 5 ms", {"step_ms": 5.0}, {"pin_memory": False}))
    variations.append(("not persistent, 5 ms", {"step_ms": 5.0}, {"persistent_workers": False}))
    variations.append(("forkserver, 5 ms", {"step_ms": 5.0}, {"multiprocessing_context": "forkserver"}))
    for name in ("transfer", "cpu"):
        if name not in workloads:
            continue
        w = workloads[name]
        for why, spec, changes in variations:
            settings = {**_CUDA_BASE, **changes}
            if settings["num_workers"] == 0:
                settings = {k: v for k, v in settings.items() if k not in _WORKER_ONLY}
            case = Case(w, _cfg(w, **settings), device="cuda", consumer=CudaSpec(**spec), why=why)
            if case.id not in seen:
                seen.add(case.id)
                cases.append(case)
    return cases


CUDA_DESCRIPTIONS = {
    "smoke": "CUDA: pure feed pinned/blocking/pageable, 0/4/8 workers, 5 and 20 ms steps with the plain loop "
    "and the side-stream prefetcher, forkserver + prefetch 4, a cpu-heavy workload",
    "standard": "CUDA: the smoke cases plus workers 0-8, prefetch 1-8, steps 0/1/5/20 ms x pipeline x "
    "non_blocking, pageable, non-persistent and forkserver, on transfer and cpu",
    "full": "CUDA: as standard",
}
