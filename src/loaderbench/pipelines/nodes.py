"""The ``nodesthread`` and ``nodesprocess`` pipelines: ``torchdata.nodes`` with a thread or process
``ParallelMapper``, composed as torchdata's own guide to migrating from ``DataLoader`` does.

``SamplerWrapper`` (the DataLoader's own batch sampler) -> ``ParallelMapper`` (each task fetches and
collates one batch; ``num_workers`` threads or processes, ``in_order``, the start method) ->
``PinMemory`` (``pin_memory``) -> ``Prefetcher`` (``prefetch_factor * num_workers`` batches) ->
``Loader``.  ``num_workers=0`` maps inline in the main thread and prefetches nothing, as DataLoader
does.  Each epoch's ``iter()`` starts new mapper workers (there is no persistent mapper).

torchdata does not notice a process worker that dies (it would wait for its batch for ever), so a
guard thread looks at the workers' exit codes once a second, as DataLoader's own status check does
every few seconds, and on a death stops the mapper; the epoch then raises "exited unexpectedly"
with the worker's exit code, which the harness explains (killed by a signal, a segfault...).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

from torch.utils.data import Dataset

from loaderbench.pipelines.base import (
    FetchAndCollate,
    Indices,
    PlainErrors,
    can_pin,
    index_plan,
    prefetch_depth,
    set_sampler_epoch,
)

#: Seconds between two looks at the process workers' exit codes.
_POLL_S = 1.0
#: Seconds a process worker gets to exit after the mapper's own shutdown before it is terminated.
_JOIN_S = 2.0


def _parts(obj: Any, seen: set[int] | None = None) -> Iterator[Any]:
    """The nodes under ``obj`` and their live iterators, top first (where workers and ``_shutdown`` live)."""
    seen = set() if seen is None else seen
    if obj is None or id(obj) in seen:
        return
    seen.add(id(obj))
    yield obj
    for attr in ("root", "_it", "source"):
        yield from _parts(getattr(obj, attr, None), seen)


def _stop_threads_first(it: Any) -> None:
    """Stop a ``ParallelMapper``'s reading and sorting threads before its process workers.  torchdata's own
    shutdown stops both at once, and a sorting thread that then unpickles a batch whose worker has just
    exited fails in that thread (the batch's file descriptor went with the worker)."""
    it._stop.set()
    for thread in (it._read_thread, it._sort_thread):
        if thread.is_alive():
            thread.join(timeout=_JOIN_S)
    it._mp_stop.set()


class _Guard:
    """Watches an epoch's process workers; on a death, stops the mapper so the epoch ends at once.

    While it watches, it is also ``threading.excepthook``: torchdata's sorting thread fails when it
    unpickles a batch whose worker has died (the batch's file descriptor died with it), and that
    traceback says nothing the case's own error does not; any other thread's exception goes on to the
    hook it replaced."""

    def __init__(self, pipeline: NodesPipeline) -> None:
        self.pipeline = pipeline
        self.dead: dict[int, int] = {}
        self._stop = threading.Event()
        self._previous = threading.excepthook
        threading.excepthook = self._hook
        self._thread = threading.Thread(target=self._run, name="loaderbench-nodes-guard", daemon=True)
        self._thread.start()

    def _hook(self, args: Any) -> None:
        name = str(getattr(args.thread, "name", ""))
        if name.endswith("(_sort_worker)") and issubclass(args.exc_type, (OSError, EOFError)) and self._a_death():
            return
        self._previous(args)

    def _a_death(self) -> bool:
        """Whether a worker died; a reset connection comes a moment before its exit code, so wait a little."""
        deadline = time.monotonic() + _JOIN_S
        while time.monotonic() < deadline:
            if any(c != 0 for c in self.pipeline.exit_codes(iter(())).values()):
                return True
            time.sleep(0.01)
        return False

    def _run(self) -> None:
        while not self._stop.wait(_POLL_S):
            dead = {pid: code for pid, code in self.pipeline.exit_codes(iter(())).items() if code != 0}
            if dead and not self._stop.is_set():
                self.dead = dead
                for part in _parts(self.pipeline.root):
                    if hasattr(part, "_mp_stop") and hasattr(part, "_sort_thread"):
                        part._stop.set()  # the mapper's next() then ends the epoch
                return

    def quiet(self) -> None:
        """Stop watching (a worker terminated at shutdown is no death); the hook stays until :meth:`stop`."""
        self._stop.set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=_JOIN_S)
        if threading.excepthook == self._hook:
            threading.excepthook = self._previous


