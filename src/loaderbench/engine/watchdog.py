"""The watchdog: bounds every step of a case, also when the case's DataLoader ``timeout`` is 0.

When no batch arrives and no phase begins for ``limit_s`` seconds, it kills
the case's worker processes (torch then raises in the main process), and if
the main process itself is stuck it interrupts it.

Limits, honestly: the interruption uses a signal (``SIGUSR2``) sent to the
main thread, so it only works when the case is measured on the main thread
(pytest does) and only takes effect when the stuck code returns to the Python
interpreter: ``time.sleep``, lock and socket waits and pure-Python loops are
interrupted; a native call that never returns (a C extension spinning without
releasing the GIL, a D-state read from a dead NFS mount) is not.  Then, and
when the case runs on another thread, the watchdog can only report: it writes
one line naming the case, the phase and the stuck frame to stderr, once.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterable
from types import FrameType
from typing import Any

import psutil

from loaderbench.engine.cleanup import case_processes, kill
from loaderbench.engine.explain import case_failure
from loaderbench.errors import CaseFailed, FailureKind

#: Seconds the watchdog waits, after killing the workers, for the main process to notice before interrupting it.
KILL_GRACE_S = 10.0


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
                    kill(workers)
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
        return case_failure(
            FailureKind.HANG,
            self.case,
            f"no batch arrived and no phase began for {self.limit_s:g} s (Plan.batch_timeout_s) while "
            f"{self.fired_phase}: the dataset hangs; {where}; {timeout}",
            "find the blocking call in __getitem__ or the collate function (py-spy dump --pid PID shows where a "
            "worker waits), or raise Plan.batch_timeout_s for genuinely slow storage",
            phase=self.fired_phase,
        )
