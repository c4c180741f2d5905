"""The ``spdl`` pipeline: SPDL's thread-based ``Pipeline`` (``spdl.pipeline.PipelineBuilder``).

Source (the DataLoader's own batch sampler) -> ``pipe`` (each task fetches and collates one batch;
``num_workers`` concurrent tasks on ``num_workers`` threads; ``in_order`` -> ``output_order='input'``,
else ``'completion'``) -> a pinning stage (``pin_memory``) -> a sink of ``prefetch_factor *
num_workers`` batches.  SPDL has no in-process mode: ``num_workers=0`` runs one task at a time on one
pipeline thread with a one-batch sink (so it still overlaps loading with the consumer, unlike
DataLoader's ``num_workers=0``).  A pipeline covers one epoch: each ``iter()`` builds and starts a new
one, and releasing it stops its threads.  The first failed task fails the pipeline (``max_failures=0``, where
SPDL's default would log and skip it) and the harness sees the task's own exception.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from torch.utils.data import Dataset
from torch.utils.data._utils.pin_memory import pin_memory

from loaderbench.pipelines.base import (
    FetchAndCollate,
    Indices,
    can_pin,
    index_plan,
    prefetch_depth,
    set_sampler_epoch,
)

#: Seconds ``Pipeline.stop`` may take to join its threads (after a failure: a hung task never returns).
_STOP_S = 20.0
_STOP_FAILED_S = 3.0


def _root_cause(exc: BaseException) -> BaseException:
    """The task's own exception inside SPDL's ``PipelineFailure`` (an exception group of stage failures)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        inner = exc.exceptions[0]
        exc = inner.__cause__ or inner
    return exc


class _Epoch(Iterator[Any]):
    """One epoch of a started SPDL pipeline."""

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline
        self._it = pipeline.get_iterator()

    def __next__(self) -> Any:
        try:
            return next(self._it)
        except StopIteration:
            raise
        except BaseExceptionGroup as exc:
            raise _root_cause(exc) from None


class SpdlPipeline:
    """SPDL's thread pipeline over the same batches."""

    def __init__(self, dataset: Dataset[Any], kwargs: dict[str, Any], config: Any) -> None:
        import spdl.pipeline  # noqa: F401  (fail here, not at the first iter(), when SPDL is missing)

        self.notes: list[str] = []
        self.plan = index_plan("spdl", dataset, kwargs)
        self.fetch = FetchAndCollate(dataset, self.plan.collate, batched=self.plan.batched)
        self.threads = max(1, int(config.num_workers))
        self.order = "input" if config.in_order else "completion"
        self.pin = bool(config.pin_memory) and can_pin("spdl", self.notes)
        self.buffer = max(1, prefetch_depth(config))

    def start(self) -> Iterator[Any]:
        from spdl.pipeline import PipelineBuilder

        builder: Any = PipelineBuilder().add_source(Indices(self.plan.source))
        builder = builder.pipe(self.fetch, concurrency=self.threads, output_order=self.order)
        if self.pin:
            builder = builder.pipe(pin_memory)
        pipeline = builder.add_sink(self.buffer).build(num_threads=self.threads, max_failures=0)
        pipeline.start()
        return _Epoch(pipeline)

    def worker_pids(self, it: Iterator[Any]) -> set[int]:
        return set()  # threads only

    def exit_codes(self, it: Iterator[Any]) -> dict[int, int]:
        return {}

    def release(self, it: Iterator[Any], notes: list[str], which: str) -> None:
        pipeline = getattr(it, "pipeline", None)
        if pipeline is None:
            return
        try:
            pipeline.stop(timeout=_STOP_S)
        except Exception as exc:
            cause = _root_cause(exc)
            notes.append(f"{which} SPDL pipeline did not stop cleanly: {type(cause).__name__}: {cause}"[:300])

    def stop(self, it: Iterator[Any]) -> None:
        pipeline = getattr(it, "pipeline", None)
        if pipeline is not None:
            with contextlib.suppress(BaseException):
                pipeline.stop(timeout=_STOP_FAILED_S)

    def set_epoch(self, epoch: int) -> None:
        set_sampler_epoch(self.plan.source, epoch)

    def close(self) -> None:
        pass
