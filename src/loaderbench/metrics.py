"""The gated metrics: the one place that says what the regression gate compares.

Each :class:`Metric` names where its raw values come from in a
:class:`~loaderbench.measurement.Measurement`, which way is better, its unit,
its default threshold, and two noise guards:

* ``process_noise``: the least session-to-session noise (standard deviation
  of log values) the gate assumes, however closely a baseline's own runs agree;
  with a one-run baseline it is all the gate knows.  The figures are what the
  2-core CI machine class shows for its quietest cases (DESIGN.md section 5 and
  the self-check): about 1.5% for sleep-bound throughput, 5% for TTFB and the
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
one-off metrics (``source='value'``) have one value per measurement, so their
evidence comes only from repeated measurements.  A metric missing from a
measurement (a CPU case has no ``feed_samples_per_s``) is skipped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from loaderbench import stats
from loaderbench.errors import UsageError
from loaderbench.measurement import Measurement

Direction = Literal["higher", "lower"]
Source = Literal["rounds", "value"]


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

    def run_value(self, run: Run) -> float:
        """The value of one measurement: the median of its rounds, or the one-off value (NaN if absent)."""
        if self.source == "rounds":
            return stats.median(run.rounds.get(self.name, ()))
        value = run.values.get(self.name)
        return math.nan if value is None else float(value)

    def run_rounds(self, run: Run) -> tuple[float, ...]:
        """The raw per-round values of one measurement (empty for one-off metrics)."""
        if self.source == "rounds":
            return tuple(v for v in run.rounds.get(self.name, ()) if math.isfinite(v))
        return ()

    def slowdown(self, baseline: float, current: float) -> float:
        """The change as a factor that is above 1 when ``current`` is worse than ``baseline``."""
        return baseline / current if self.higher_is_better else current / baseline

    def format_value(self, value: float) -> str:
        """A short human rendering in the metric's unit."""
        if math.isnan(value):
            return "n/a"
        if self.unit == "bytes":
            return f"{value / 2**20:.1f} MiB"
        if self.unit == "s":
            return f"{value * 1e3:.1f} ms" if abs(value) < 10 else f"{value:.2f} s"
        if self.unit == "1":
            return f"{value:.3f}"
        return f"{value:.4g} {self.unit}"


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


def get(name: str, *, argument: str = "metric") -> Metric:
    """The metric called ``name``; :class:`UsageError` naming the known ones otherwise."""
    try:
        return METRICS[name]
    except KeyError:
        raise UsageError(f"{argument}={name!r}: unknown metric. Use one of {', '.join(METRICS)}.") from None


@dataclass(frozen=True, slots=True)
class Run:
    """The raw values of one measurement that the gate needs (and the baseline stores).

    ``rounds`` holds every per-round series of the measurement (not only the
    gated ones); ``values`` holds the one-off phases and the peak memory;
    ``recorded`` is when the baseline recorded it and ``session`` an id shared by
    the runs one process recorded (both empty for a fresh measurement).
    """

    rounds: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    values: Mapping[str, float] = field(default_factory=dict)
    recorded: str = ""
    session: str = ""

    @classmethod
    def from_measurement(cls, m: Measurement) -> Run:
        rounds = {k: tuple(float(v) for v in vs) for k, vs in m.rounds.items()}
        values: dict[str, float] = {k: float(v) for k, v in m.phases.items() if v is not None and math.isfinite(v)}
        if m.peak_memory_bytes is not None:
            values["peak_memory_bytes"] = float(m.peak_memory_bytes)
        return cls(rounds=rounds, values=values)


def present(metric: Metric, runs: Sequence[Run]) -> bool:
    """Whether every run has a finite value for ``metric``."""
    return bool(runs) and all(math.isfinite(metric.run_value(r)) and metric.run_value(r) > 0 for r in runs)


# --- thresholds ----------------------------------------------------------------------------

_THRESHOLD_EXAMPLES = "Write e.g. 10%, samples_per_s=5%,ttfb_s=25% or io-cpu-w2-bs32:samples_per_s=20%"


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Tolerated change per metric, as a fraction (0.10: 1.10x).  Most specific wins:
    ``cases[(case_id, metric)]``, then ``metrics[metric]``, then ``default``, then the metric's own default."""

    default: float | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    cases: Mapping[tuple[str, str], float] = field(default_factory=dict)

    def get(self, case_id: str, metric: Metric) -> float:
        if (case_id, metric.name) in self.cases:
            return self.cases[(case_id, metric.name)]
        if metric.name in self.metrics:
            return self.metrics[metric.name]
        return metric.threshold if self.default is None else self.default


def parse_thresholds(text: str, *, option: str = "--loader-threshold") -> Thresholds:
    """Parse ``10%``, ``samples_per_s=5%,ttfb_s=25%`` or ``CASE:METRIC=20%`` (comma-separated, mixable).

    A value is a percentage (``10%``) or a fraction below 1 (``0.1``).
    Raises :class:`UsageError` naming ``option=text`` and the fix.
    """
    default: float | None = None
    per_metric: dict[str, float] = {}
    per_case: dict[tuple[str, str], float] = {}
    items = [item.strip() for item in text.split(",")]
    if not any(items):
        raise UsageError(f"{option}={text!r}: empty. {_THRESHOLD_EXAMPLES}.")
    for item in items:
        if not item:
            raise UsageError(f"{option}={text!r}: an empty item between commas. {_THRESHOLD_EXAMPLES}.")
        key, sep, value = item.rpartition("=")
        fraction = _fraction(value.strip(), option, text)
        if not sep:
            default = fraction
            continue
        key = key.strip()
        case, colon, name = key.rpartition(":")
        if name.strip() not in METRICS:
            raise UsageError(
                f"{option}={text!r}: {name.strip()!r} is not a gated metric. Use one of {', '.join(METRICS)}."
            )
        if colon:
            if not case.strip():
                raise UsageError(f"{option}={text!r}: {item!r} names no case before ':'. {_THRESHOLD_EXAMPLES}.")
            per_case[(case.strip(), name.strip())] = fraction
        else:
            per_metric[name.strip()] = fraction
    return Thresholds(default=default, metrics=per_metric, cases=per_case)


def _fraction(value: str, option: str, text: str) -> float:
    percent = value.endswith("%")
    number = value[:-1].strip() if percent else value
    try:
        parsed = float(number)
    except ValueError:
        raise UsageError(f"{option}={text!r}: {value!r} is not a number. {_THRESHOLD_EXAMPLES}.") from None
    if not math.isfinite(parsed):
        raise UsageError(f"{option}={text!r}: {value!r} is not a finite number. {_THRESHOLD_EXAMPLES}.")
    if parsed < 0:
        raise UsageError(f"{option}={text!r}: {value!r} is negative; a threshold is a tolerated change. Use e.g. 10%.")
    if percent:
        return parsed / 100.0
    if parsed >= 1:
        raise UsageError(
            f"{option}={text!r}: {value!r} is ambiguous. Write {value}% for a percentage, or a fraction like 0.1."
        )
    return parsed
