"""What this process may run on: the CPUs in its affinity mask (the one rule for counting them)."""

from __future__ import annotations

import os


def affinity_cpus() -> int:
    """CPUs this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1
