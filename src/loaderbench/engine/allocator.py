"""Pin glibc's malloc thresholds, so large batches are allocated the same way in every process.

glibc serves an allocation above ``M_MMAP_THRESHOLD`` (128 KiB at start) with a
fresh ``mmap``, and raises the threshold, up to 32 MiB, each time such a chunk is
freed.  Whether a 19 MB batch of 3x224x224 float32 samples comes from ``mmap``
(zero-filled pages, a page fault per 4 KiB) or from the heap therefore depends on
what the process freed before: the same case ran in one of two modes, 12.6x apart,
from one process to the next.  Pinning ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD``
to 32 MiB and 64 MiB takes the history out: every process allocates batches below
32 MiB from the heap and keeps freed memory for the next batch.  It is the mode a
long-running training process settles into anyway.

``LOADERBENCH_MALLOC=default`` leaves glibc's dynamic thresholds alone.  Other C
libraries (musl, macOS) are left alone and say so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

#: ``mallopt`` parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: The largest mmap threshold glibc accepts on 64-bit (HEAP_MAX_SIZE / 2).
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 64 * 2**20
ENV = "LOADERBENCH_MALLOC"

_state: list[str] = []


def pin() -> str:
    """Pin the thresholds once per process; returns what was done, for the run's context and notes."""
    if _state:
        return _state[0]
    choice = os.environ.get(ENV, "pinned").strip().lower()
    if choice == "default":
        result = f"glibc malloc thresholds left dynamic ({ENV}=default)"
    elif choice != "pinned":
        result = f"{ENV}={choice!r} is neither 'pinned' nor 'default': malloc thresholds left dynamic"
    else:
        result = _mallopt()
    _state.append(result)
    return result


def _mallopt() -> str:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return "malloc thresholds not pinned: this C library has no mallopt (not glibc)"
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not ok:
        return "malloc thresholds not pinned: mallopt refused the values"
    return f"glibc malloc thresholds pinned (mmap {MMAP_THRESHOLD // 2**20} MiB, trim {TRIM_THRESHOLD // 2**20} MiB)"
