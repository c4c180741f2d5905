"""A simulated CUDA device: the :class:`~loaderbench.cuda.ops.GpuOps` seam, on a machine without a GPU.

It exists to test the suite, never to stand in for a GPU: ``pytest --benchmark --loader-device=cuda
--loader-simulated-gpu`` runs the CUDA cases through it, every record says ``simulated_gpu: true``, every case
id ends in ``-simgpu``, and the baseline fingerprint's GPU model is :data:`SIMULATED_GPU_NAME`, so its numbers
are never compared with a real GPU's.

The model runs in real wall-clock time (or on a :class:`~loaderbench.clock.FakeClock`, for exact tests):

- **streams** are queues: work on a stream starts when the stream's earlier work is done and not before the
  host enqueued it; ``wait_event`` makes a stream wait for an event recorded on another;
- **one copy engine** for host-to-device copies, shared by all streams, at ``h2d_bytes_per_s`` from pinned
  memory and ``pageable_fraction`` of that from pageable memory (staged through a driver buffer);
- **CUDA's host synchronisation rules**: a copy from pinned memory with ``non_blocking=True`` returns at once;
  a blocking copy, and *any* copy from pageable memory (``non_blocking`` or not, as in real CUDA), blocks the
  host until the copy is done, which on a busy stream includes the work queued before it;
- **events** take the time at which their stream reaches them; ``elapsed_time`` on an event the GPU has not
  reached raises like CUDA's ``device not ready``;
- **``_sleep``** occupies its stream for ``cycles / cycles_per_ms`` milliseconds, and ``synchronize`` really
  waits for it, so the host's wall time per round includes the GPU's;
- **memory**: device tensors are counted while alive (allocated, peak, and reserved until ``empty_cache``);
  a copy past ``memory_bytes`` raises ``torch.OutOfMemoryError``;
- **NVML** is simulated from the same timeline (:mod:`loaderbench.testing.simulated_nvml`);
- **faults**: ``fail_at=("sleep", 3)`` makes the third ``sleep`` raise a CUDA error, to test that a failed
  case is explained, its memory released and the next case run.

Pinned or pageable: a CPU-only torch pins nothing, so ``pinned=`` says what a GPU machine's DataLoader would
have delivered (the case's ``pin_memory``); ``None`` asks the tensor.
"""

from __future__ import annotations

import collections
import contextlib
import math
import os
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch

from loaderbench.clock import Clock, FakeClock, perf_clock
from loaderbench.cuda import rates as cm
from loaderbench.cuda.nvml import NvmlSampler
from loaderbench.cuda.ops import SIMULATED_SUFFIX
from loaderbench.errors import InvalidConfig, NotMeasured
from loaderbench.testing.simulated_nvml import SIMULATED_GPU_UUID, simulated_pynvml

#: The GPU model a simulated run reports: in ``gpu_name`` and in the baseline fingerprint's GPU list.
SIMULATED_GPU_NAME = "loaderbench simulated GPU"
#: Appended to the consumer id, and so to every case id, of a case run on the simulated device.
SIMULATED_ID = SIMULATED_SUFFIX
#: The calls ``fail_at`` can name.
FAULT_CALLS = ("to_device", "sleep", "synchronize", "record", "h2d_limit")


#: The environment variable :meth:`SimulatedGpuSpec.from_env` reads the copy bandwidth from.
H2D_ENV = "LOADERBENCH_SIMULATED_H2D_BYTES_PER_S"


