"""Explain a failed case in one paragraph: what went wrong and what to do.

:func:`explain_failure` turns whatever a DataLoader raised into a
:class:`~loaderbench.errors.CaseFailed` that names the case, the fault and the
remedy (one paragraph, no newline), and carries them as data: ``case``,
``phase`` and ``kind`` (``collate``, ``cuda``, ``too-many-open-files``,
``shm-exhausted``, ``pickling``, ``worker-killed``, ``segfault``,
``worker-died``, ``timeout``, ``hang``, ``dataset``).
"""

from __future__ import annotations

import errno
import os
import pickle
import re
import resource
import signal
from collections.abc import Mapping

from loaderbench.collates import CollateError
from loaderbench.cuda.ops import cuda_call_of
from loaderbench.engine.cleanup import SHM_DIR
from loaderbench.errors import CaseFailed, FailureKind

_COLLATE_REMEDY = (
    "return samples of equal shape from __getitem__, pad them in a collate function "
    "(loaderbench.collates.pad_collate), or keep each batch as a list (collate='list') "
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
    case: str,
    exc: BaseException,
    *,
    phase: str = "",
    worker_exits: Mapping[int, int] | None = None,
    in_process: bool = False,
) -> CaseFailed:
    """A :class:`CaseFailed` naming ``case``, what went wrong (during ``phase``) and what to do;
    ``in_process``: the case loads in the main process (``num_workers=0``), so the advice to rerun it there
    does not apply.

    ``worker_exits`` maps worker pids to their exit codes (negative: the signal), for the failures that torch
    reports only as "exited unexpectedly" when it notices a dead worker before its SIGCHLD handler runs.
    """
    failure = _explain(case, exc, phase=phase, worker_exits=worker_exits, in_process=in_process)
    return CaseFailed(str(failure), case=case, phase=phase, kind=failure.kind)


