"""Leave nothing behind: a case's worker processes and its leftover shared-memory segments.

:func:`case_processes`, :func:`reap` and :func:`remove_leftover_segments`
clean up after a case: the case's worker processes (forkserver workers are
grandchildren, through the forkserver) are waited for and killed if they
linger; /dev/shm segments that its dead workers left behind (the
``file_system`` sharing strategy leaks the batches that were in flight) are
unlinked, unless this process still maps them.  :func:`alarm_held` keeps an alarm from outside (pytest-timeout's)
from cutting that clean-up short.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterable, Iterator
from types import FrameType

import psutil

SHM_DIR = "/dev/shm"
#: Command-line markers of the processes that outlive cases by design: the forkserver server and the
#: resource tracker (shared across cases).
INFRASTRUCTURE = ("from multiprocessing.forkserver import main", "from multiprocessing.resource_tracker import main")


def _is_infrastructure(proc: psutil.Process, me: psutil.Process) -> bool:
    """The forkserver server and the resource tracker: shared across cases, outlive them by design."""
    try:
        if proc.ppid() != me.pid:
            return False
        cmd = " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return False
    return any(marker in cmd for marker in INFRASTRUCTURE)


def case_processes(me: psutil.Process, before: Iterable[int]) -> list[psutil.Process]:
    """Descendants of ``me`` that did not exist before the case, except the forkserver and resource tracker
    (forkserver workers, the forkserver's children, are included)."""
    old = set(before)
    try:
        procs = me.children(recursive=True)
    except psutil.NoSuchProcess:  # pragma: no cover
        return []
    return [p for p in procs if p.pid not in old and not _is_infrastructure(p, me)]


def kill(procs: list[psutil.Process]) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()


#: Seconds a case stopped from outside (Ctrl-C, pytest-timeout's alarm) gives its workers to exit before they are
#: killed: an iterator interrupted while starting them never tells them to stop, so they would use the whole
#: ``Plan.shutdown_timeout_s``.
INTERRUPTED_GRACE_S = 2.0


def reap(me: psutil.Process, before: Iterable[int], timeout_s: float) -> int:
    """Wait for the case's processes to exit; kill stragglers.  Returns how many had to be killed."""
    procs = case_processes(me, before)
    with sigchld_quiet():
        _, alive = psutil.wait_procs(procs, timeout=timeout_s)
        kill(alive)
        psutil.wait_procs(alive, timeout=5)
    return len(alive)


@contextlib.contextmanager
def sigchld_quiet() -> Iterator[None]:
    """Keep torch's SIGCHLD handler out of the block, which kills and reaps the case's workers.

    A ``DataLoader`` iterator registers its workers' pids and a handler that raises ``RuntimeError: DataLoader
    worker (pid N) is killed by signal`` when one of them dies.  When its own shutdown never ran (Ctrl-C or
    pytest-timeout's alarm while ``iter()`` was starting the workers), the workers the harness kills here
    would raise that error inside the clean-up, in place of the interruption: the run would then go on as a
    failed case instead of stopping.  The workers are reaped before the handler is back, so it has no dead
    worker to report afterwards.  Only on the main thread, where Python runs signal handlers."""
    previous = signal.getsignal(signal.SIGCHLD)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield
        return
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGCHLD, previous)


def shm_segments(path: str = SHM_DIR) -> set[str]:
    """Names of torch's shared-memory segments in /dev/shm (``torch_<pid>_<random>_<n>``)."""
    try:
        return {name for name in os.listdir(path) if name.startswith("torch_")}
    except OSError:
        return set()


def _creator(name: str) -> int | None:
    parts = name.split("_")
    return int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else None


def _mapped_by_me() -> set[str]:
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            return {os.path.basename(line.split()[5]) for line in fh if f"{SHM_DIR}/torch_" in line}
    except OSError:
        return set()


def remove_leftover_segments(before: set[str], workers: Iterable[int], path: str = SHM_DIR) -> int:
    """Unlink the segments that the case's (now exited) ``workers`` created and nothing maps any more.

    Only segments new since ``before``, created by one of ``workers``, whose
    creator has exited and that this process does not map: no other process
    can still need them.  Returns how many were removed.
    """
    pids = set(workers)
    new = shm_segments(path) - before
    if not new or not pids:
        return 0
    mapped = _mapped_by_me()
    removed = 0
    for name in sorted(new):
        pid = _creator(name)
        if pid is None or pid not in pids or psutil.pid_exists(pid) or name in mapped:
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(path, name))
            removed += 1
    return removed


@contextlib.contextmanager
def alarm_held() -> Iterator[None]:
    """Hold ``SIGALRM`` (pytest-timeout's ``signal`` method) while a case cleans up: an alarm that lands there
    would cut the clean-up short and leave its workers running, so its handler runs once the block is done.
    Only on the main thread, where Python runs signal handlers; elsewhere, and with no Python handler set, the
    block runs as it is."""
    previous = signal.getsignal(signal.SIGALRM)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield
        return
    held: list[FrameType | None] = []
    signal.signal(signal.SIGALRM, lambda _signum, frame: held.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGALRM, previous)
        if held:
            previous(signal.SIGALRM, held[0])
