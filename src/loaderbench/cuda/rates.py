"""The arithmetic behind every CUDA metric, as pure functions over plain numbers.

Nothing here touches a GPU.  The CUDA consumer reads its CUDA events into
:class:`StepTiming` values and hands them to these functions, so each formula
(calibration, bandwidth, accelerator utilisation, data wait) is unit-tested
with made-up timings on a CPU-only machine.

Units: CUDA events report milliseconds (``Event.elapsed_time``), so the step
timings are in ms; every metric that leaves this module is in SI units
(seconds, bytes, bytes per second).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from loaderbench.errors import NotMeasured


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation between ranks (numpy's default); NaN for none."""
    if not 0 <= q <= 100:
        raise ValueError(f"q={q!r}: a percentile lies in 0..100. Use e.g. 95.")
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def sleep_cycles_per_ms(cycles: int, elapsed_ms: Sequence[float]) -> float:
    """``torch.cuda._sleep`` cycles per millisecond: ``cycles`` over the median of its timed runs.

    The median, not the mean, so one run that caught a clock ramp or a
    preemption does not skew the rate.  Raises :class:`NotMeasured` when the
    timings cannot give a rate (no runs, or a non-positive median).
    """
    if cycles <= 0:
        raise NotMeasured(f"cycles={cycles!r}: calibration needs a positive cycle count")
    good = [t for t in elapsed_ms if math.isfinite(t)]
    if not good:
        raise NotMeasured("sleep calibration: no timed run gave a finite duration")
    mid = statistics.median(good)
    if mid <= 0:
        raise NotMeasured(f"sleep calibration: median duration {mid!r} ms is not positive (timer resolution?)")
    return cycles / mid


def cycles_for_ms(step_ms: float, cycles_per_ms: float) -> int:
    """Cycles that make ``torch.cuda._sleep`` last ``step_ms`` (0 for a pure-feed step)."""
    if step_ms <= 0:
        return 0
    return max(1, round(step_ms * cycles_per_ms))


def bytes_per_s(nbytes: float, seconds: float) -> float:
    """Bandwidth; NaN when the duration is not positive (never an infinite rate)."""
    return nbytes / seconds if seconds > 0 else math.nan


def copy_bandwidth_bytes_per_s(nbytes: int, elapsed_ms: Sequence[float]) -> float:
    """Bandwidth of one copy of ``nbytes`` from the median of its timed repeats (ms, from CUDA events)."""
    good = [t for t in elapsed_ms if math.isfinite(t) and t > 0]
    if nbytes <= 0 or not good:
        raise NotMeasured(f"copy bandwidth: nbytes={nbytes} with {len(good)} usable timings cannot give a rate")
    return nbytes / (statistics.median(good) / 1e3)


def accelerator_utilization(compute_s: float, wall_s: float) -> float:
    """MLPerf Storage's AU: simulated compute time over wall time of the same span (NaN if no wall time).

    It can read slightly above 1 when the GPU still ran work queued before the
    span began; the consumer synchronizes at round ends to keep that small.
    """
    return compute_s / wall_s if wall_s > 0 else math.nan


@dataclass(frozen=True, slots=True)
class StepTiming:
    """One consumer step, read back from its CUDA events after the round's synchronize.

    ``copy_ms``: the host-to-device copies of the batch (events around them on
    the stream that ran them).  ``compute_ms``: the simulated compute kernel.
    ``gpu_wait_ms``: on the compute stream, from the end of the previous step's
    compute to the start of this one's; the time the GPU sat waiting for this
    batch (its loading and, in the plain loop, its copy).  ``None`` for the
    first step after a synchronize, where the gap would measure the harness.
    ``host_wait_s``: host time from the previous ``consume()`` returning to
    this batch arriving in ``consume()``, i.e. the time spent in the
    DataLoader's ``next()``; ``None`` likewise after a synchronize.
    """

    copy_ms: float
    compute_ms: float
    gpu_wait_ms: float | None
    nbytes: int
    host_wait_s: float | None = None


