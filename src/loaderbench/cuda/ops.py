"""The GPU operations the CUDA consumer uses, behind one seam (:class:`CudaOps`), and the two GPU
measurements it relies on: the ``torch.cuda._sleep`` calibration and the raw pinned host-to-device
bandwidth (the physical limit).  :class:`GpuOps` is the seam's protocol: :class:`CudaOps` implements it on a
real GPU, :class:`loaderbench.testing.simulated_gpu.SimulatedGpu` on a machine without one."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

import torch

from loaderbench.cuda import rates as cm
from loaderbench.cuda.nvml import NvmlSampler, nvml_uuid
from loaderbench.cuda.spec import cuda_available
from loaderbench.errors import NotMeasured

#: Appended to the consumer id (so to the case id) of a case measured on a simulated device.
SIMULATED_SUFFIX = "simgpu"
#: The exception note that names the CUDA call an error surfaced at (read by ``engine.explain``).
CALL_NOTE = "loaderbench: surfaced at the CUDA call "


class CudaCall:
    """``with CudaCall("torch.cuda.synchronize()"):`` a RuntimeError raised inside gets a note naming the call
    (the innermost one), so a failed case's paragraph can say where the CUDA error surfaced."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, RuntimeError) and cuda_call_of(exc) is None:
            exc.add_note(CALL_NOTE + self.name)


def cuda_call_of(exc: BaseException) -> str | None:
    """The CUDA call ``exc`` surfaced at, when a :class:`CudaCall` named it."""
    for note in getattr(exc, "__notes__", ()):
        if isinstance(note, str) and note.startswith(CALL_NOTE):
            return note[len(CALL_NOTE) :]
    return None


def _event() -> Any:
    """A CUDA event that records time (``torch.cuda.Event`` is untyped)."""
    return torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]


def _sleep(cycles: int) -> None:
    """Spin the current stream for ``cycles`` SM clock cycles (the simulated compute)."""
    torch.cuda._sleep(cycles)  # type: ignore[no-untyped-call]


def _time_sleep_ms(cycles: int) -> float:
    start, end = _event(), _event()
    start.record()
    _sleep(cycles)
    end.record()
    end.synchronize()
    return float(start.elapsed_time(end))


@functools.cache
def calibrate_sleep_cycles_per_ms(device: int = 0, *, target_ms: float = 10.0, repeats: int = 7) -> float:
    """``torch.cuda._sleep`` cycles per millisecond on ``device``, cached per process.

    ``_sleep`` spins for a number of SM clock cycles, so its duration depends
    on the clock the GPU runs at.  A probe sizes a ~``target_ms`` sleep, two
    untimed runs bring the clocks up, and the rate is the median of
    ``repeats`` runs timed with CUDA events.
    """
    with torch.cuda.device(device):
        torch.cuda.synchronize()
        probe = 1_000_000
        probe_rate = cm.sleep_cycles_per_ms(probe, [_time_sleep_ms(probe) for _ in range(3)])
        cycles = cm.cycles_for_ms(target_ms, probe_rate)
        for _ in range(2):
            _time_sleep_ms(cycles)
        return cm.sleep_cycles_per_ms(cycles, [_time_sleep_ms(cycles) for _ in range(repeats)])


@functools.cache
def measure_h2d_limit_bytes_per_s(nbytes: int, device: int = 0, *, repeats: int = 11) -> float:
    """Raw pinned host-to-device copy bandwidth for one copy of ``nbytes``, cached per size and device.

    The physical limit a pipeline is compared against: one pinned buffer to one
    device buffer, each copy timed with CUDA events after three untimed ones,
    median of ``repeats``.
    """
    if nbytes <= 0:
        raise NotMeasured(f"nbytes={nbytes}: no bytes to copy")
    with torch.cuda.device(device):
        src = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
        dst = torch.empty(nbytes, dtype=torch.uint8, device=f"cuda:{device}")
        for _ in range(3):
            dst.copy_(src, non_blocking=True)
        times = []
        for _ in range(repeats):
            start, end = _event(), _event()
            start.record()
            dst.copy_(src, non_blocking=True)
            end.record()
            end.synchronize()
            times.append(float(start.elapsed_time(end)))
        del src, dst
        return cm.copy_bandwidth_bytes_per_s(nbytes, times)


