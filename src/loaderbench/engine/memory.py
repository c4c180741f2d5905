"""Peak memory (and CPU time) of the main process plus all its worker processes.

The figure is the anonymous and shared-memory part of PSS (proportional set size; ``kind``
``pss-anon``, from ``/proc/PID/smaps_rollup``'s ``Pss_Anon + Pss_Shmem``): each shared page is
divided among the processes that map it, so the sum over the main process and its workers counts
fork-shared pages once and still shows the copy-on-access blow-up of pytorch#13246, and the batches
workers pass through shared memory.  File-backed pages (the interpreter, torch's libraries) are left
out: their PSS depends on which *other* processes map the same files.  A process measured by a
parent that has torch loaded from the same installation (the A/B's head arm, a fresh confirming
process) counted 177 MB against 209 MB for the same code whose parent did not map those files
(measured here: 34 vs 65 MB of file-backed PSS, the anonymous part 143 MB in both), which read as
"1.16x less memory" between two installations of one version.  Where ``smaps_rollup`` is missing
(kernels before 4.14) the whole PSS is used (``pss``), and RSS off Linux (``rss``).
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import psutil


def _anon_pss(pid: int) -> int | None:
    """``Pss_Anon + Pss_Shmem`` of ``pid`` in bytes; 0 for a process that no longer has an address space
    (exiting, or a zombie: the kernel then gives an empty rollup); None where the kernel does not give
    the figures (no ``smaps_rollup``, or no ``Pss_Anon`` line in it)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as fh:
            text = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return 0 if Path("/proc/self/smaps_rollup").exists() else None  # the process is gone
    except OSError:
        return None
    if not text.strip():
        return 0
    found: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("Pss_Anon", "Pss_Shmem"):
            found[key] = int(rest.split()[0]) * 1024
    return found["Pss_Anon"] + found.get("Pss_Shmem", 0) if "Pss_Anon" in found else None


def _pss(proc: psutil.Process) -> tuple[int, str | None]:
    """(bytes, kind) of one process; (0, None) for one that exited meanwhile or is exiting (a worker
    shutting down): it holds no memory, and must not make the whole reading's kind coarser. A race
    seen in CI: a worker between losing its address space and being reaped read as an empty rollup,
    and the fallback then called it whole PSS."""
    anon = _anon_pss(proc.pid)
    if anon == 0:
        return 0, None
    if anon is not None:
        return anon, "pss-anon"
    try:
        info = proc.memory_full_info()
        if info.rss == 0:
            return 0, None
        pss = getattr(info, "pss", None)
        if pss is not None:
            return int(pss), "pss"
        return int(info.rss), "rss"
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return 0, None
    except psutil.AccessDenied:
        return int(proc.memory_info().rss), "rss"


def tree_processes(root: psutil.Process | None = None) -> list[psutil.Process]:
    """``root`` (default: this process) and its descendants.

    This scans /proc (a few ms), so the sampler calls it only between rounds.
    """
    root = root or psutil.Process()
    try:
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:  # pragma: no cover
        return [root]


def tree_memory(procs: list[psutil.Process] | None = None) -> tuple[int, str]:
    """(bytes, kind) summed over ``procs`` (default: this process and its descendants); the kind is the
    coarsest any process needed (``pss-anon``, then ``pss``, then ``rss``)."""
    total, kinds = 0, set()
    for proc in procs if procs is not None else tree_processes():
        value, proc_kind = _pss(proc)
        total += value
        if proc_kind is not None:
            kinds.add(proc_kind)
    kind = next((k for k in ("rss", "pss", "pss-anon") if k in kinds), "pss-anon")
    return total, kind


def known_processes(pids: Iterable[int]) -> list[psutil.Process]:
    """This process and those of ``pids`` that are alive: no /proc scan, so it takes well under a
    millisecond for a handful of workers (a scan of /proc takes a few)."""
    out = [psutil.Process()]
    for pid in sorted(set(pids)):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            out.append(psutil.Process(pid))
    return out