def round_metrics(
    steps: Sequence[StepTiming], samples: int, seconds: float, *, simulated_compute: bool
) -> dict[str, float]:
    """Per-round CUDA metrics from the round's steps and its wall time (which includes the final synchronize).

    - ``feed_samples_per_s``: samples made ready on the GPU per wall second.
    - ``h2d_bytes_per_s``: bytes copied host-to-device per wall second (what the pipeline sustains).
    - ``h2d_copy_bytes_per_s``: bytes per second of copy time alone (how fast each copy ran; pinned vs pageable).
    - ``accelerator_utilization``: summed compute kernel time over wall time; left out for a pure-feed
      step (``simulated_compute=False``), where there is no compute to utilise.
    - ``data_wait_mean_s`` / ``data_wait_p95_s``: the GPU's wait per step (``StepTiming.gpu_wait_ms``).
    - ``host_wait_mean_s`` / ``host_wait_p95_s``: the host's wait in the loader per step.
    - ``step_ms_measured``: median compute kernel time, to check the sleep calibration held.

    A metric whose inputs are missing is left out rather than invented.
    """
    out: dict[str, float] = {}
    if seconds > 0:
        out["feed_samples_per_s"] = samples / seconds
        out["h2d_bytes_per_s"] = bytes_per_s(sum(s.nbytes for s in steps), seconds)
    copy_s = sum(s.copy_ms for s in steps) / 1e3
    if steps and copy_s > 0:
        out["h2d_copy_bytes_per_s"] = sum(s.nbytes for s in steps) / copy_s
    if simulated_compute and steps and seconds > 0:
        out["accelerator_utilization"] = accelerator_utilization(sum(s.compute_ms for s in steps) / 1e3, seconds)
        out["step_ms_measured"] = statistics.median(s.compute_ms for s in steps)
    gpu_waits = [s.gpu_wait_ms / 1e3 for s in steps if s.gpu_wait_ms is not None]
    if gpu_waits:
        out["data_wait_mean_s"] = statistics.fmean(gpu_waits)
        out["data_wait_p95_s"] = percentile(gpu_waits, 95)
    host_waits = [s.host_wait_s for s in steps if s.host_wait_s is not None]
    if host_waits:
        out["host_wait_mean_s"] = statistics.fmean(host_waits)
        out["host_wait_p95_s"] = percentile(host_waits, 95)
    return out


def round_steps(pending: Sequence[StepTiming], samples: int, batch_size: int | None) -> Sequence[StepTiming]:
    """The steps that belong to the round just timed.

    The harness consumes warm-up batches before the first round without a
    synchronize in between, so the steps since the last synchronize can
    include them.  When the batch size is known, the round's own steps are the
    last ``samples // batch_size``; otherwise all pending steps are used.
    """
    if batch_size is None or batch_size < 1:
        return pending
    k = samples // batch_size
    return pending[-k:] if 0 < k < len(pending) else pending


#: Relative deviation of the measured step from the requested one that earns a note.
STEP_TOLERANCE = 0.05


def step_notes(requested_ms: float, measured_ms: float | None) -> list[str]:
    """A note when the simulated step ran off its calibration (the GPU's clocks changed), else none."""
    if requested_ms <= 0 or measured_ms is None or not math.isfinite(measured_ms):
        return []
    off = measured_ms / requested_ms - 1
    if abs(off) <= STEP_TOLERANCE:
        return []
    return [
        f"the simulated step measured {measured_ms:.3f} ms against {requested_ms:g} ms requested ({off:+.0%}): "
        "the GPU clock changed since the sleep calibration (power or thermal limits, another process); "
        "AU is computed from the measured step"
    ]


def medians(rounds: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """The median of each per-round metric (what the case reports)."""
    return {name: statistics.median(values) for name, values in rounds.items() if values}


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator`` or ``None`` when either is missing, NaN or the denominator is not positive."""
    if numerator is None or denominator is None:
        return None
    if not (math.isfinite(numerator) and math.isfinite(denominator)) or denominator <= 0:
        return None
    return numerator / denominator


#: The GPU counts as starved when it waits for data more than this share of its step.
STARVED_SHARE = 0.1


def feed_bound(
    step_ms: float | None, data_wait_s: float | None, host_wait_s: float | None, copy_s: float | None
) -> tuple[str | None, str]:
    """What limits the feed, per batch, and the numbers that say so: ``GPU-bound`` when the GPU waits for data
    at most :data:`STARVED_SHARE` of its step; else ``loader-bound`` when the host waits longer in the loader's
    ``next()`` than a batch's copy takes, ``copy-bound`` when not.  ``(None, why)`` when a figure is missing."""
    if host_wait_s is None or copy_s is None:
        return None, "not measured: no host wait or copy time (fewer than two steps per round?)"
    figures = f"loader {host_wait_s * 1e3:.3g} ms, copy {copy_s * 1e3:.3g} ms"
    if step_ms:
        if data_wait_s is None:
            return None, "not measured: no GPU data wait (fewer than two steps per round?)"
        figures += f", step {step_ms:.3g} ms, GPU data wait {data_wait_s * 1e3:.3g} ms per batch"
        if data_wait_s <= STARVED_SHARE * step_ms / 1e3:
            return "GPU-bound", figures
    return ("loader-bound" if host_wait_s >= copy_s else "copy-bound"), figures
