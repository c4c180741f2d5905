"""Peak memory of the main process plus all its worker processes.

The figure is PSS (proportional set size): each shared page is divided among
the processes that map it, so the sum over the main process and its workers
counts fork-shared pages once and still shows the copy-on-access blow-up of
pytorch#13246.  Where PSS is unavailable (non-Linux) it falls back to RSS, and
``kind`` says so.
"""

from __future__ import annotations

import threading

import psutil


def _pss(proc: psutil.Process) -> tuple[int, str]:
    try:
        info = proc.memory_full_info()
        pss = getattr(info, "pss", None)
        if pss is not None:
            return int(pss), "pss"
        return int(info.rss), "rss"
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return 0, "pss"
    except psutil.AccessDenied:
        return int(proc.memory_info().rss), "rss"


def tree_memory(root: psutil.Process | None = None) -> tuple[int, str]:
    """(bytes, kind) summed over ``root`` (default: this process) and its descendants."""
    root = root or psutil.Process()
    total, kind = _pss(root)
    try:
        children = root.children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    for child in children:
        value, child_kind = _pss(child)
        total += value
        if child_kind == "rss":
            kind = "rss"
    return total, kind


class PeakMemorySampler:
    """Samples :func:`tree_memory` in a background thread; keeps the peak.

    Use as a context manager.  ``interval_s`` trades resolution for the GIL
    time the sampler takes from a GIL-bound main process (about 0.2 ms per
    process per sample here).
    """

    def __init__(self, interval_s: float = 0.1) -> None:
        self.interval_s = interval_s
        self.peak = 0
        self.kind = "pss"
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loaderbench-memory", daemon=True)

    def sample(self) -> None:
        value, kind = tree_memory()
        self.samples += 1
        if kind == "rss":
            self.kind = "rss"
        self.peak = max(self.peak, value)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> PeakMemorySampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()
