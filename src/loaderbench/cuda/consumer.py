"""The CUDA consumer: feeds each batch to a GPU and measures the feed with CUDA events.

The GPU operations and the two GPU measurements it relies on are in
:mod:`loaderbench.cuda.ops`; the arithmetic is in :mod:`loaderbench.cuda.rates`
and tested there without a GPU.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from loaderbench.clock import Clock, perf_clock
from loaderbench.cuda import rates as cm
from loaderbench.cuda.nvml import FIELDS as NVML_FIELDS
from loaderbench.cuda.nvml import NvmlSampler
from loaderbench.cuda.ops import SIMULATED_SUFFIX, CudaCall, CudaOps, GpuOps, iter_tensors
from loaderbench.cuda.spec import CudaSpec
from loaderbench.errors import NotMeasured


@dataclass(slots=True)
class _Step:
    """One batch on its way through the GPU, with the CUDA events that time it."""

    copy_start: Any
    copy_end: Any
    nbytes: int
    host_wait_s: float | None
    tensors: list[torch.Tensor] = field(default_factory=list)
    compute_start: Any = None
    compute_end: Any = None
    prev_compute_end: Any = None

    def timing(self) -> cm.StepTiming:
        return cm.StepTiming(
            copy_ms=float(self.copy_start.elapsed_time(self.copy_end)),
            compute_ms=float(self.compute_start.elapsed_time(self.compute_end)),
            gpu_wait_ms=(
                None if self.prev_compute_end is None else float(self.prev_compute_end.elapsed_time(self.compute_start))
            ),
            nbytes=self.nbytes,
            host_wait_s=self.host_wait_s,
        )


class CudaConsumer:
    """Feeds each batch to a GPU and measures the feed (the harness's ``Consumer`` protocol).

    Per batch: every tensor is copied to the device (``non_blocking`` as the
    spec says), then ``torch.cuda._sleep`` simulates ``step_ms`` of compute on
    the default stream.  With ``pipeline="prefetcher"``, ``consume(batch N+1)``
    first makes the compute stream wait for batch N's copy, issues N+1's copy on
    a side stream, then enqueues N's compute, so the copy of N+1 overlaps the
    compute of N; ``sync()`` flushes the pending batch.

    ``sync()`` ends with ``torch.cuda.synchronize()``, so the harness's wall time
    per round includes the GPU's completion.  Steps are timed with CUDA events
    and read back in ``round_metrics`` (see :func:`cuda_math.round_metrics` for
    every metric).  The data wait per step is the GPU's: on the compute stream,
    the gap from the end of step N's compute to the start of step N+1's, i.e.
    how long the GPU had nothing to compute because batch N+1 was not yet loaded
    (and, in the plain loop, copied).  ``host_wait_*`` is the host's side: time
    spent in the DataLoader's ``next()`` between two ``consume()`` calls.

    Round boundaries: each round ends in a synchronize, so the first step of a
    round has no GPU or host wait (it would measure the harness), and the
    prefetcher computes the round's last batch as soon as its copy is done
    (one short wait per round).  ``queue_depth`` (:class:`CudaSpec`) bounds how
    far the host runs ahead of the GPU.

    ``batch_size`` (the config's, or 1 without batching) lets ``round_metrics``
    leave out the warm-up steps that precede the first round.  ``close()``
    releases GPU memory; ``finish()`` calls it.  One consumer per case.
    """

    def __init__(
        self,
        spec: CudaSpec,
        *,
        device: int = 0,
        batch_size: int | None = None,
        nvml_interval_s: float = 0.05,
        clock: Clock = perf_clock,
        ops: GpuOps | None = None,
    ) -> None:
        self.spec, self.device, self.batch_size = spec, device, batch_size
        self._clock, self._nvml_interval_s = clock, nvml_interval_s
        self._ops: GpuOps = ops or CudaOps()
        where = f"cuda:{device}"
        self._calls = {
            "start": CudaCall("torch.cuda.get_device_properties/current_stream/Stream and the _sleep calibration"),
            "copy": CudaCall(f"tensor.to({where!r}, non_blocking={spec.non_blocking}) (the batch's copy)"),
            "await": CudaCall("stream.wait_event/tensor.record_stream (the prefetcher's hand-over)"),
            "throttle": CudaCall("event.synchronize() (the queue_depth throttle)"),
            "compute": CudaCall("torch.cuda._sleep (the simulated step)"),
            "sync": CudaCall(f"torch.cuda.synchronize({device}) (the round's end)"),
            "timing": CudaCall("event.elapsed_time (reading the round's CUDA events)"),
            "limit": CudaCall("the pinned host-to-device limit's copies"),
            "memory": CudaCall(f"torch.cuda.max_memory_allocated({device})"),
        }
        self._started = False
        self._cycles = 0
        self._cycles_per_ms: float | None = None
        self._gpu_name: str | None = None
        self._main: Any = None
        self._side: Any = None
        self._sampler: NvmlSampler | None = None
        self._pending: _Step | None = None
        self._open: list[_Step] = []
        self._closed: list[_Step] = []
        self._inflight: collections.deque[Any] = collections.deque()
        self._last_return: float | None = None
        self._last_compute_end: Any = None
        self._batch_bytes = 0
        self._pinned: list[bool] = []
        self._rounds: dict[str, list[float]] = {}
        self._windows: list[tuple[float, float]] = []

    @property
    def id(self) -> str:
        """The spec's id (``-simgpu`` appended on a simulated device): the harness appends it to the case id (the
        baseline key), so a simulated case never shares an entry with a real GPU's."""
        return f"{self.spec.id}-{SIMULATED_SUFFIX}" if self._ops.simulated else self.spec.id

    # --- Consumer protocol ----------------------------------------------------------
    def consume(self, batch: Any) -> None:
        arrived = self._clock()
        if not self._started:
            self._start()
        host_wait = None if self._last_return is None else arrived - self._last_return
        with self._ops.device(self.device):
            if self.spec.pipeline == "plain":
                self._throttle()
                self._compute(self._copy(batch, self._main, host_wait))
            else:
                previous = self._pending
                if previous is not None:
                    self._await_copy(previous)
                self._pending = self._copy(batch, self._side, host_wait)
                if previous is not None:
                    self._throttle()
                    self._compute(previous)
        self._last_return = self._clock()

    def sync(self) -> None:
        if not self._started:
            return
        with self._ops.device(self.device):
            if self._pending is not None:
                self._await_copy(self._pending)
                self._throttle()
                self._compute(self._pending)
                self._pending = None
            with self._calls["sync"]:
                self._ops.synchronize(self.device)
        self._closed, self._open = self._open, []
        self._inflight.clear()
        self._last_return = self._last_compute_end = None

    def round_metrics(self, samples: int, seconds: float) -> Mapping[str, float]:
        now = self._clock()
        steps, self._closed = self._closed, []
        with self._calls["timing"]:
            timings = cm.round_steps([s.timing() for s in steps], samples, self.batch_size)
        metrics = cm.round_metrics(timings, samples, seconds, simulated_compute=self._cycles > 0)
        self._windows.append((now - seconds, now))
        for name, value in metrics.items():
            self._rounds.setdefault(name, []).append(value)
        return metrics

    def finish(self) -> Mapping[str, Any]:
        """Case-level metrics: medians of the per-round ones, the measured limit, NVML, the GPU."""
        out: dict[str, Any] = {"cuda_spec": self.spec.id, **{f"cuda_{k}": v for k, v in self.spec.as_dict().items()}}
        out.update(self._ops.marks())
        names = (
            "feed_samples_per_s",
            "h2d_bytes_per_s",
            "h2d_copy_bytes_per_s",
            "accelerator_utilization",
            "step_ms_measured",
            "data_wait_mean_s",
            "data_wait_p95_s",
            "host_wait_mean_s",
            "host_wait_p95_s",
        )
        out.update(dict.fromkeys(names))
        out.update(cm.medians(self._rounds))
        if self._cycles == 0:
            out["accelerator_utilization_status"] = "not applicable: step_ms=0 is a pure feed with no compute"
        if not self._started:
            out.update(
                gpu_name=None,
                batch_pinned=None,
                batch_bytes=None,
                sleep_cycles_per_ms=None,
                h2d_limit_bytes_per_s=None,
                h2d_limit_status="not measured: no batch was consumed",
                cuda_max_memory_allocated_bytes=None,
                h2d_fraction_of_limit=None,
                h2d_copy_fraction_of_limit=None,
                feed_bound=None,
                feed_bound_figures="not measured: no batch was consumed",
                cuda_notes=[],
            )
            out.update(dict.fromkeys(NVML_FIELDS), nvml_status="not measured: no batch was consumed")
            return out
        try:
            self.sync()
            out["gpu_name"] = self._gpu_name
            out["batch_pinned"] = bool(self._pinned) and all(self._pinned)
            out["batch_bytes"] = self._batch_bytes
            out["sleep_cycles_per_ms"] = self._cycles_per_ms
            with self._calls["memory"]:
                out["cuda_max_memory_allocated_bytes"] = self._ops.max_memory_allocated(self.device)
            try:
                with self._calls["limit"]:
                    out["h2d_limit_bytes_per_s"] = self._ops.h2d_limit(self._batch_bytes, self.device)
                out["h2d_limit_status"] = "ok: pinned copy of one batch's bytes, median of 11, CUDA events"
            except NotMeasured as exc:
                out["h2d_limit_bytes_per_s"], out["h2d_limit_status"] = None, f"not measured: {exc}"
            out["h2d_fraction_of_limit"] = cm.ratio(out.get("h2d_bytes_per_s"), out["h2d_limit_bytes_per_s"])
            out["h2d_copy_fraction_of_limit"] = cm.ratio(out.get("h2d_copy_bytes_per_s"), out["h2d_limit_bytes_per_s"])
            out["cuda_notes"] = cm.step_notes(self.spec.step_ms, out.get("step_ms_measured"))
            copy_s = None
            if out.get("h2d_copy_bytes_per_s") and self._batch_bytes:
                copy_s = self._batch_bytes / out["h2d_copy_bytes_per_s"]
            out["feed_bound"], out["feed_bound_figures"] = cm.feed_bound(
                out.get("step_ms_measured"), out.get("data_wait_mean_s"), out.get("host_wait_mean_s"), copy_s
            )
            assert self._sampler is not None
            self._sampler.stop()
            out.update(self._sampler.summary(self._windows))
        finally:
            self.close()
        return out

    # --- lifetime ---------------------------------------------------------------------
    def close(self) -> None:
        """Stop NVML, drop every reference to GPU memory and return the cached blocks to the driver.

        Safe to call twice and after a CUDA error (cleanup never raises, so it
        cannot hide the error that failed the case).
        """
        if self._sampler is not None:
            self._sampler.stop()
        self._pending = None
        self._open, self._closed = [], []
        self._inflight.clear()
        self._last_compute_end = None
        self._side = self._main = None
        if self._started:
            try:
                self._ops.synchronize(self.device)
                self._ops.empty_cache()
            except RuntimeError:
                pass

    def __enter__(self) -> CudaConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals ----------------------------------------------------------------------
    def _start(self) -> None:
        ops = self._ops
        ok, why = ops.available()
        if not ok:
            raise NotMeasured(why)
        self._started = True
        with self._calls["start"], ops.device(self.device):
            self._gpu_name, uuid = ops.gpu(self.device)
            self._main = ops.current_stream()
            if self.spec.pipeline == "prefetcher":
                self._side = ops.new_stream()
            self._cycles_per_ms = ops.calibrate(self.device)
            self._cycles = cm.cycles_for_ms(self.spec.step_ms, self._cycles_per_ms)
            ops.reset_peak_memory(self.device)
        self._sampler = ops.nvml_sampler(self.device, uuid, self._nvml_interval_s)
        self._sampler.start()

    def _copy(self, batch: Any, stream: Any, host_wait: float | None) -> _Step:
        tensors = list(iter_tensors(batch))
        self._pinned.append(bool(tensors) and all(self._ops.is_pinned(t) for t in tensors))
        nbytes = sum(t.element_size() * t.numel() for t in tensors)
        self._batch_bytes = max(self._batch_bytes, nbytes)
        step = _Step(self._ops.event(), self._ops.event(), nbytes, host_wait)
        with self._calls["copy"], self._ops.stream(stream):
            step.copy_start.record(stream)
            step.tensors = [self._ops.to_device(t, self.device, self.spec.non_blocking) for t in tensors]
            step.copy_end.record(stream)
        return step

    def _await_copy(self, step: _Step) -> None:
        """Make the compute stream wait for ``step``'s side-stream copy, and tell the allocator it is used there."""
        with self._calls["await"]:
            self._main.wait_event(step.copy_end)
            for t in step.tensors:
                self._ops.record_stream(t, self._main)

    def _throttle(self) -> None:
        """Block the host until at most ``queue_depth - 1`` earlier steps are still queued on the GPU."""
        while len(self._inflight) >= self.spec.queue_depth:
            with self._calls["throttle"]:
                self._inflight.popleft().synchronize()

    def _compute(self, step: _Step) -> None:
        step.compute_start, step.compute_end = self._ops.event(), self._ops.event()
        step.prev_compute_end = self._last_compute_end
        with self._calls["compute"]:
            step.compute_start.record(self._main)
            if self._cycles:
                self._ops.sleep(self._cycles)
            step.compute_end.record(self._main)
        # the sleep does not read the batch; the stream-ordered allocator keeps the memory until the queued work is done
        step.tensors = []
        self._last_compute_end = step.compute_end
        self._inflight.append(step.compute_end)
        self._open.append(step)
