"""The control case: how fast this machine is right now, measured without a DataLoader.

A spin loop (pure Python, holds the GIL: what CPU-bound loaders spend) and a memory copy (a 32 MB
``bytearray`` slice assignment, one ``memcpy``: what collate and IPC spend), each the median of a few
short rounds, plus the machine's load: the share of the machine's CPU time that other processes used
while they ran (``others_busy``: immediate, and blind to the suite's own work), the 1-minute load average
per CPU (kept for baselines recorded before ``others_busy``: it lags a minute behind a new load and counts
the suite itself), and the share the hypervisor stole.  Measured at the start and at the end of every benchmark session
(the mean of both), recorded with each baseline session, and compared by the gate: when the control
moved as much as the cases, the machine moved, not the loaders (:mod:`loaderbench.decision.job`).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psutil

from loaderbench.decision.job import Control
from loaderbench.engine.memory import others_share

#: Names the control's figures are recorded under in a baseline session's ``calibration``.
SPIN = "control_spin_per_s"
COPY = "control_copy_bytes_per_s"
LOAD = "control_load_per_cpu"
STEAL = "control_steal_fraction"
OTHERS = "control_others_busy"
#: The control's between-session noise assumed until a baseline's own sessions measure it (log sd).
PRIOR_SIGMA = 0.03
PRIOR_DOF = 4.0
_COPY_BYTES = 32 * 10**6


@dataclass(frozen=True, slots=True)
class ControlReading:
    """One reading of the control case: spin iterations/s, memory-copy bytes/s, load per CPU, stolen share,
    and the share of the machine's CPU time other processes used meanwhile (NaN: not measured)."""

    spin_per_s: float
    copy_bytes_per_s: float
    load_per_cpu: float
    steal_fraction: float
    others_busy: float = math.nan

    def as_calibration(self) -> dict[str, float]:
        out = {SPIN: self.spin_per_s, COPY: self.copy_bytes_per_s, LOAD: self.load_per_cpu, STEAL: self.steal_fraction}
        return out | ({OTHERS: self.others_busy} if math.isfinite(self.others_busy) else {})

    @classmethod
    def from_calibration(cls, values: Mapping[str, float]) -> ControlReading | None:
        if SPIN not in values or COPY not in values:
            return None
        return cls(
            values[SPIN],
            values[COPY],
            values.get(LOAD, math.nan),
            values.get(STEAL, math.nan),
            values.get(OTHERS, math.nan),
        )

    def merged(self, other: ControlReading) -> ControlReading:
        """The geometric mean of two readings (start and end of a session); load, steal and others' share
        averaged (the one measured, when only one was)."""
        return ControlReading(
            math.sqrt(self.spin_per_s * other.spin_per_s),
            math.sqrt(self.copy_bytes_per_s * other.copy_bytes_per_s),
            (self.load_per_cpu + other.load_per_cpu) / 2,
            (self.steal_fraction + other.steal_fraction) / 2,
            _mean_of_finite(self.others_busy, other.others_busy),
        )


def _mean_of_finite(*values: float) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.fmean(finite) if finite else math.nan


def _spin(round_s: float, clock: Callable[[], float]) -> float:
    n, start = 0, clock()
    deadline = start + round_s
    while True:
        for _ in range(2000):
            n += 1
        if clock() >= deadline:
            return n / (clock() - start)


def _copies(rounds: int, clock: Callable[[], float]) -> list[float]:
    src = bytearray(os.urandom(4096)) * (_COPY_BYTES // 4096)
    dst = bytearray(src)  # touched once untimed: the timed copies fault no page in
    out = []
    for _ in range(rounds):
        start = clock()
        dst[:] = src
        out.append(len(src) / max(clock() - start, 1e-9))
    return out


def measure(
    rounds: int = 9, round_s: float = 0.06, *, clock: Callable[[], float] = time.perf_counter
) -> ControlReading:
    """One reading (see the module docstring); about ``rounds * (round_s + 0.02)`` seconds."""
    me = psutil.Process()
    before, own_before = psutil.cpu_times(), me.cpu_times()
    spin = statistics.median(_spin(round_s, clock) for _ in range(rounds))
    copy = statistics.median(_copies(rounds, clock))
    after, own_after = psutil.cpu_times(), me.cpu_times()
    total = sum(after) - sum(before)
    steal = (getattr(after, "steal", 0.0) - getattr(before, "steal", 0.0)) / total if total > 0 else 0.0
    load = os.getloadavg()[0] / max(1, len(os.sched_getaffinity(0)))
    return ControlReading(spin, copy, load, max(0.0, steal), others_busy(before, after, own_before, own_after))


def others_busy(before: Any, after: Any, own_before: Any, own_after: Any) -> float:
    """The share of the machine's CPU time (every CPU's) that processes other than this one used between
    two ``psutil.cpu_times()`` readings, given this process's ``cpu_times()`` at both (see
    :func:`others_share`)."""
    own = float((own_after.user + own_after.system) - (own_before.user + own_before.system))
    return others_share(before, after, own)


def shift(recorded: Sequence[ControlReading], today: ControlReading) -> Control | None:
    """The control's change since the baseline (log, above 0 when slower), with its standard error from the
    recorded sessions' spread pooled with :data:`PRIOR_SIGMA`; None when no session recorded one."""
    if not recorded:
        return None
    parts = []
    for name, values, now in (
        ("spin", [r.spin_per_s for r in recorded], today.spin_per_s),
        ("memory copy", [r.copy_bytes_per_s for r in recorded], today.copy_bytes_per_s),
    ):
        logs = [math.log(v) for v in values]
        k = len(logs)
        s2 = statistics.variance(logs) if k >= 2 else 0.0
        sigma2 = ((k - 1) * s2 + PRIOR_DOF * PRIOR_SIGMA**2) / (k - 1 + PRIOR_DOF)
        parts.append((name, statistics.fmean(logs) - math.log(now), sigma2 * (1 + 1 / k)))
    x = statistics.fmean(p[1] for p in parts)
    se = math.sqrt(sum(p[2] for p in parts)) / len(parts)
    detail = ", ".join(f"{name} {_change(v)}" for name, v, _ in parts)
    return Control(x, se, detail)


def _change(x: float) -> str:
    f = math.exp(x)
    if abs(x) < 0.005:
        return "unchanged"
    return f"{f:.2f}x slower" if x > 0 else f"{1 / f:.2f}x faster"


def busier(recorded: Sequence[ControlReading], today: ControlReading) -> float:
    """How much busier the machine is than at recording: the share of CPU time other processes used today
    minus the recorded median (or, when the baseline's sessions did not measure it, today's load per CPU
    minus the recorded median), plus the extra stolen share; 0 when it is not busier, or nothing was
    recorded."""
    others = [r.others_busy for r in recorded if math.isfinite(r.others_busy)]
    loads = [r.load_per_cpu for r in recorded if math.isfinite(r.load_per_cpu)]
    steals = [r.steal_fraction for r in recorded if math.isfinite(r.steal_fraction)]
    if others and math.isfinite(today.others_busy):
        more = today.others_busy - statistics.median(others)
    else:
        more = today.load_per_cpu - statistics.median(loads) if loads else 0.0
    more += today.steal_fraction - statistics.median(steals) if steals else 0.0
    return max(0.0, more)
