"""One exception hierarchy for everything loaderbench raises on purpose.

Every message names the offending ``argument=value``, says why it is wrong and
what to do instead.  Catch :class:`LoaderbenchError` to catch them all.
"""

from __future__ import annotations

import contextlib


class LoaderbenchError(Exception):
    """Base class of every error loaderbench raises deliberately."""


class InvalidConfig(LoaderbenchError, ValueError):
    """A ``LoaderConfig`` combination that ``torch.utils.data.DataLoader`` rejects.

    Raised at construction, including for the two combinations that torch
    itself only rejects later, at ``iter(loader)`` (``prefetch_factor=0`` with
    workers and ``timeout>0`` without workers).  The message names the rule
    that is broken and the change that fixes it.
    """


class UsageError(LoaderbenchError, ValueError):
    """Bad input on the command line or in an option (unknown tier, device...).

    The pytest plugin turns this into a usage error (exit code 4) without a
    traceback.
    """


class WorkloadError(LoaderbenchError):
    """A workload could not be built: unknown name, bad scenario file, or a
    user factory that cannot be imported, raises, or returns no Dataset."""


class BaselineError(LoaderbenchError):
    """A baseline file that cannot be used: unreadable, corrupt, truncated, or of another format version.

    The message names the file and the problem, and says how to fix it
    (usually: delete the file and record a new baseline).
    """


class HistoryError(LoaderbenchError):
    """A history file that cannot be used or appended to: unreadable, a corrupt or foreign line, a newer
    format version, or another machine's hardware.

    The message names the file (and the line, for a bad line) and says what to do; the other lines and
    files stay readable.
    """


class CaseFailed(LoaderbenchError):
    """One benchmark case failed while it was measured.

    The message is one paragraph naming the case, the fault and the remedy;
    the session goes on with the next case.  The exception also carries them
    as data: ``case`` (the case id), ``phase`` (what the harness was doing,
    e.g. ``"waiting for the first batch"``) and ``kind`` (the fault:
    ``collate``, ``cuda``, ``too-many-open-files``, ``shm-exhausted``,
    ``pickling``, ``worker-killed``, ``segfault``, ``worker-died``,
    ``timeout``, ``hang``, ``dataset``, ``workload``), so a caller can act on
    it without parsing the message.
    """

    def __init__(self, message: str, *, case: str = "", phase: str = "", kind: str = "") -> None:
        super().__init__(message)
        self.case = case
        self.phase = phase
        self.kind = kind

    def __reduce__(self) -> tuple[object, ...]:  # picklable with its data (e.g. across processes)
        return (_case_failed, (str(self), self.case, self.phase, self.kind))


def _case_failed(message: str, case: str, phase: str, kind: str) -> CaseFailed:
    return CaseFailed(message, case=case, phase=phase, kind=kind)


class NotMeasured(LoaderbenchError):
    """A metric that could not be measured on this machine (no GPU, no NVML...).

    loaderbench never reports a made-up number: the metric is recorded as not
    measured, with this reason.
    """


#: The attribute :func:`note_interruption` sets: ``(case id, phase)``.
_INTERRUPTED = "loaderbench_interrupted"


def note_interruption(exc: BaseException, *, case: str, phase: str) -> None:
    """Remember on ``exc``, raised into a case from outside the harness (pytest-timeout's alarm, Ctrl-C), which case
    it stopped and in which phase, so whoever reports it can name both; the innermost case's note is kept."""
    if interruption(exc) is None:
        # an exception type without a __dict__ cannot carry it: nothing to name, no harm
        with contextlib.suppress(AttributeError, TypeError):
            setattr(exc, _INTERRUPTED, (case, phase))


def interruption(exc: BaseException) -> tuple[str, str] | None:
    """``(case id, phase)`` that :func:`note_interruption` remembered on ``exc``; None when none."""
    where = getattr(exc, _INTERRUPTED, None)
    return (str(where[0]), str(where[1])) if isinstance(where, tuple) and len(where) == 2 else None
