"""Faults: explain a failed case in one paragraph, bound hangs, and leave nothing behind.

* :func:`explain_failure` turns whatever a DataLoader raised into a
  :class:`CaseFailed` naming the case, the fault and the remedy (one paragraph,
  no newline).
* :class:`Watchdog` bounds every step of a case, also when the case's
  ``timeout`` is 0 (wait forever): when no batch arrives and no phase begins
  for ``limit_s`` seconds it kills the case's worker processes (torch then
  raises in the main process), and if the main process itself is stuck it
  interrupts it.

  Limits, honestly: the interruption uses a signal (``SIGUSR2``) sent to the
  main thread, so it only works when the case is measured on the main thread
  (pytest does) and only takes effect when the stuck code returns to the
  Python interpreter: ``time.sleep``, lock and socket waits and pure-Python
  loops are interrupted; a native call that never returns (a C extension spinning
  without releasing the GIL, a D-state read from a dead NFS mount) is not.
  Then, and when the case runs on another thread, the watchdog can only
  report: it writes one line naming the case, the phase and the stuck frame to
  stderr, once.
* :func:`case_processes`, :func:`reap` and :func:`remove_leftover_segments`
  clean up after a case: the case's worker processes (forkserver workers are
  grandchildren, through the forkserver) are waited for and killed if they
  linger; /dev/shm segments that its dead workers left behind (the
  ``file_system`` sharing strategy leaks the batches that were in flight) are
  unlinked, unless this process still maps them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import re
import resource
import signal
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from types import FrameType
from typing import Any

import psutil

from loaderbench.engine.collates import CollateError
from loaderbench.errors import CaseFailed

SHM_DIR = "/dev/shm"
#: Seconds the watchdog waits, after killing the workers, for the main process to notice before interrupting it.
KILL_GRACE_S = 10.0
_INFRASTRUCTURE = ("from multiprocessing.forkserver import main", "from multiprocessing.resource_tracker import main")

# --- explaining a failure ---------------------------------------------------------------------------------------

_COLLATE_REMEDY = (
    "return samples of equal shape from __getitem__, pad them in a collate function "
    "(loaderbench.engine.collates.pad_collate), or keep each batch as a list (collate='list') "
    "or unbatched (batch_size=None)"
)
_STACK = re.compile(
    r"stack expects each tensor to be equal size, but got (\[[^\]]*\]) at entry (\d+) and (\[[^\]]*\]) at entry (\d+)"
)
_FOUND = re.compile(r"default_collate: batch must contain .*?; found (<class '[^']*'>|\S+)")
_WORKER = re.compile(r"Caught (\w+) in DataLoader worker process (\d+)")
_SHM = ("out of shared memory", "bus error", "shared memory", "/dev/shm")
_NOFILE = ("too many open files", "[errno 24]", "received 0 items of ancdata")
_CUDA = (
    "cuda error",
    "cuda out of memory",
    "outofmemoryerror",
    "device-side assert",
    "illegal memory access",
    "cudaerror",
    "cublas_status",
    "cuda driver",
)
_PICKLE = ("can't pickle", "cannot pickle", "can't get local object", "pickling error", "is not picklable")


def explain_failure(
    case: str, exc: BaseException, *, phase: str = "", worker_exits: Mapping[int, int] | None = None
) -> CaseFailed:
    """A :class:`CaseFailed` naming ``case``, what went wrong (during ``phase``) and what to do.

    ``worker_exits`` maps worker pids to their exit codes (negative: the signal), for the failures that torch
    reports only as "exited unexpectedly" when it notices a dead worker before its SIGCHLD handler runs.
    """
    text = f"{type(exc).__name__}: {exc}"
    detail = _detail(exc)
    for pid, code in sorted((worker_exits or {}).items()):
        # a worker killed by a signal explains whatever the main process then saw: "exited unexpectedly",
        # or a ConnectionResetError while fetching a batch's descriptor from the dead worker
        if code < 0 and "killed by signal" not in text.lower():
            text += f" (worker pid {pid} was killed by signal: {_signal_name(-code)})"
            detail += f"; worker {pid} died of {_signal_id(-code)}"
    low = text.lower()
    during = f", while {phase}" if phase else ""
    if isinstance(exc, CollateError):
        return _case(
            case,
            f"{_collate_detail(exc).replace('in one batch', 'in one batch cannot be collated: they', 1)}{_where(text)}"
            f"{during}",
            _COLLATE_REMEDY,
        )
    if (m := _STACK.search(text)) is not None:
        return _case(
            case,
            f"samples in one batch cannot be collated: they hold tensors of shapes {m.group(1)} (entry {m.group(2)}) "
            f"and {m.group(3)} (entry {m.group(4)}), which default_collate cannot stack{_where(text)}{during}",
            _COLLATE_REMEDY,
        )
    if "each element in list of batch should be of equal size" in low:
        return _case(
            case,
            "samples in one batch cannot be collated: they hold lists or tuples of different lengths, "
            f"which default_collate cannot zip{_where(text)}{during}",
            _COLLATE_REMEDY,
        )
    if (m := _FOUND.search(text)) is not None:
        return _case(
            case,
            f"samples cannot be collated: they hold a {m.group(1)}, which default_collate cannot batch (it takes "
            f"tensors, numpy arrays, numbers, strings, dicts, lists, tuples and namedtuples){_where(text)}{during}",
            "convert the sample in __getitem__ (e.g. dataclasses.astuple, or a namedtuple), pass a collate function "
            "that knows the type, or keep each batch as a list (collate='list')",
        )
    if any(n in low for n in _CUDA):
        return _case(
            case,
            f"the GPU raised a CUDA error while a batch was copied or the simulated step ran ({detail}){during}",
            "check nvidia-smi for other processes holding GPU memory and lower batch_size or prefetch_factor; after "
            "an illegal address or device-side assert the CUDA context is unusable for the rest of this process, so "
            "rerun the remaining CUDA cases in a fresh pytest run (CUDA_LAUNCH_BLOCKING=1 pins down the failing call)",
        )
    if any(n in low for n in _NOFILE) or getattr(exc, "errno", None) == errno.EMFILE:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return _case(
            case,
            "the process ran out of file descriptors: the file_descriptor sharing strategy keeps one open "
            f"descriptor per shared tensor in flight ({detail}; ulimit -n is {soft}){during}",
            "use the file_system sharing strategy (sharing_strategy='file_system', i.e. "
            "torch.multiprocessing.set_sharing_strategy('file_system')), return fewer, larger tensors per sample, "
            "or raise the limit with `ulimit -n`",
        )
    if any(n in low for n in _SHM) or ("no space left on device" in low and ("torch_" in low or "shm" in low)):
        return _case(
            case,
            f"shared memory (/dev/shm) ran out while workers passed batches to the main process ({detail}; "
            f"{shm_usage()}){during}",
            "enlarge /dev/shm (docker run --shm-size=8g; on Kubernetes an emptyDir with medium: Memory), "
            "lower num_workers x prefetch_factor x batch_size (the batches in flight), "
            "or use num_workers=0, which needs no shared memory",
        )
    if isinstance(exc, pickle.PicklingError) or any(n in low for n in _PICKLE):
        return _case(
            case,
            "the dataset, collate_fn or worker_init_fn could not be pickled to start a spawn or forkserver worker "
            f"({detail}){during}",
            "define the dataset class and the functions it holds at module level (no lambdas, local functions or "
            "open handles), or use multiprocessing_context='fork'",
        )
    if "killed by signal: killed" in low:
        return _case(
            case,
            f"a worker process was killed with SIGKILL, most often by the kernel's OOM killer or a container memory "
            f"limit ({detail}){during}",
            "check `dmesg` (or the container's events) for the OOM killer; lower num_workers, prefetch_factor or "
            "batch_size, or the memory each worker touches (fork copies what it touches, pytorch#13246)",
        )
    if "segmentation fault" in low:
        return _case(
            case,
            f"a worker process crashed in native code with a segmentation fault ({detail}){during}",
            "run the case with num_workers=0 under `python -X faulthandler` to see the crashing call; native "
            "libraries that are not fork-safe often work with multiprocessing_context='spawn' or 'forkserver'",
        )
    if "killed by signal" in low or "exited unexpectedly" in low or any(c > 0 for c in (worker_exits or {}).values()):
        return _case(
            case,
            f"a worker process died ({detail}){during}",
            "run the case with num_workers=0 to see the failure in the main process; check `dmesg` for the OOM "
            "killer and lower num_workers or batch_size",
        )
    if "dataloader timed out after" in low:
        return _case(
            case,
            f"no batch arrived within the case's DataLoader timeout ({detail}){during}: "
            "a worker is hung or far slower than the timeout allows",
            "find the blocking call in __getitem__, or raise timeout for genuinely slow storage",
        )
    return _case(
        case,
        f"the dataset or collate raised {detail}{during}",
        "fix the dataset; run it with num_workers=0 to get the plain traceback",
    )


def _case(case: str, fault: str, remedy: str) -> CaseFailed:
    return CaseFailed(_one_paragraph(f"case {case} failed: {fault}. Remedy: {remedy}."))


def _signal_name(signum: int) -> str:
    """``Killed``, ``Segmentation fault``, ``Bus error``...: the words torch's own message uses."""
    try:
        return signal.strsignal(signum) or f"signal {signum}"
    except ValueError:
        return f"signal {signum}"


