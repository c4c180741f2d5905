"""What the harness asks of a pipeline, and the parts the rival pipelines share.

An adapter (:class:`Pipeline`) starts an epoch (``iter()``, which starts its
workers), names the processes it started, shuts an epoch's workers down, moves
a distributed sampler to the next epoch and closes.  The rival pipelines read
the same indices as the ``DataLoader`` would (:func:`index_plan` takes the
sampler or batch sampler that ``DataLoader`` itself builds from the config's
keyword arguments, ``DistributedSampler`` included) and each of their workers
fetches and collates a whole batch (:class:`FetchAndCollate`), as a
``DataLoader`` worker does.
"""

from __future__ import annotations

import ast
import contextlib
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset

from loaderbench.config_rules import PIPELINES, fail

#: The DataLoader keyword arguments that decide which indices are read, in which batches, and the collate.
_SAMPLING = ("batch_size", "shuffle", "sampler", "batch_sampler", "drop_last", "generator", "collate_fn")


class Pipeline(Protocol):
    """One case's loader, as the harness drives it (see :mod:`loaderbench.engine.harness`)."""

    #: Notes for the case (what the pipeline could not do as asked), read after the case.
    notes: list[str]

    def start(self) -> Iterator[Any]:
        """A new epoch's iterator; starts the workers the epoch needs (the timed start-up)."""
        ...

    def worker_pids(self, it: Iterator[Any]) -> set[int]:
        """The worker processes behind ``it`` (none for thread pipelines)."""
        ...

    def exit_codes(self, it: Iterator[Any]) -> dict[int, int]:
        """Exit codes of ``it``'s workers that have exited (negative: killed by that signal)."""
        ...

    def release(self, it: Iterator[Any], notes: list[str], which: str) -> None:
        """Shut ``it``'s workers down now; a worker that does not go cleanly becomes a note."""
        ...

    def stop(self, it: Iterator[Any]) -> None:
        """Stop ``it``'s workers after a failure, suppressing every error."""
        ...

    def set_epoch(self, epoch: int) -> None:
        """Tell a ``DistributedSampler`` the epoch, as a training loop must, so its shuffle changes."""
        ...

    def close(self) -> None:
        """Drop whatever the pipeline keeps between epochs (a persistent iterator)."""
        ...


@dataclass(frozen=True, slots=True)
class IndexPlan:
    """What a rival pipeline reads: ``source`` yields an index list per batch (``batched``) or one index
    per sample; ``collate`` is the collate function the DataLoader would call on it."""

    source: Iterable[Any]
    collate: Callable[[Any], Any]
    batched: bool


def index_plan(name: str, dataset: Dataset[Any], kwargs: dict[str, Any]) -> IndexPlan:
    """The (batch) sampler and collate function that ``DataLoader(dataset, **kwargs)`` would use."""
    if isinstance(dataset, IterableDataset):
        raise fail(
            "pipeline",
            name,
            f"{PIPELINES[name]} maps over the indices of a map-style dataset, and this workload is an "
            "IterableDataset (it would be read in one thread, with no equivalent of DataLoader's per-worker shards)",
            "Use pipeline='dataloader' or 'stateful' for an iterable workload",
        )
    loader = DataLoader(dataset, **{k: v for k, v in kwargs.items() if k in _SAMPLING})
    batched = bool(loader._auto_collation)
    source = loader.batch_sampler if batched else loader.sampler
    assert source is not None  # auto-collation implies a batch sampler
    return IndexPlan(source=source, collate=loader.collate_fn, batched=batched)


def set_sampler_epoch(source: Any, epoch: int) -> None:
    """``set_epoch`` on a ``DistributedSampler`` behind ``source`` (itself, or a batch sampler's)."""
    for sampler in (source, getattr(source, "sampler", None)):
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)


class Indices:
    """The index source without ``set_epoch``, so a rival pipeline's own source wrapper (torchdata's
    ``SamplerWrapper``) leaves the epoch to the harness (:meth:`Pipeline.set_epoch`)."""

    __slots__ = ("_source",)

    def __init__(self, source: Iterable[Any]) -> None:
        self._source = source

    def __iter__(self) -> Iterator[Any]:
        return iter(self._source)


class FetchAndCollate:
    """One worker task: the samples of one batch (or one sample), collated as a DataLoader worker does.
    A module-level class, so it pickles for process workers under spawn."""

    __slots__ = ("batched", "collate", "dataset")

    def __init__(self, dataset: Dataset[Any], collate: Callable[[Any], Any], *, batched: bool) -> None:
        self.dataset = dataset
        self.collate = collate
        self.batched = batched

    def __call__(self, indices: Any) -> Any:
        if self.batched:
            return self.collate([self.dataset[i] for i in indices])
        return self.collate(self.dataset[indices])


def can_pin(name: str, notes: list[str]) -> bool:
    """Whether pinning is possible here; without an accelerator, a note (DataLoader warns and pins nothing)."""
    available = False
    with contextlib.suppress(Exception):
        available = bool(torch.accelerator.is_available())
    if not available:
        notes.append(f"pin_memory=True without an accelerator: {name} pins nothing (as DataLoader does)")
    return available


def prefetch_depth(config: Any) -> int:
    """Batches in flight ahead of the consumer: DataLoader's ``prefetch_factor * num_workers``."""
    return int(config.effective_prefetch_factor or 0) * int(config.num_workers)


#: torch's ``ExceptionWrapper`` text, which torchdata's threads and processes re-raise (nested, once per hop).
_CAUGHT = re.compile(r"^Caught \w+ in .*\nOriginal Traceback", re.DOTALL)


class PlainErrors(Iterator[Any]):
    """An epoch iterator whose errors carry the sample's own message: torchdata re-raises a worker's
    exception as ``Caught KeyError in _apply_udf. Original Traceback ...`` (once per thread it crosses);
    this keeps the type and puts back the innermost message, as the dataset raised it."""

    def __init__(self, it: Iterator[Any]) -> None:
        self.it = it

    def __next__(self) -> Any:
        try:
            return next(self.it)
        except StopIteration:
            raise
        except Exception as exc:
            text = str(exc.args[0]) if len(exc.args) == 1 else ""
            if not _CAUGHT.match(text):
                raise
            last = [ln for ln in text.strip().splitlines() if ln.strip()][-1].strip()
            message: Any = last.removeprefix(f"{type(exc).__name__}: ")
            if isinstance(exc, KeyError):  # a KeyError's text is the repr of its key
                with contextlib.suppress(ValueError, SyntaxError):
                    message = ast.literal_eval(message)
            exc.args = (message,)
            raise exc from None
