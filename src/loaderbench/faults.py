"""Turn a DataLoader failure into one clear paragraph: the case, the fault, the remedy."""

from __future__ import annotations

import pickle

from loaderbench.errors import CaseFailed

_REMEDIES: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (
        ("out of shared memory", "bus error", "no space left on device", "shm"),
        "shared memory (/dev/shm) ran out while workers passed tensors",
        "enlarge /dev/shm (e.g. docker --shm-size=8g), lower num_workers, prefetch_factor or batch_size, "
        "or use sharing_strategy='file_system'",
    ),
    (
        ("too many open files",),
        "the process ran out of file descriptors (the file_descriptor sharing strategy keeps one per shared tensor)",
        "use sharing_strategy='file_system' (torch.multiprocessing.set_sharing_strategy('file_system')) "
        "or raise the limit with `ulimit -n`",
    ),
    (
        ("can't pickle", "cannot pickle", "can't get local object", "pickl"),
        "the dataset, collate_fn or a sample could not be pickled for a spawn/forkserver worker",
        "define the dataset class and collate_fn at module level (no lambdas or local functions), "
        "or use the fork start method",
    ),
    (
        ("timed out",),
        "no batch arrived within the DataLoader timeout: a worker is hung or far slower than expected",
        "find the blocking call in __getitem__, or raise timeout for genuinely slow storage",
    ),
    (
        ("killed by signal", "exited unexpectedly", "segmentation fault", "is killed"),
        "a worker process died (killed, out of memory, or crashed in native code)",
        "check dmesg for the OOM killer, lower num_workers or batch_size, and run with num_workers=0 to see the crash",
    ),
)


def explain_failure(case: str, exc: BaseException) -> CaseFailed:
    """A :class:`CaseFailed` naming ``case``, what went wrong and what to do."""
    text = f"{type(exc).__name__}: {exc}"
    lowered = text.lower()
    if isinstance(exc, pickle.PicklingError):
        lowered += " pickl"
    for needles, fault, remedy in _REMEDIES:
        if any(n in lowered for n in needles):
            return CaseFailed(f"case {case} failed: {fault} ({_first_line(text)}). Remedy: {remedy}.")
    return CaseFailed(
        f"case {case} failed: the dataset or collate raised {_first_line(text)}. "
        "Remedy: fix the dataset; run it with num_workers=0 to get the plain traceback."
    )


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return text
    head = lines[0]
    # torch puts the worker's own exception on the last line of a long message
    if len(lines) > 1:
        head = f"{head} ... {lines[-1]}"
    return head if len(head) <= 300 else head[:297] + "..."