def tree_cpu_seconds(procs: list[psutil.Process] | None = None) -> dict[int, float]:
    """pid -> CPU seconds (user + system, every thread) of ``procs`` (default: this process and its
    descendants, which scans /proc).  The harness reads it only outside the timed rounds, for the
    processes it knows (:func:`known_processes`).  This process is read to the nanosecond
    (``time.process_time``); others in clock ticks (10 ms on most kernels)."""
    out: dict[int, float] = {}
    me = os.getpid()
    for proc in procs if procs is not None else tree_processes():
        if proc.pid == me:
            out[me] = time.process_time()
            continue
        try:
            times = proc.cpu_times()
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
        out[proc.pid] = float(times.user + times.system)
    return out


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float | None:
    """CPU seconds spent between two :func:`tree_cpu_seconds` readings (a process started in between
    counts from zero; one that exited in between is lost, so the figure is then None)."""
    if not after or any(pid not in after for pid in before):
        return None
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def _idle(t: Any) -> float:
    return float(sum(getattr(t, name, 0.0) for name in ("idle", "iowait", "steal", "guest", "guest_nice")))


def others_share(before: Any, after: Any, own_s: float) -> float:
    """The share of the machine's CPU time (every CPU's) that other processes used between two
    ``psutil.cpu_times()`` readings, when the measured processes themselves used ``own_s`` CPU seconds;
    NaN when no time passed.  Idle, I/O wait and stolen time are not busy; guest time is already counted
    in user time.  The harness records it for every case's timed rounds (``extra['others_busy']``)."""
    total = float(sum(after) - sum(before))
    if total <= 0 or not math.isfinite(own_s):
        return math.nan
    busy = total - (_idle(after) - _idle(before))
    return min(1.0, max(0.0, (busy - own_s) / total))


class PeakMemorySampler:
    """Samples :func:`tree_memory` in a background thread; keeps the peak.

    Use as a context manager.  Inside :meth:`paused` (the harness's timed rounds) the thread takes no
    sample at all: reading every worker's PSS walks its page tables in the kernel and takes GIL time,
    which slowed a 2-worker transfer case by 14% while it was timed.  The thread samples the processes found at its
    last rescan (about 0.2 ms of GIL time per process) every ``interval_s``,
    and rescans the process tree (a few ms: it walks /proc) every
    ``rescan_s``, so workers started later are found.  :meth:`sample`, which
    the harness calls between rounds, only asks for one rescan, once the
    workers are up: anything slow there would pause the consumer and let the
    workers refill their prefetch queues, handing the next round free batches,
    and every rescan takes GIL time from a GIL-bound main process.
    """

    def __init__(self, interval_s: float = 0.1, *, rescan_s: float = 2.0) -> None:
        self.interval_s = interval_s
        self.rescan_s = rescan_s
        self.peak = 0
        self.kind = "pss-anon"
        self.samples = 0
        self._procs: list[psutil.Process] = [psutil.Process()]
        self._rescan = threading.Event()
        self._paused = threading.Event()
        self._lock = threading.Lock()  # guards the peak and the process list
        self._busy = threading.Lock()  # held by the thread while it samples
        self._asked = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loaderbench-memory", daemon=True)

    def sample(self) -> None:
        """Between rounds: the first call (the workers are up by then) asks the thread to rescan the
        tree at its next tick; later calls do nothing, since a rescan costs the main process GIL time."""
        if not self._asked:
            self._asked = True
            self._rescan.set()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No sample is taken inside (the timed rounds); on leaving, the tree is rescanned and sampled at
        once, in the caller's thread, so the workers started meanwhile are found."""
        self._paused.set()
        with self._busy:  # a sample already under way finishes before the caller goes on
            pass
        try:
            yield
        finally:
            self._paused.clear()
            self._asked = True
            self._scan_and_record()

    def _scan_and_record(self) -> None:
        procs = tree_processes()
        with self._lock:
            self._procs = procs
        self._record(procs)

    def _record(self, procs: list[psutil.Process]) -> None:
        value, kind = tree_memory(procs)
        with self._lock:
            self.samples += 1
            if kind != "pss-anon" and self.kind != "rss":
                self.kind = kind  # the coarsest seen: pss, or rss
            self.peak = max(self.peak, value)

    def _run(self) -> None:
        last_scan = 0.0
        ticks = 0
        while not self._stop.wait(self.interval_s):
            ticks += 1
            elapsed = ticks * self.interval_s
            with self._busy:
                if self._paused.is_set():
                    continue
                if self._rescan.is_set() or elapsed - last_scan >= self.rescan_s:
                    self._rescan.clear()
                    last_scan = elapsed
                    self._scan_and_record()
                else:
                    with self._lock:
                        procs = self._procs
                    self._record(procs)

    def __enter__(self) -> PeakMemorySampler:
        self._scan_and_record()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._scan_and_record()
