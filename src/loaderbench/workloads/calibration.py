"""The spin calibration of the ``spin`` workloads: how many loops of :func:`loaderbench.workloads.datasets.spin`
this machine runs per second, measured once per process or handed over (by a baseline, by the A/B's parent, by
``$LOADERBENCH_SPIN_LOOPS_PER_S``), so that every process of a comparison spins the same loop count per sample.
"""

from __future__ import annotations

import math
import os
import time

from loaderbench.errors import WorkloadError
from loaderbench.workloads import datasets as ds

#: Environment variable that hands a calibration to this process (the A/B scheduler gives both arms one).
CALIBRATION_ENV = "LOADERBENCH_SPIN_LOOPS_PER_S"
_calibration: list[float] = []


def use_calibration(loops_per_s: float | None) -> None:
    """Use ``loops_per_s`` as this process's spin calibration instead of measuring one (``None``: measure
    again).  The gate does this with a baseline's recorded calibration, so a process whose own
    calibration came out a few percent off cannot look like a regression of every cpu case."""
    if loops_per_s is not None and not (math.isfinite(loops_per_s) and loops_per_s > 0):
        raise WorkloadError(f"loops_per_s={loops_per_s!r}: a spin calibration must be a positive number.")
    _calibration[:] = [] if loops_per_s is None else [float(loops_per_s)]


def calibrated() -> bool:
    """Whether this process has a spin calibration yet (measured, handed over, or from the environment)."""
    return bool(_calibration) or bool(os.environ.get(CALIBRATION_ENV))


def spin_loops_per_s() -> float:
    """The spin calibration of :func:`loaderbench.workloads.datasets.spin`: loops per second.

    Handed over (:func:`use_calibration`, or ``$LOADERBENCH_SPIN_LOOPS_PER_S``) or else measured once
    per process: the fastest of 100 timings (after a warm-up) of a 10,000-loop spin (about the loop
    count of a 0.5 ms sample), in the main process, so every worker gets the same loop count.  The
    minimum time is the stable estimate: slower timings are interruptions, and a median would carry
    them into the workload.
    """
    if not _calibration:
        env = os.environ.get(CALIBRATION_ENV, "")
        if env:
            try:
                use_calibration(float(env))
            except (ValueError, WorkloadError):
                raise WorkloadError(
                    f"{CALIBRATION_ENV}={env!r}: not a positive number of loops per second. Unset it to calibrate."
                ) from None
        else:
            _calibration.append(_measure_spin())
    return _calibration[0]


def _measure_spin() -> float:
    loops = 10_000
    ds.spin(loops * 5)  # warm up: let the interpreter specialise the loop
    best = math.inf
    for _ in range(100):
        t0 = time.perf_counter()
        ds.spin(loops)
        best = min(best, time.perf_counter() - t0)
    return loops / best