def _signal_id(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _collate_detail(exc: CollateError) -> str:
    """The CollateError's own message (for one re-raised from a worker, its traceback's last line)."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    return last.split("CollateError: ", 1)[-1]


def _one_paragraph(text: str) -> str:
    return " ".join(text.split())


def _where(text: str) -> str:
    m = _WORKER.search(text)
    return f" (in DataLoader worker process {m.group(2)})" if m else ""


def _detail(exc: BaseException) -> str:
    """``Type: message``; for an error re-raised from a worker, the worker's own last line and the worker."""
    text = str(exc)
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    m = _WORKER.search(text)
    if m is not None and len(lines) > 1:
        head = f"{lines[-1]} (in DataLoader worker process {m.group(2)})"
        if not lines[-1].startswith(m.group(1)):
            head = f"{m.group(1)}: {head}"
    else:
        head = f"{type(exc).__name__}: {lines[0] if lines else text}".rstrip(": ")
    return head if len(head) <= 300 else head[:297] + "..."


def shm_usage(path: str = SHM_DIR) -> str:
    """``/dev/shm: F of T bytes free`` (or why it is unknown)."""
    try:
        st = os.statvfs(path)
    except OSError as exc:
        return f"{path}: cannot stat it ({exc.strerror})"
    return f"{path}: {st.f_bavail * st.f_frsize} of {st.f_blocks * st.f_frsize} bytes free"


# --- bounding hangs ---------------------------------------------------------------------------------------------


class Hung(BaseException):
    """Raised in the main thread by the watchdog's signal.  A BaseException, so a dataset's
    ``except Exception`` retry loop cannot swallow it."""


_ACTIVE: list[Watchdog] = []
_SIGNAL = signal.SIGUSR2


def _on_signal(signum: int, frame: FrameType | None) -> None:
    dog = _ACTIVE[-1] if _ACTIVE else None
    if dog is not None and dog._interrupt_pending:
        dog._interrupt_pending = False
        raise Hung(dog.case)
    previous = dog._previous_handler if dog is not None else None
    if callable(previous):
        previous(signum, frame)


class Watchdog:
    """Bounds a case: no progress (:meth:`beat`, :meth:`phase`) for ``limit_s`` seconds is a hang.

    Stage 1 kills the case's worker processes (torch then raises "worker ...
    killed by signal" in the main process); where the case has none, or the
    main process still has not moved :data:`KILL_GRACE_S` seconds later, stage
    2 interrupts the main thread with :class:`Hung`.  ``limit_s=inf`` disables it.
    """

    __slots__ = (
        "_interrupt_pending",
        "_previous_handler",
        "_stop",
        "_target",
        "_thread",
        "beats",
        "before",
        "case",
        "current_phase",
        "fired",
        "fired_phase",
        "killed",
        "limit_s",
        "me",
        "report",
        "stuck_at",
    )

    def __init__(self, case: str, limit_s: float, *, before: Iterable[int] = ()) -> None:
        self.case = case
        self.limit_s = limit_s
        self.me = psutil.Process()
        self.before = frozenset(before)
        self.beats = 0  # the harness adds one per batch
        self.current_phase = "starting"
        self.fired = False
        self.fired_phase = ""
        self.stuck_at = ""
        self.killed: tuple[int, ...] = ()
        self.report = ""
        self._interrupt_pending = False
        self._previous_handler: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._target = threading.get_ident()

    @property
    def enabled(self) -> bool:
        return self.limit_s != float("inf")

    @property
    def can_interrupt(self) -> bool:
        return self._target == threading.main_thread().ident

    def phase(self, name: str) -> None:
        self.current_phase = name
        self.beats += 1

    def beat(self) -> None:
        self.beats += 1

    def start(self) -> Watchdog:
        if not self.enabled:
            return self
        if self.can_interrupt:
            self._previous_handler = signal.getsignal(_SIGNAL)
            signal.signal(_SIGNAL, _on_signal)
            _ACTIVE.append(self)
        self._thread = threading.Thread(target=self._run, name=f"loaderbench-watchdog-{self.case}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching (from the measuring thread); restores the previous signal handler."""
        self._interrupt_pending = False
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self in _ACTIVE:
            _ACTIVE.remove(self)
            previous = self._previous_handler
            signal.signal(_SIGNAL, previous if previous is not None else signal.SIG_DFL)

    def __enter__(self) -> Watchdog:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        poll = min(1.0, self.limit_s / 20)
        seen = (-1, "")
        last = time.monotonic()
        interrupted = False
        while not self._stop.wait(poll):
            now = time.monotonic()
            if (self.beats, self.current_phase) != seen:
                seen, last = (self.beats, self.current_phase), now
                continue
            waited = now - last
            if not self.fired and waited >= self.limit_s:
                self.fired, self.fired_phase = True, self.current_phase
                self.stuck_at = self._stuck_frame()
                workers = case_processes(self.me, self.before)
                if workers:
                    self.killed = tuple(sorted(p.pid for p in workers))
                    _kill(workers)
                    continue
            if self.fired and not interrupted and waited >= self.limit_s + (KILL_GRACE_S if self.killed else 0):
                interrupted = True
                self._interrupt()

    def _interrupt(self) -> None:
        if self.can_interrupt and not self._stop.is_set():
            self._interrupt_pending = True
            signal.pthread_kill(self._target, _SIGNAL)
            return
        self.report = (
            f"loaderbench: case {self.case} has made no progress for {self.limit_s:g} s while {self.fired_phase}"
            f"{f', stuck at {self.stuck_at}' if self.stuck_at else ''}; it is not measured on the main thread, "
            "so the harness cannot interrupt it: stop the run (Ctrl-C) and fix the dataset"
        )
        with contextlib.suppress(Exception):
            print(self.report, file=sys.__stderr__, flush=True)

    def _stuck_frame(self) -> str:
        frame = sys._current_frames().get(self._target)
        if frame is None:
            return ""
        return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"

    def failure(self, config_timeout: float = 0) -> CaseFailed:
        """The one-paragraph message for a case this watchdog stopped."""
        if self.killed:
            where = (
                f"worker process(es) {', '.join(map(str, self.killed))} delivered nothing, so the harness killed them"
            )
        else:
            stuck = f" at {self.stuck_at}" if self.stuck_at else ""
            where = f"the main process was stuck{stuck}, so the harness interrupted it"
        timeout = (
            f"the case's DataLoader timeout={config_timeout:g} s did not fire first"
            if config_timeout
            else "the case's DataLoader timeout is 0 (wait forever)"
        )
        return _case(
            self.case,
            f"no batch arrived and no phase began for {self.limit_s:g} s (Plan.batch_timeout_s) while "
            f"{self.fired_phase}: the dataset hangs; {where}; {timeout}",
            "find the blocking call in __getitem__ or the collate function (py-spy dump --pid PID shows where a "
            "worker waits), or raise Plan.batch_timeout_s for genuinely slow storage",
        )


# --- leaving nothing behind -------------------------------------------------------------------------------------


def _is_infrastructure(proc: psutil.Process, me: psutil.Process) -> bool:
    """The forkserver server and the resource tracker: shared across cases, outlive them by design."""
    try:
        if proc.ppid() != me.pid:
            return False
        cmd = " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return False
    return any(marker in cmd for marker in _INFRASTRUCTURE)


def case_processes(me: psutil.Process, before: Iterable[int]) -> list[psutil.Process]:
    """Descendants of ``me`` that did not exist before the case, except the forkserver and resource tracker
    (forkserver workers, the forkserver's children, are included)."""
    old = set(before)
    try:
        procs = me.children(recursive=True)
    except psutil.NoSuchProcess:  # pragma: no cover
        return []
    return [p for p in procs if p.pid not in old and not _is_infrastructure(p, me)]


def _kill(procs: list[psutil.Process]) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()


def reap(me: psutil.Process, before: Iterable[int], timeout_s: float) -> int:
    """Wait for the case's processes to exit; kill stragglers.  Returns how many had to be killed."""
    procs = case_processes(me, before)
    _, alive = psutil.wait_procs(procs, timeout=timeout_s)
    _kill(alive)
    psutil.wait_procs(alive, timeout=5)
    return len(alive)


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
