"""NVML samples taken in a background thread while a CUDA case runs.

Through ``import pynvml`` from NVIDIA's official ``nvidia-ml-py`` package (the
PyPI ``pynvml`` package is a deprecated shim).  Each sample holds the GPU
utilisation, the device memory in use and the PCIe receive (host-to-device)
throughput.  NVML's numbers are coarse: utilisation is averaged by the driver
over 1/6 s to 1 s, and PCIe throughput over 20 ms, so they corroborate the
CUDA-event metrics rather than replace them.

When NVML cannot be used (the package is missing, the library is not found,
``nvmlInit`` fails, or one query is unsupported, as on some virtual GPUs) the
affected fields are ``None`` and ``nvml_status`` says why.  The case runs on
either way; no number is ever made up.
"""

from __future__ import annotations

import contextlib
import importlib
import statistics
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

#: NVML documents ``nvmlDeviceGetPcieThroughput`` in "KB/s"; read here as SI kilobytes.  The counter
#: counts bus traffic, not payload: on an H100 (PCIe 5 x16) sustained pinned copies timed with CUDA
#: events at 54.4 GB/s read as 58.7 GB/s here (x1.08), consistent with PCIe packet overhead.
PCIE_KB = 1000

#: The summary fields a CUDA case always carries (``None`` where not measured).
FIELDS = (
    "nvml_status",
    "nvml_samples",
    "nvml_gpu_util_percent_mean",
    "nvml_gpu_util_percent_max",
    "nvml_mem_used_bytes_max",
    "nvml_pcie_rx_bytes_per_s_mean",
    "nvml_pcie_rx_bytes_per_s_max",
)

Window = tuple[float, float]


@dataclass(frozen=True, slots=True)
class NvmlSample:
    """One NVML reading; a field is ``None`` where its query failed."""

    t: float
    gpu_util_percent: float | None
    mem_used_bytes: float | None
    pcie_rx_bytes_per_s: float | None


def import_pynvml() -> ModuleType:
    """``import pynvml`` (the nvidia-ml-py package); raises ImportError when it is missing."""
    return importlib.import_module("pynvml")


def nvml_uuid(torch_uuid: object) -> str | None:
    """NVML's form of a CUDA device UUID (``GPU-...``) from torch's ``device_properties.uuid``."""
    if torch_uuid is None:
        return None
    text = str(torch_uuid).strip()
    if not text:
        return None
    return text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}"


def in_windows(t: float, windows: Sequence[Window]) -> bool:
    """Whether time ``t`` lies inside any ``(start, end)`` window."""
    return any(start <= t <= end for start, end in windows)