def _explain(
    case: str,
    exc: BaseException,
    *,
    phase: str = "",
    worker_exits: Mapping[int, int] | None = None,
    in_process: bool = False,
) -> CaseFailed:
    """The explanation, by the first rule that matches."""
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
        return case_failure(
            FailureKind.COLLATE,
            case,
            f"{_collate_detail(exc).replace('in one batch', 'in one batch cannot be collated: they', 1)}{_where(text)}"
            f"{during}",
            _COLLATE_REMEDY,
        )
    if (m := _STACK.search(text)) is not None:
        return case_failure(
            FailureKind.COLLATE,
            case,
            f"samples in one batch cannot be collated: they hold tensors of shapes {m.group(1)} (entry {m.group(2)}) "
            f"and {m.group(3)} (entry {m.group(4)}), which default_collate cannot stack{_where(text)}{during}",
            _COLLATE_REMEDY,
        )
    if "each element in list of batch should be of equal size" in low:
        return case_failure(
            FailureKind.COLLATE,
            case,
            "samples in one batch cannot be collated: they hold lists or tuples of different lengths, "
            f"which default_collate cannot zip{_where(text)}{during}",
            _COLLATE_REMEDY,
        )
    if (m := _FOUND.search(text)) is not None:
        return case_failure(
            FailureKind.COLLATE,
            case,
            f"samples cannot be collated: they hold a {m.group(1)}, which default_collate cannot batch (it takes "
            f"tensors, numpy arrays, numbers, strings, dicts, lists, tuples and namedtuples){_where(text)}{during}",
            "convert the sample in __getitem__ (e.g. dataclasses.astuple, or a namedtuple), pass a collate function "
            "that knows the type, or keep each batch as a list (collate='list')",
        )
    if any(n in low for n in _CUDA):
        call = cuda_call_of(exc)
        at = f"at {call}" if call else "while a batch was copied or the simulated step ran"
        return case_failure(
            FailureKind.CUDA,
            case,
            f"the GPU raised a CUDA error {at} ({detail}){during}; the case's GPU memory is released and the next "
            "case runs",
            "check nvidia-smi for other processes holding GPU memory and lower batch_size or prefetch_factor; after "
            "an illegal address or device-side assert the CUDA context is unusable for the rest of this process, so "
            "rerun the remaining CUDA cases in a fresh pytest run (CUDA_LAUNCH_BLOCKING=1 pins down the failing call)",
        )
    if any(n in low for n in _NOFILE) or getattr(exc, "errno", None) == errno.EMFILE:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return case_failure(
            FailureKind.TOO_MANY_OPEN_FILES,
            case,
            "the process ran out of file descriptors: the file_descriptor sharing strategy keeps one open "
            f"descriptor per shared tensor in flight ({detail}; ulimit -n is {soft}){during}",
            "use the file_system sharing strategy (sharing_strategy='file_system', i.e. "
            "torch.multiprocessing.set_sharing_strategy('file_system')), return fewer, larger tensors per sample, "
            "or raise the limit with `ulimit -n`",
        )
    if any(n in low for n in _SHM) or ("no space left on device" in low and ("torch_" in low or "shm" in low)):
        return case_failure(
            FailureKind.SHM_EXHAUSTED,
            case,
            f"shared memory (/dev/shm) ran out while workers passed batches to the main process ({detail}; "
            f"{shm_usage()}){during}",
            "enlarge /dev/shm (docker run --shm-size=8g; on Kubernetes an emptyDir with medium: Memory), "
            "lower num_workers x prefetch_factor x batch_size (the batches in flight), "
            "or use num_workers=0, which needs no shared memory",
        )
    if isinstance(exc, pickle.PicklingError) or any(n in low for n in _PICKLE):
        return case_failure(
            FailureKind.PICKLING,
            case,
            "the dataset, collate_fn or worker_init_fn could not be pickled to start a spawn or forkserver worker "
            f"({detail}){during}",
            "define the dataset class and the functions it holds at module level (no lambdas, local functions or "
            "open handles), or use multiprocessing_context='fork'",
        )
    if "killed by signal: killed" in low:
        return case_failure(
            FailureKind.WORKER_KILLED,
            case,
            f"a worker process was killed with SIGKILL, most often by the kernel's OOM killer or a container memory "
            f"limit ({detail}){during}",
            "check `dmesg` (or the container's events) for the OOM killer; lower num_workers, prefetch_factor or "
            "batch_size, or the memory each worker touches (fork copies what it touches, pytorch#13246)",
        )
    if "segmentation fault" in low:
        return case_failure(
            FailureKind.SEGFAULT,
            case,
            f"a worker process crashed in native code with a segmentation fault ({detail}){during}",
            "run the case with num_workers=0 under `python -X faulthandler` to see the crashing call; native "
            "libraries that are not fork-safe often work with multiprocessing_context='spawn' or 'forkserver'",
        )
    if "killed by signal" in low or "exited unexpectedly" in low or any(c > 0 for c in (worker_exits or {}).values()):
        return case_failure(
            FailureKind.WORKER_DIED,
            case,
            f"a worker process died ({detail}){during}",
            "run the case with num_workers=0 to see the failure in the main process; check `dmesg` for the OOM "
            "killer and lower num_workers or batch_size",
        )
    if "dataloader timed out after" in low:
        return case_failure(
            FailureKind.TIMEOUT,
            case,
            f"no batch arrived within the case's DataLoader timeout ({detail}){during}: "
            "a worker is hung or far slower than the timeout allows",
            "find the blocking call in __getitem__, or raise timeout for genuinely slow storage",
        )
    return case_failure(
        FailureKind.DATASET,
        case,
        f"the dataset or collate raised {detail}{during}",
        "fix the dataset; it raised in this process (num_workers=0): call its __getitem__ (and your collate) "
        "directly to step into the error"
        if in_process
        else "fix the dataset; run it with num_workers=0 to get the plain traceback",
    )


def case_failure(kind: str, case: str, fault: str, remedy: str, *, phase: str = "") -> CaseFailed:
    """One paragraph: ``case CASE failed: FAULT. Remedy: REMEDY.``, carrying ``case``, ``phase`` and ``kind``."""
    return CaseFailed(
        _one_paragraph(f"case {case} failed: {fault}. Remedy: {remedy}."), case=case, phase=phase, kind=kind
    )


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
