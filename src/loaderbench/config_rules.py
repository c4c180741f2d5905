"""The rules a ``LoaderConfig`` must keep: torch's own, and those of the pipeline that runs it.

Kept apart from :mod:`loaderbench.config` (the value itself) so each module
holds one job; ``LoaderConfig.__post_init__`` calls :func:`validate`.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from loaderbench.collates import pad_collate
from loaderbench.errors import InvalidConfig

#: ``in_order`` was added to ``DataLoader`` in torch 2.6.
TORCH_HAS_IN_ORDER: bool = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 6)

START_METHODS = ("fork", "spawn", "forkserver")


def _identity_list(batch: list[Any]) -> list[Any]:
    """Collate that keeps the samples as a list (no stacking, no copy)."""
    return batch


#: ``collate="user"``: the workload's own collate function (``collate = "module:function"`` in its entry).
USER_COLLATE = "user"

#: Named collate functions.  Module-level functions, so they pickle under spawn.
COLLATES: dict[str, Callable[[Any], Any] | None] = {
    "default": None,
    "list": _identity_list,
    "pad": pad_collate,
}


@dataclass(frozen=True, slots=True)
class PipelineFacts:
    """What the suite knows of one input pipeline (``LoaderConfig.pipeline``): the one table every other
    place reads (the config's validation, the registry, the environment record, the tests)."""

    description: str
    #: Knobs this pipeline has no equivalent for (see :data:`PIPELINE_FACTS`).
    unsupported: frozenset[str] = frozenset()
    #: ``(module, distribution)`` it imports: the modules checked before a case runs, the distribution named
    #: in the install advice and always recorded in the environment.
    requires: tuple[tuple[str, str], ...] = ()
    #: Whether it loads in worker processes (memory and CPU time are summed over them; the start method
    #: applies) rather than in threads of the main process.
    processes: bool = True


#: What a thread-based pipeline has no equivalent for: everything about worker processes.
_THREAD_UNSUPPORTED = frozenset(
    {"persistent_workers", "multiprocessing_context", "timeout", "batching", "sharing_strategy"}
)

#: The input pipelines a case can run through, in this order; the name is also the config id's token (none
#: for ``dataloader``).  ``unsupported``: knobs (fields that differ from their default) a pipeline has no
#: equivalent for; a config that sets one is rejected rather than silently ignored.  The rest map onto
#: each pipeline's own (see :mod:`loaderbench.pipelines`): ``num_workers`` -> mapper threads/processes
#: or SPDL's concurrency and threads (0: torchdata maps inline in the main thread; SPDL, which has no
#: in-process mode, runs one task at a time on one pipeline thread), ``prefetch_factor`` (x
#: ``num_workers``) -> ``Prefetcher`` depth / SPDL's sink size, ``pin_memory`` -> ``PinMemory`` / a
#: pinning stage, ``in_order`` -> ``ParallelMapper(in_order)`` / ``output_order``, the start method ->
#: the process mapper's context, and batch size, shuffle, ``drop_last``, collate and ``ranks`` (the
#: ``DistributedSampler``) -> the very sampler and collate function ``DataLoader`` builds.  None of
#: the rivals persists its workers across epochs, has a per-batch timeout, or takes a batch sampler
#: apart from batch_size/shuffle/drop_last (``batching='sampler'`` would read the same batches); only the
#: process mapper passes tensors between processes, so only it has a sharing strategy.  The map-style
#: rivals (nodes, SPDL) refuse an ``IterableDataset`` when the case is built.
PIPELINE_FACTS: Mapping[str, PipelineFacts] = {
    "dataloader": PipelineFacts("torch.utils.data.DataLoader"),
    "nodesthread": PipelineFacts(
        "torchdata.nodes with a thread ParallelMapper",
        _THREAD_UNSUPPORTED,
        (("torchdata.nodes", "torchdata"),),
        processes=False,
    ),
    "nodesprocess": PipelineFacts(
        "torchdata.nodes with a process ParallelMapper",
        frozenset({"persistent_workers", "timeout", "batching"}),
        (("torchdata.nodes", "torchdata"),),
    ),
    "stateful": PipelineFacts(
        "torchdata StatefulDataLoader", requires=(("torchdata.stateful_dataloader", "torchdata"),)
    ),
    "spdl": PipelineFacts(
        "SPDL pipeline (thread-based)", _THREAD_UNSUPPORTED, (("spdl.pipeline", "spdl"),), processes=False
    ),
}
#: Each pipeline's description, by name (from :data:`PIPELINE_FACTS`).
PIPELINES: Mapping[str, str] = {name: facts.description for name, facts in PIPELINE_FACTS.items()}
#: Each pipeline's unsupported knobs, by name (from :data:`PIPELINE_FACTS`).
PIPELINE_UNSUPPORTED: Mapping[str, frozenset[str]] = {n: f.unsupported for n, f in PIPELINE_FACTS.items()}


def loading_processes(ranks: int, workers: int) -> int:
    """Processes that load batches with ``ranks`` ranks of ``workers`` workers each (without workers, each
    rank's main process loads): the count that over-subscribes the cores when it exceeds them."""
    return ranks * max(1, workers)


def fail(name: str, value: object, why: str, fix: str) -> InvalidConfig:
    """The one form of a config error: ``name=value: why. fix.``"""
    return InvalidConfig(f"{name}={value!r}: {why}. {fix}.")


def _validate_pipeline(cfg: Any) -> None:
    if isinstance(cfg.ranks, bool) or not isinstance(cfg.ranks, int) or cfg.ranks < 1:
        raise fail("ranks", cfg.ranks, "must be a positive integer", "Use 1 for one process, N for N ranks")
    if cfg.pipeline not in PIPELINES:
        raise fail("pipeline", cfg.pipeline, "is not a known pipeline", f"Use one of {list(PIPELINES)}")
    defaults = {f.name: f.default for f in dataclasses.fields(cfg)}
    for name in sorted(PIPELINE_UNSUPPORTED.get(cfg.pipeline, frozenset())):
        if getattr(cfg, name) != defaults[name]:
            raise fail(
                name,
                getattr(cfg, name),
                f"has no equivalent in pipeline={cfg.pipeline!r} ({PIPELINES[cfg.pipeline]})",
                f"Leave {name} at its default for that pipeline, or use pipeline='dataloader'",
            )


def validate(cfg: Any) -> None:
    """Raise ``InvalidConfig`` for a combination torch (or the chosen pipeline) rejects."""
    bs = cfg.batch_size
    if bs is not None and (isinstance(bs, bool) or not isinstance(bs, int) or bs < 1):
        raise fail(
            "batch_size",
            bs,
            "must be a positive integer or None",
            "Use e.g. batch_size=32, or None to disable batching",
        )
    if isinstance(cfg.num_workers, bool) or not isinstance(cfg.num_workers, int) or cfg.num_workers < 0:
        raise fail("num_workers", cfg.num_workers, "must be a non-negative integer", "Use 0 for in-process loading")
    if not isinstance(cfg.timeout, (int, float)) or cfg.timeout < 0:
        raise fail("timeout", cfg.timeout, "must be non-negative", "Use 0 to wait forever")
    no_workers = cfg.num_workers == 0
    if no_workers and cfg.prefetch_factor is not None:
        raise fail(
            "prefetch_factor",
            cfg.prefetch_factor,
            "only applies to worker processes and torch rejects it with num_workers=0",
            "Set num_workers>=1 or prefetch_factor=None",
        )
    if cfg.prefetch_factor is not None and cfg.prefetch_factor < 0:
        raise fail("prefetch_factor", cfg.prefetch_factor, "must be non-negative", "Use 1 or more")
    if cfg.prefetch_factor == 0:
        raise fail(
            "prefetch_factor",
            0,
            "torch accepts it at construction but fails with AssertionError at iter(loader)",
            "Use prefetch_factor>=1",
        )
    if no_workers and cfg.persistent_workers:
        raise fail(
            "persistent_workers",
            True,
            "needs worker processes (num_workers=0)",
            "Set num_workers>=1 or persistent_workers=False",
        )
    if cfg.multiprocessing_context is not None:
        if cfg.multiprocessing_context not in multiprocessing.get_all_start_methods():
            raise fail(
                "multiprocessing_context",
                cfg.multiprocessing_context,
                "is not a start method on this platform",
                f"Use one of {multiprocessing.get_all_start_methods()}",
            )
        if no_workers:
            raise fail(
                "multiprocessing_context",
                cfg.multiprocessing_context,
                "only applies to worker processes and torch rejects it with num_workers=0",
                "Set num_workers>=1 or multiprocessing_context=None",
            )
    if no_workers and cfg.timeout > 0:
        raise fail(
            "timeout",
            cfg.timeout,
            "torch accepts it with num_workers=0 but fails with AssertionError at iter(loader)",
            "Set num_workers>=1 or timeout=0",
        )
    if bs is None and cfg.drop_last:
        raise fail(
            "drop_last",
            True,
            "has no meaning without batching (batch_size=None)",
            "Set drop_last=False or a batch_size",
        )
    if cfg.batching not in ("auto", "sampler"):
        raise fail("batching", cfg.batching, "is not a batching mode", "Use 'auto' or 'sampler'")
    if cfg.batching == "sampler" and bs is None:
        raise fail("batching", "sampler", "a batch_sampler needs a batch size (batch_size=None)", "Set batch_size>=1")
    if not cfg.in_order and not TORCH_HAS_IN_ORDER:
        raise fail(
            "in_order",
            False,
            f"DataLoader has no in_order before torch 2.6 (torch {torch.__version__})",
            "Upgrade torch or drop in_order",
        )
    if cfg.collate not in COLLATES and cfg.collate != USER_COLLATE:
        raise fail("collate", cfg.collate, "is not a known collate", f"Use one of {[*sorted(COLLATES), USER_COLLATE]}")
    _validate_pipeline(cfg)
    strategies = torch.multiprocessing.get_all_sharing_strategies()  # type: ignore[no-untyped-call]
    if cfg.sharing_strategy not in strategies:
        raise fail(
            "sharing_strategy",
            cfg.sharing_strategy,
            "is not a sharing strategy on this platform",
            f"Use one of {sorted(strategies)}",
        )