def summarize(
    samples: Sequence[NvmlSample],
    status: str,
    *,
    windows: Sequence[Window] | None = None,
    field_errors: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The case-level NVML fields, over the samples taken inside ``windows`` (the steady-state rounds).

    ``status`` is the sampler's own state ("ok" or why NVML was unusable);
    ``field_errors`` names queries that failed, which are reported as ``None``.
    """
    out: dict[str, Any] = dict.fromkeys(FIELDS)
    if status != "ok":
        out["nvml_status"] = status
        return out
    chosen = [s for s in samples if windows is None or in_windows(s.t, windows)]
    out["nvml_samples"] = len(chosen)
    notes = [f"{name}: {why}" for name, why in sorted((field_errors or {}).items())]
    if not chosen:
        notes.append(
            f"none of the {len(samples)} samples fell inside the steady-state rounds "
            "(rounds shorter than the sampling interval?)"
        )
    out["nvml_status"] = "; ".join(["ok", *notes])

    def column(name: str) -> list[float]:
        return [float(v) for s in chosen if (v := getattr(s, name)) is not None]

    util = column("gpu_util_percent")
    if util:
        out["nvml_gpu_util_percent_mean"] = statistics.fmean(util)
        out["nvml_gpu_util_percent_max"] = max(util)
    mem = column("mem_used_bytes")
    if mem:
        out["nvml_mem_used_bytes_max"] = int(max(mem))
    rx = column("pcie_rx_bytes_per_s")
    if rx:
        out["nvml_pcie_rx_bytes_per_s_mean"] = statistics.fmean(rx)
        out["nvml_pcie_rx_bytes_per_s_max"] = max(rx)
    return out


class NvmlSampler:
    """Samples one GPU through NVML every ``interval_s`` in a daemon thread, between ``start()`` and ``stop()``.

    The device is found by UUID, so ``CUDA_VISIBLE_DEVICES`` and CUDA's own
    device order cannot make it sample the wrong GPU; without a UUID it falls
    back to the index and says so in the status.  ``loader`` and ``clock`` are
    injectable for tests.
    """

    def __init__(
        self,
        *,
        index: int = 0,
        uuid: str | None = None,
        interval_s: float = 0.05,
        clock: Callable[[], float] = time.perf_counter,
        loader: Callable[[], ModuleType] = import_pynvml,
    ) -> None:
        self.index, self.uuid, self.interval_s = index, uuid, interval_s
        self._clock, self._loader = clock, loader
        self.status = "not started"
        self.field_errors: dict[str, str] = {}
        self._samples: list[NvmlSample] = []
        self._nvml: Any = None
        self._handle: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def samples(self) -> tuple[NvmlSample, ...]:
        return tuple(self._samples)

    def start(self) -> bool:
        """Initialise NVML and start sampling; False (with ``status`` saying why) when NVML is unusable."""
        try:
            nvml = self._loader()
        except ImportError as exc:
            self.status = f"not measured: pynvml is not importable ({exc}); pip install nvidia-ml-py"
            return False
        try:
            nvml.nvmlInit()
        except Exception as exc:
            self.status = f"not measured: nvmlInit failed ({type(exc).__name__}: {exc})"
            return False
        try:
            if self.uuid is not None:
                handle = nvml.nvmlDeviceGetHandleByUUID(self.uuid)
            else:
                handle = nvml.nvmlDeviceGetHandleByIndex(self.index)
                self.field_errors["device"] = f"no UUID from torch, sampled NVML device index {self.index}"
        except Exception as exc:
            self._shutdown(nvml)
            self.status = f"not measured: NVML found no device {self.uuid or self.index} ({type(exc).__name__}: {exc})"
            return False
        self._nvml, self._handle = nvml, handle
        self.status = "ok"
        self._samples.append(self.sample_once())
        self._thread = threading.Thread(target=self._loop, name="loaderbench-nvml", daemon=True)
        self._thread.start()
        return True

    def stop(self) -> tuple[NvmlSample, ...]:
        """Stop sampling, shut NVML down, and return the samples."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._nvml is not None:
            self._shutdown(self._nvml)
            self._nvml = self._handle = None
        return self.samples

    def summary(self, windows: Sequence[Window] | None = None) -> dict[str, Any]:
        return summarize(self._samples, self.status, windows=windows, field_errors=self.field_errors)

    def sample_once(self) -> NvmlSample:
        """One reading; a failing query is recorded once in ``field_errors`` and not asked again."""
        nvml, h = self._nvml, self._handle
        t = self._clock()
        util = self._query("gpu_util", lambda: float(nvml.nvmlDeviceGetUtilizationRates(h).gpu))
        mem = self._query("mem_used", lambda: float(nvml.nvmlDeviceGetMemoryInfo(h).used))
        rx = self._query(
            "pcie_rx",
            lambda: float(nvml.nvmlDeviceGetPcieThroughput(h, nvml.NVML_PCIE_UTIL_RX_BYTES)) * PCIE_KB,
        )
        return NvmlSample(t=t, gpu_util_percent=util, mem_used_bytes=mem, pcie_rx_bytes_per_s=rx)

    def _query(self, name: str, fn: Callable[[], float]) -> float | None:
        if name in self.field_errors:
            return None
        try:
            return fn()
        except Exception as exc:
            self.field_errors[name] = f"{type(exc).__name__}: {exc}"
            return None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._samples.append(self.sample_once())

    @staticmethod
    def _shutdown(nvml: Any) -> None:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()