def iter_tensors(batch: Any) -> Iterator[torch.Tensor]:
    """Every tensor in a (nested) batch, in order; other leaves are not copied."""
    if isinstance(batch, torch.Tensor):
        yield batch
    elif isinstance(batch, Mapping):
        for value in batch.values():
            yield from iter_tensors(value)
    elif isinstance(batch, (list, tuple)):
        for value in batch:
            yield from iter_tensors(value)


@runtime_checkable
class GpuOps(Protocol):
    """Every GPU call the consumer makes, in one place (the seam between the consumer and a device).

    Like torch.utils.benchmark's injectable timer: the consumer's bookkeeping
    (which event is recorded where, what the prefetcher flushes, how steps are
    grouped into rounds) runs on a CPU-only machine against the simulated device.
    Streams and events are the device's own objects: the consumer calls
    ``event.record(stream)``, ``event.synchronize()``, ``event.elapsed_time(end)``
    and ``stream.wait_event(event)`` on them.  ``simulated`` is True only for a
    device that is not a GPU: the consumer marks its records with it.
    """

    simulated: bool

    def available(self) -> tuple[bool, str]: ...
    def device(self, index: int) -> AbstractContextManager[Any]: ...
    def stream(self, stream: Any) -> AbstractContextManager[Any]: ...
    def current_stream(self) -> Any: ...
    def new_stream(self) -> Any: ...
    def event(self) -> Any: ...
    def sleep(self, cycles: int) -> None: ...
    def to_device(self, tensor: torch.Tensor, index: int, non_blocking: bool) -> torch.Tensor: ...
    def is_pinned(self, tensor: torch.Tensor) -> bool: ...
    def record_stream(self, tensor: torch.Tensor, stream: Any) -> None: ...
    def synchronize(self, index: int) -> None: ...
    def gpu(self, index: int) -> tuple[str, str | None]: ...
    def calibrate(self, index: int) -> float: ...
    def h2d_limit(self, nbytes: int, index: int) -> float: ...
    def reset_peak_memory(self, index: int) -> None: ...
    def max_memory_allocated(self, index: int) -> int: ...
    def empty_cache(self) -> None: ...
    def nvml_sampler(self, index: int, uuid: str | None, interval_s: float) -> NvmlSampler: ...
    def marks(self) -> dict[str, Any]: ...


class CudaOps:
    """:class:`GpuOps` on a real GPU, through ``torch.cuda``."""

    simulated = False

    def available(self) -> tuple[bool, str]:
        return cuda_available()

    def device(self, index: int) -> AbstractContextManager[Any]:
        return torch.cuda.device(index)

    def stream(self, stream: Any) -> AbstractContextManager[Any]:
        return torch.cuda.stream(stream)

    def current_stream(self) -> Any:
        return torch.cuda.current_stream()

    def new_stream(self) -> Any:
        return torch.cuda.Stream()  # type: ignore[no-untyped-call]

    def event(self) -> Any:
        return _event()

    def sleep(self, cycles: int) -> None:
        _sleep(cycles)

    def to_device(self, tensor: torch.Tensor, index: int, non_blocking: bool) -> torch.Tensor:
        return tensor.to(torch.device("cuda", index), non_blocking=non_blocking)

    def is_pinned(self, tensor: torch.Tensor) -> bool:
        return bool(tensor.is_pinned())

    def record_stream(self, tensor: torch.Tensor, stream: Any) -> None:
        tensor.record_stream(stream)

    def synchronize(self, index: int) -> None:
        torch.cuda.synchronize(index)

    def gpu(self, index: int) -> tuple[str, str | None]:
        """(name, NVML UUID) of the device."""
        props = torch.cuda.get_device_properties(index)
        return str(props.name), nvml_uuid(getattr(props, "uuid", None))

    def calibrate(self, index: int) -> float:
        return calibrate_sleep_cycles_per_ms(index)

    def h2d_limit(self, nbytes: int, index: int) -> float:
        return measure_h2d_limit_bytes_per_s(nbytes, index)

    def reset_peak_memory(self, index: int) -> None:
        torch.cuda.reset_peak_memory_stats(index)

    def max_memory_allocated(self, index: int) -> int:
        return int(torch.cuda.max_memory_allocated(index))

    def empty_cache(self) -> None:
        torch.cuda.empty_cache()

    def nvml_sampler(self, index: int, uuid: str | None, interval_s: float) -> NvmlSampler:
        return NvmlSampler(index=index, uuid=uuid, interval_s=interval_s)

    def marks(self) -> dict[str, Any]:
        return {"simulated_gpu": False}
