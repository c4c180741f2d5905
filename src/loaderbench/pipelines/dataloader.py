"""The ``dataloader`` and ``stateful`` pipelines: torch's ``DataLoader`` and torchdata's drop-in
``StatefulDataLoader``, which take the same keyword arguments and run the same worker processes.

Worker pids, exit codes and shutdown read the iterator's own ``_workers`` and
``_shutdown_workers``; a persistent iterator is held by the loader (``_iterator``).
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader, Dataset
from torch.utils.data._utils import signal_handling

from loaderbench.pipelines.base import set_sampler_epoch


class DataLoaderPipeline:
    """A ``DataLoader`` (or a class that takes its arguments and shares its iterators) as a pipeline."""

    def __init__(self, dataset: Dataset[Any], kwargs: dict[str, Any], loader_class: type[Any] = DataLoader) -> None:
        self.loader: Any = loader_class(dataset, **kwargs)
        self.notes: list[str] = []

    def start(self) -> Iterator[Any]:
        return iter(self.loader)

    def worker_pids(self, it: Iterator[Any]) -> set[int]:
        return {int(w.pid) for w in getattr(it, "_workers", ()) if w.pid is not None}

    def exit_codes(self, it: Iterator[Any]) -> dict[int, int]:
        out: dict[int, int] = {}
        for w in getattr(it, "_workers", ()):
            with contextlib.suppress(Exception):
                if w.pid is not None and w.exitcode is not None:
                    out[int(w.pid)] = int(w.exitcode)
        return out

    def release(self, it: Iterator[Any], notes: list[str], which: str) -> None:
        """Shut the iterator's workers down here, not in its ``__del__``: a worker that dies during
        shutdown makes torch raise from its SIGCHLD handler, and raised inside ``__del__`` that becomes an
        unraisable exception (a page of traceback in pytest) instead of a note on a case that measured."""
        stop = getattr(it, "_shutdown_workers", None)
        if stop is None:
            return
        try:
            stop()
        except (RuntimeError, ConnectionError, EOFError, OSError) as exc:
            notes.append(f"{which} workers did not shut down cleanly: {str(exc).splitlines()[0]} (the rounds stand)")
            if getattr(it, "_worker_pids_set", False):  # torch's SIGCHLD handler must forget the dead worker
                with contextlib.suppress(Exception):
                    signal_handling._remove_worker_pids(id(it))  # type: ignore[attr-defined]
                    it._worker_pids_set = False  # type: ignore[attr-defined]

    def stop(self, it: Iterator[Any]) -> None:
        """Stop a failed iterator's workers now (torch would only do it when the iterator is collected,
        and a traceback can keep it alive)."""
        stop = getattr(it, "_shutdown_workers", None)
        if stop is not None:
            with contextlib.suppress(Exception):
                stop()

    def set_epoch(self, epoch: int) -> None:
        batches = self.loader.batch_sampler  # None without auto-batching: then the sampler itself
        set_sampler_epoch(batches if batches is not None else self.loader.sampler, epoch)

    def close(self) -> None:
        self.loader._iterator = None  # a persistent iterator is held by the loader


def stateful_pipeline(dataset: Dataset[Any], kwargs: dict[str, Any]) -> DataLoaderPipeline:
    """torchdata's ``StatefulDataLoader`` over the same keyword arguments."""
    from torchdata.stateful_dataloader import StatefulDataLoader

    with warnings.catch_warnings():
        # torchdata 0.11 calls torch.set_vital at construction, which torch has since deprecated: a warning
        # about torchdata's own code, not about the case, so it is not recorded as the case's note
        warnings.filterwarnings("ignore", message=".*set_vital.* is deprecated", category=UserWarning)
        return DataLoaderPipeline(dataset, kwargs, StatefulDataLoader)


def await_a_dead_worker(pipeline: Any, live: list[Iterator[Any]], timeout_s: float = 2.0) -> None:
    """A broken pipe to a worker usually means it is dying: give the kernel a moment to finish it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(code != 0 for it in live for code in pipeline.exit_codes(it).values()):
            return
        time.sleep(0.01)
