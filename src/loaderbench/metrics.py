"""The gated metrics: the one place that says what the regression gate compares.

Each :class:`Metric` names where its raw values come from in a
:class:`~loaderbench.measurement.Measurement`, which way is better, its unit,
its default threshold, and two noise guards:

* ``process_noise``: the least session-to-session noise (standard deviation
  of log values) the gate assumes, however closely a baseline's own runs agree;
  with a one-run baseline it is all the gate knows.  The figures are what the
  2-core CI machine class shows for its quietest cases (measured across
  processes, and by the self-check): about 1.5% for sleep-bound throughput, 5% for TTFB and the
  epoch stall, 8% for peak memory (PSS sampled every 0.1 s; a session's first
  case alone moves it by tens of MiB).
* ``min_abs``: a change smaller than this, in the metric's unit, is never a
  regression or an improvement (for example 5 ms of time to first batch).
* ``noise_from``: another metric of the same case whose session-to-session
  noise this one is assumed to share at least.  TTFB and the epoch stall are
  made of sample loading, so a case whose throughput moves 30% between sessions
  (a per-process calibration, an allocator mode) moves them as much, even when
  their own three baseline values happen to agree.

Per-round metrics (``source='rounds'``) have one raw value per timed round;
one-off metrics (``source='value'``: a phase or peak memory; ``source='extra'``: a figure the harness
keeps in ``Measurement.extra``, such as ``cpu_s_per_sample``) have one value per measurement, so their
evidence comes only from repeated measurements.  CPU time per sample is judged for CPU-bound cases
only (:meth:`Metric.applies`): it cannot see added waiting, but it hardly moves with neighbours, so a
slower transform shows in it at a few percent.  A metric missing from a
measurement (a CPU case has no ``feed_samples_per_s``) is skipped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from loaderbench import stats
from loaderbench.formatting import fmt_unit
from loaderbench.measurement import Measurement

Direction = Literal["higher", "lower"]
Source = Literal["rounds", "value", "extra"]
#: A case is CPU-bound, for the CPU-time metric, when its loader keeps at least this many CPUs busy.
CPU_BOUND_CPUS = 0.5


@dataclass(frozen=True, slots=True)
class Metric:
    """One gated metric.  ``threshold`` is the default tolerated change as a
    fraction: 0.10 means a 1.10x change in the bad direction."""

    name: str
    direction: Direction
    unit: str
    threshold: float
    source: Source
    process_noise: float
    min_abs: float = 0.0
    noise_from: str | None = None
    worse: str = "slower"
    better: str = "faster"
    description: str = ""

    @property
    def higher_is_better(self) -> bool:
        return self.direction == "higher"

    def run_value(self, run: Measurement) -> float:
        """The value of one measurement: the median of its rounds, or the one-off value (NaN if absent)."""
        if self.source == "rounds":
            return stats.median(run.rounds.get(self.name, ()))
        if self.source == "extra":
            found = run.extra.get(self.name)
            return float(found) if isinstance(found, (int, float)) and not isinstance(found, bool) else math.nan
        return run.value(self.name)

    def run_rounds(self, run: Measurement) -> tuple[float, ...]:
        """The raw per-round values of one measurement (empty for one-off metrics)."""
        if self.source == "rounds":
            return tuple(v for v in run.rounds.get(self.name, ()) if math.isfinite(v))
        return ()

    def present(self, runs: Sequence[Measurement]) -> bool:
        """Whether every run has a finite, positive value for this metric."""
        return bool(runs) and all(math.isfinite(v) and v > 0 for v in (self.run_value(r) for r in runs))

    def comparable(self, baseline: Sequence[Measurement], current: Sequence[Measurement]) -> bool:
        """Whether the two sets of runs measured this metric the same way: peak memory only when every run
        has one memory kind (``pss-anon``, ``pss``, ``rss``: each counts different pages), every other
        metric always."""
        if self.name != "peak_memory_bytes":
            return True
        return len({r.memory_kind for r in (*baseline, *current)}) == 1

    def applies(self, runs: Sequence[Measurement]) -> bool:
        """Whether the gate judges this metric for a case with these baseline runs: CPU time per sample only
        for CPU-bound cases (CPU time per sample x samples/s >= :data:`CPU_BOUND_CPUS`), every other metric
        always."""
        if self.name != "cpu_s_per_sample":
            return True
        busy = [self.run_value(r) * stats.median(r.rounds.get("samples_per_s", ())) for r in runs]
        return bool(busy) and stats.median(busy) >= CPU_BOUND_CPUS

    def slowdown(self, baseline: float, current: float) -> float:
        """The change as a factor that is above 1 when ``current`` is worse than ``baseline``."""
        return baseline / current if self.higher_is_better else current / baseline

    def describe_change(self, slowdown: float) -> str:
        """``1.23x slower`` / ``1.05x faster`` / ``same`` (``unknown`` when not finite) for a slowdown factor."""
        if slowdown == 1:
            return "same"
        if not math.isfinite(slowdown):
            return "unknown"
        if slowdown > 1:
            return f"{slowdown:.2f}x {self.worse}"
        return f"{1 / slowdown:.2f}x {self.better}"

    def format_value(self, value: float) -> str:
        """A short human rendering in the metric's unit (SI bytes, as everywhere)."""
        return fmt_unit(value, self.unit)


_METRICS = (
    Metric(
        "samples_per_s",
        "higher",
        "samples/s",
        0.10,
        "rounds",
        process_noise=0.015,
        description="steady-state throughput, one value per round",
    ),
    Metric(
        "ttfb_s",
        "lower",
        "s",
        0.25,
        "value",
        process_noise=0.05,
        min_abs=0.005,
        noise_from="samples_per_s",
        description="iter(loader) to the first batch, once per measurement",
    ),
    Metric(
        "epoch_stall_s",
        "lower",
        "s",
        0.25,
        "value",
        process_noise=0.05,
        min_abs=0.005,
        noise_from="samples_per_s",
        description="next epoch's iter() to its first batch, once per measurement",
    ),
    Metric(
        "peak_memory_bytes",
        "lower",
        "bytes",
        0.10,
        "value",
        process_noise=0.08,
        min_abs=16 * 2**20,
        worse="larger",
        better="smaller",
        description="peak memory of the main process plus workers, once per measurement",
    ),
    Metric(
        "cpu_s_per_sample",
        "lower",
        "s",
        0.10,
        "extra",
        process_noise=0.02,
        min_abs=2e-6,
        worse="more CPU",
        better="less CPU",
        description="CPU seconds per sample over the main process and every worker (CPU-bound cases)",
    ),
    Metric(
        "feed_samples_per_s",
        "higher",
        "samples/s",
        0.10,
        "rounds",
        process_noise=0.015,
        description="samples made ready on the GPU per second, one value per round (CUDA cases)",
    ),
    Metric(
        "h2d_bytes_per_s",
        "higher",
        "B/s",
        0.10,
        "rounds",
        process_noise=0.015,
        description="host-to-device bytes per second, one value per round (CUDA cases)",
    ),
    Metric(
        "accelerator_utilization",
        "higher",
        "1",
        0.10,
        "rounds",
        process_noise=0.015,
        worse="lower",
        better="higher",
        description="simulated compute time / wall time over the steady state (MLPerf AU), per round (CUDA cases)",
    ),
)

#: Every gated metric by name, in report order.
METRICS: Mapping[str, Metric] = {m.name: m for m in _METRICS}