class _Epoch(PlainErrors):
    """An epoch whose early end, when a process worker died, is an error naming the worker's exit code."""

    def __init__(self, it: Iterator[Any], guard: _Guard | None) -> None:
        super().__init__(it)
        self.guard = guard

    def __next__(self) -> Any:
        try:
            return super().__next__()
        except StopIteration:
            if self.guard is not None and self.guard.dead:
                codes = ", ".join(f"pid {pid} exit code {code}" for pid, code in sorted(self.guard.dead.items()))
                raise RuntimeError(f"ParallelMapper process worker(s) exited unexpectedly ({codes})") from None
            raise


class NodesPipeline:
    """A ``torchdata.nodes`` pipeline with a ``ParallelMapper`` of ``method`` ('thread' or 'process')."""

    def __init__(self, dataset: Dataset[Any], kwargs: dict[str, Any], config: Any, method: str) -> None:
        import torchdata.nodes as tn

        name = "nodesthread" if method == "thread" else "nodesprocess"
        self.notes: list[str] = []
        self.plan = index_plan(name, dataset, kwargs)
        node: Any = tn.SamplerWrapper(Indices(self.plan.source))  # type: ignore[arg-type]
        node = tn.ParallelMapper(
            node,
            FetchAndCollate(dataset, self.plan.collate, batched=self.plan.batched),
            num_workers=config.num_workers,
            in_order=config.in_order,
            method=method,  # type: ignore[arg-type]
            multiprocessing_context=config.multiprocessing_context if method == "process" else None,
        )
        if config.pin_memory and can_pin(name, self.notes):
            node = tn.PinMemory(node)
        depth = prefetch_depth(config)
        if depth:
            node = tn.Prefetcher(node, prefetch_factor=depth)
        self.root = node
        self.loader: Any = tn.Loader(node)
        self.method = method
        self._guard: _Guard | None = None

    def start(self) -> Iterator[Any]:
        self._stop_guard()
        it = iter(self.loader)
        if self.method == "process" and self._processes():
            self._guard = _Guard(self)
        return _Epoch(it, self._guard)

    def _guard_quiet(self) -> None:
        """The guard stops watching (a worker terminated at shutdown is no death) but keeps its hook."""
        if self._guard is not None:
            self._guard.quiet()

    def _stop_guard(self) -> None:
        if self._guard is not None:
            self._guard.stop()
            self._guard = None

    def _processes(self) -> list[Any]:
        return [w for part in _parts(self.root) for w in getattr(part, "_workers", ()) if hasattr(w, "pid")]

    def worker_pids(self, it: Iterator[Any]) -> set[int]:
        return {int(w.pid) for w in self._processes() if w.pid is not None}

    def exit_codes(self, it: Iterator[Any]) -> dict[int, int]:
        out: dict[int, int] = {}
        for w in self._processes():
            with contextlib.suppress(Exception):
                if w.pid is not None and w.exitcode is not None:
                    out[int(w.pid)] = int(w.exitcode)
        return out

    def _shutdown(self) -> int:
        """The nodes' own shutdown (stop events, joins), top first, then process workers that are still
        there are terminated; returns how many had to be."""
        self._guard_quiet()
        try:
            for part in list(_parts(self.root)):
                if hasattr(part, "_mp_stop") and hasattr(part, "_sort_thread"):
                    _stop_threads_first(part)
                stop = getattr(part, "_shutdown", None)
                if callable(stop):
                    stop()
        finally:
            stragglers = 0
            for w in self._processes():
                with contextlib.suppress(Exception):
                    w.join(timeout=_JOIN_S)
                    if w.is_alive():
                        stragglers += 1
                        w.terminate()
                        w.join(timeout=_JOIN_S)
            self._stop_guard()
        return stragglers

    def release(self, it: Iterator[Any], notes: list[str], which: str) -> None:
        try:
            stragglers = self._shutdown()
        except (RuntimeError, ConnectionError, EOFError, OSError) as exc:
            notes.append(f"{which} workers did not shut down cleanly: {str(exc).splitlines()[0]} (the rounds stand)")
            return
        if stragglers:
            notes.append(
                f"{stragglers} of {which} ParallelMapper process worker(s) did not exit within {_JOIN_S:g} s of "
                "torchdata's shutdown and were terminated (the rounds stand)"
            )

    def stop(self, it: Iterator[Any]) -> None:
        with contextlib.suppress(Exception):
            self._shutdown()

    def set_epoch(self, epoch: int) -> None:
        set_sampler_epoch(self.plan.source, epoch)

    def close(self) -> None:
        self.stop(iter(()))
        self._stop_guard()