@dataclass(frozen=True, slots=True)
class SimulatedGpuSpec:
    """What the simulated device is: its copy engine, its ``_sleep`` clock, its memory, and an injected fault.

    The defaults are round figures of a PCIe gen3 x16 GPU (12 GB/s pinned host-to-device copies, pageable at
    half that, a 1.41 GHz SM clock, 80 GB), chosen so the suite's transfer workload is not copy-bound on a
    small CPU machine; they are not a model of any particular GPU.
    """

    h2d_bytes_per_s: float = 12e9
    pageable_fraction: float = 0.5
    cycles_per_ms: float = 1.41e6
    memory_bytes: int = 80 * 10**9
    fail_at: tuple[str, int] | None = None

    def __post_init__(self) -> None:
        for name, fix in (
            ("h2d_bytes_per_s", "Use e.g. 12e9"),
            ("cycles_per_ms", "Use e.g. 1.41e6"),
            ("memory_bytes", "Use e.g. 80e9"),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise InvalidConfig(f"{name}={value!r}: must be a positive finite number. {fix}.")
        if not 0 < self.pageable_fraction <= 1:
            raise InvalidConfig(
                f"pageable_fraction={self.pageable_fraction!r}: must be in (0, 1]: the share of the pinned "
                "bandwidth a pageable copy gets. Use e.g. 0.5."
            )
        if self.fail_at is not None and (
            len(self.fail_at) != 2 or self.fail_at[0] not in FAULT_CALLS or int(self.fail_at[1]) < 1
        ):
            raise InvalidConfig(
                f"fail_at={self.fail_at!r}: must be (call, n) with call one of {FAULT_CALLS} and n >= 1. "
                "Use e.g. ('sleep', 3)."
            )

    @classmethod
    def from_env(cls) -> SimulatedGpuSpec:
        """The device ``--loader-simulated-gpu`` runs on: the defaults, except a copy bandwidth set in
        ``$LOADERBENCH_SIMULATED_H2D_BYTES_PER_S`` (for tests of the suite: a "slower GPU" between two runs,
        from outside the code under test; it keeps the baseline key, as a degraded device would)."""
        text = os.environ.get(H2D_ENV, "").strip()
        if not text:
            return cls()
        try:
            value = float(text)
        except ValueError:
            raise InvalidConfig(f"${H2D_ENV}={text!r}: not a number of bytes per second. Use e.g. 12e9.") from None
        return cls(h2d_bytes_per_s=value)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["fail_at"] = list(self.fail_at) if self.fail_at else None
        return out


class SimStream:
    """A stream: an in-order queue whose work ends at ``busy_until`` (seconds on the device's clock)."""

    def __init__(self, gpu: SimulatedGpu, name: str) -> None:
        self.gpu, self.name, self.busy_until = gpu, name, 0.0

    def wait_event(self, event: SimEvent) -> None:
        """Later work on this stream starts after ``event`` (a GPU-side wait: the host does not block)."""
        self.gpu.calls[f"wait_event:{self.name}"] += 1
        if event.t is not None:
            self.busy_until = max(self.busy_until, event.t)

    def synchronize(self) -> None:
        self.gpu.wait_until(self.busy_until)

    def query(self) -> bool:
        return self.gpu.now() >= self.busy_until

    def __repr__(self) -> str:
        return f"<SimStream {self.name}>"


class SimEvent:
    """A CUDA event with timing: ``t`` is when its stream reached it (None until recorded)."""

    def __init__(self, gpu: SimulatedGpu) -> None:
        self.gpu, self.t = gpu, None  # type: SimulatedGpu, float | None

    def record(self, stream: SimStream | None = None) -> None:
        gpu = self.gpu
        gpu.fault("record")
        stream = stream or gpu.current
        self.t = stream.busy_until = max(stream.busy_until, gpu.now())

    def query(self) -> bool:
        return self.t is None or self.gpu.now() >= self.t

    def synchronize(self) -> None:
        if self.t is not None:
            self.gpu.wait_until(self.t)

    def elapsed_time(self, end: SimEvent) -> float:
        """Milliseconds from this event to ``end``; raises as CUDA does when either is unrecorded or not reached."""
        if self.t is None or end.t is None:
            raise RuntimeError("CUDA error: invalid resource handle (elapsed_time on an event that was never recorded)")
        if not (self.query() and end.query()):
            raise RuntimeError("CUDA error: device not ready (elapsed_time before the GPU reached the event)")
        return (end.t - self.t) * 1e3


class SimulatedGpu:
    """The simulated device (see the module docstring); implements every method of ``GpuOps``."""

    simulated = True

    def __init__(
        self, spec: SimulatedGpuSpec | None = None, *, pinned: bool | None = None, clock: Clock = perf_clock
    ) -> None:
        self.spec = spec or SimulatedGpuSpec()
        self.pinned = pinned
        self._clock = clock
        self.main = SimStream(self, "main")
        self.streams = [self.main]
        self.current = self.main
        self.copy_engine_free = 0.0
        self.calls: collections.Counter[str] = collections.Counter()
        self.allocated = self.peak = self.reserved = 0
        self._lock = threading.Lock()
        #: (start, end, kind, nbytes) of the last second's kernels and copies, for the simulated NVML
        self.activity: collections.deque[tuple[float, float, str, int]] = collections.deque()

    # --- time -------------------------------------------------------------------------
    def now(self) -> float:
        return self._clock()

    def wait_until(self, t: float) -> None:
        """Block the host until the device's clock reaches ``t`` (a FakeClock is moved there)."""
        clock = self._clock
        if isinstance(clock, FakeClock):
            clock.now = max(clock.now, t)
            return
        while (left := t - clock()) > 0:
            time.sleep(left)

    def fault(self, call: str) -> None:
        """Count ``call``; raise the injected CUDA error when ``fail_at`` names this call."""
        self.calls[call] += 1
        fail = self.spec.fail_at
        if fail is not None and fail[0] == call and self.calls[call] == int(fail[1]):
            raise RuntimeError(
                f"CUDA error: unspecified launch failure (simulated fault injected at call {fail[1]} of {call})"
            )

    def _enqueue(self, stream: SimStream, seconds: float, kind: str, nbytes: int = 0) -> float:
        start = max(self.now(), stream.busy_until)
        if kind == "copy":
            start = max(start, self.copy_engine_free)
        end = start + seconds
        stream.busy_until = end
        if kind == "copy":
            self.copy_engine_free = end
        with self._lock:
            self.activity.append((start, end, kind, nbytes))
            while self.activity and self.activity[0][1] < start - 1.0:
                self.activity.popleft()
        return end

    # --- the GpuOps methods -------------------------------------------------------------
    def available(self) -> tuple[bool, str]:
        return True, f"{SIMULATED_GPU_NAME} (--loader-simulated-gpu): {self.describe()}"

    def device(self, index: int) -> contextlib.AbstractContextManager[Any]:
        if index != 0:
            raise RuntimeError(f"CUDA error: invalid device ordinal (index={index}; the simulated machine has one GPU)")
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def stream(self, stream: SimStream) -> Iterator[None]:
        old, self.current = self.current, stream
        try:
            yield
        finally:
            self.current = old

    def current_stream(self) -> SimStream:
        return self.current

    def new_stream(self) -> SimStream:
        stream = SimStream(self, f"side{len(self.streams)}")
        self.streams.append(stream)
        return stream

    def event(self) -> SimEvent:
        return SimEvent(self)

    def sleep(self, cycles: int) -> None:
        self.fault("sleep")
        self.calls[f"sleep:{self.current.name}"] += 1
        self._enqueue(self.current, cycles / self.spec.cycles_per_ms / 1e3, "kernel")

    def to_device(self, tensor: torch.Tensor, index: int, non_blocking: bool) -> torch.Tensor:
        self.fault("to_device")
        self.calls[f"to_device:{self.current.name}"] += 1
        nbytes = tensor.element_size() * tensor.numel()
        pinned = self.is_pinned(tensor)
        out = self._allocate(tensor, nbytes)
        end = self._enqueue(self.current, nbytes / self.bandwidth(pinned), "copy", nbytes)
        if not (pinned and non_blocking):  # CUDA: blocking, or staged from pageable memory: the host waits
            self.wait_until(end)
        return out

    def is_pinned(self, tensor: torch.Tensor) -> bool:
        return bool(tensor.is_pinned()) if self.pinned is None else self.pinned

    def record_stream(self, tensor: torch.Tensor, stream: SimStream) -> None:
        self.calls[f"record_stream:{stream.name}"] += 1

    def synchronize(self, index: int) -> None:
        self.fault("synchronize")
        self.wait_until(max([self.copy_engine_free, *(s.busy_until for s in self.streams)]))

    def gpu(self, index: int) -> tuple[str, str | None]:
        return SIMULATED_GPU_NAME, SIMULATED_GPU_UUID

    def calibrate(self, index: int) -> float:
        """``_sleep`` cycles per ms, measured as the real one is: a ~2 ms sleep timed with events, median of 5."""
        cycles = cm.cycles_for_ms(2.0, self.spec.cycles_per_ms)
        times = []
        for _ in range(5):
            start, end = self.event(), self.event()
            start.record(self.main)
            self._enqueue(self.main, cycles / self.spec.cycles_per_ms / 1e3, "kernel")
            end.record(self.main)
            end.synchronize()
            times.append(start.elapsed_time(end))
        return cm.sleep_cycles_per_ms(cycles, times)

    def h2d_limit(self, nbytes: int, index: int) -> float:
        """The pinned copy limit, measured as the real one is: 3 untimed copies, then the median of 11 timed."""
        self.fault("h2d_limit")
        if nbytes <= 0:
            raise NotMeasured(f"nbytes={nbytes}: no bytes to copy")
        stream = SimStream(self, "h2d-limit")
        times = []
        for i in range(14):
            start, end = self.event(), self.event()
            start.record(stream)
            self._enqueue(stream, nbytes / self.bandwidth(True), "copy", nbytes)
            end.record(stream)
            end.synchronize()
            if i >= 3:
                times.append(start.elapsed_time(end))
        return cm.copy_bandwidth_bytes_per_s(nbytes, times)

    def reset_peak_memory(self, index: int) -> None:
        self.peak = self.allocated

    def max_memory_allocated(self, index: int) -> int:
        return self.peak

    def empty_cache(self) -> None:
        self.calls["empty_cache"] += 1
        self.reserved = self.allocated

    def nvml_sampler(self, index: int, uuid: str | None, interval_s: float) -> NvmlSampler:
        return NvmlSampler(
            index=index, uuid=uuid, interval_s=interval_s, clock=self._clock, loader=lambda: simulated_pynvml(self)
        )

    # --- beyond GpuOps ---------------------------------------------------------------------
    def bandwidth(self, pinned: bool) -> float:
        """Host-to-device bytes per second from pinned (or pageable) memory."""
        return self.spec.h2d_bytes_per_s * (1.0 if pinned else self.spec.pageable_fraction)

    def describe(self) -> str:
        s = self.spec
        return (
            f"{s.h2d_bytes_per_s / 1e9:g} GB/s pinned H2D copy engine (pageable x{s.pageable_fraction:g}), "
            f"_sleep at {s.cycles_per_ms:g} cycles/ms, {s.memory_bytes / 1e9:g} GB"
        )

    def marks(self) -> dict[str, Any]:
        """What every record of a simulated case carries (the consumer adds it to its metrics)."""
        return {
            "simulated_gpu": True,
            "simulated_gpu_spec": self.spec.as_dict(),
            "simulated_gpu_note": (
                f"measured on the {SIMULATED_GPU_NAME} (--loader-simulated-gpu: {self.describe()}), not on a GPU: "
                "the CUDA figures test the suite, not hardware"
                + ("; batches count as pinned because pin_memory=True" if self.pinned else "")
            ),
        }

    def _allocate(self, tensor: torch.Tensor, nbytes: int) -> torch.Tensor:
        if self.allocated + nbytes > self.spec.memory_bytes:
            raise torch.OutOfMemoryError(
                f"CUDA out of memory. Tried to allocate {nbytes} bytes on the {SIMULATED_GPU_NAME} "
                f"({self.allocated} of {self.spec.memory_bytes} bytes allocated)"
            )
        out = tensor.detach()  # a new tensor object: its lifetime is the device copy's
        self.allocated += nbytes
        self.peak = max(self.peak, self.allocated)
        self.reserved = max(self.reserved, self.allocated)
        weakref.finalize(out, self._free, nbytes)
        return out

    def _free(self, nbytes: int) -> None:
        self.allocated -= nbytes
