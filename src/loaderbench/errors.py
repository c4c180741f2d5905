"""One exception hierarchy for everything loaderbench raises on purpose.

Every message names the offending ``argument=value``, says why it is wrong and
what to do instead.  Catch :class:`LoaderbenchError` to catch them all.
"""

from __future__ import annotations

import contextlib
from enum import StrEnum


class FailureKind(StrEnum):
    """What went wrong in a failed case (:attr:`CaseFailed.kind`): one enumeration for the code, the records and
    the docs (each member's meaning is :data:`FAILURE_KINDS`)."""

    COLLATE = "collate"
    CUDA = "cuda"
    TOO_MANY_OPEN_FILES = "too-many-open-files"
    SHM_EXHAUSTED = "shm-exhausted"
    PICKLING = "pickling"
    WORKER_KILLED = "worker-killed"
    SEGFAULT = "segfault"
    WORKER_DIED = "worker-died"
    TIMEOUT = "timeout"
    HANG = "hang"
    PYTEST_TIMEOUT = "pytest-timeout"
    DATASET = "dataset"
    WORKLOAD = "workload"
    PIPELINE = "pipeline"
    RANKS = "ranks"
    RANK_DIED = "rank-died"
    RANK_ERROR = "rank-error"
    RANK_WAIT = "rank-wait"
    SAME_SAMPLES = "same-samples"
    OTHER_NODE = "other-node"


#: What each failure kind means, in a line.
FAILURE_KINDS: dict[FailureKind, str] = {
    FailureKind.COLLATE: "the collate function failed on the batch's samples (ragged shapes, mixed types)",
    FailureKind.CUDA: "a CUDA call failed (the call is named; GPU memory is released)",
    FailureKind.TOO_MANY_OPEN_FILES: "out of file descriptors (raise ulimit -n, or share tensors by file_system)",
    FailureKind.SHM_EXHAUSTED: "/dev/shm filled up (a bigger --shm-size, fewer workers or a smaller prefetch_factor)",
    FailureKind.PICKLING: "the dataset or a setting could not be pickled for spawn/forkserver workers",
    FailureKind.WORKER_KILLED: "a worker was killed by a signal, usually the out-of-memory killer",
    FailureKind.SEGFAULT: "a worker crashed with a segmentation fault",
    FailureKind.WORKER_DIED: "a worker exited unexpectedly",
    FailureKind.TIMEOUT: "the DataLoader's own timeout expired waiting for a batch",
    FailureKind.HANG: "the watchdog saw no progress within --loader-batch-timeout",
    FailureKind.PYTEST_TIMEOUT: "pytest-timeout's limit fired during the case",
    FailureKind.DATASET: "the dataset raised while producing a sample",
    FailureKind.WORKLOAD: "the workload could not be built (its factory or parameters)",
    FailureKind.PIPELINE: "the chosen pipeline (torchdata nodes, SPDL) is missing or failed",
    FailureKind.RANKS: "the ranks could not be started or run (torchrun, the process group)",
    FailureKind.RANK_DIED: "a rank's process died",
    FailureKind.RANK_ERROR: "a rank raised an error (the first rank's error is reported)",
    FailureKind.RANK_WAIT: "a rank was stopped while waiting for the others",
    FailureKind.SAME_SAMPLES: "two ranks loaded the same samples (a sampler not sharded by rank)",
    FailureKind.OTHER_NODE: "not a fault: on a node without rank 0, the case's result is recorded on node 0",
}


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


class ReportError(LoaderbenchError):
    """The report files could not be written (the directory vanished, filled up or turned read-only)."""


class CaseFailed(LoaderbenchError):
    """One benchmark case failed while it was measured.

    The message is one paragraph naming the case, the fault and the remedy;
    the session goes on with the next case.  The exception also carries them
    as data: ``case`` (the case id), ``phase`` (what the harness was doing,
    e.g. ``"waiting for the first batch"``) and ``kind`` (a :class:`FailureKind`), so a caller can act
    on it without parsing the message.
    """

    def __init__(self, message: str, *, case: str = "", phase: str = "", kind: str = "") -> None:
        super().__init__(message)
        self.case = case
        self.phase = phase
        #: a :class:`FailureKind` ("" when unknown, e.g. a record from an older version)
        self.kind: str = FailureKind(kind) if kind in FailureKind.__members__.values() else kind

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
