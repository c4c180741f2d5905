"""NVML for the simulated device: a ``pynvml``-shaped module whose readings come from the device's timeline.

Like the driver's: GPU utilisation is the share of the last 1/6 s in which a kernel ran, PCIe receive
throughput the host-to-device bytes of the last 20 ms (in KB/s, as NVML reports it), memory the bytes
reserved.  So the consumer's NVML windows, its summary and the reports run on a CPU machine too.
"""

from __future__ import annotations

import types
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from loaderbench.testing.simulated_gpu import SimulatedGpu

#: NVML's averaging windows (utilisation: 1/6 s to 1 s; PCIe throughput: 20 ms).
UTIL_WINDOW_S = 1 / 6
PCIE_WINDOW_S = 0.02
_RX = 1
PCIE_GENERATION, PCIE_WIDTH = 3, 16
#: The simulated device's UUID, as NVML and the consumer see it.
SIMULATED_GPU_UUID = "GPU-loaderbench-simulated-0"


def _overlap(start: float, end: float, lo: float, hi: float) -> float:
    return max(0.0, min(end, hi) - max(start, lo))


def utilization_percent(gpu: SimulatedGpu, window_s: float = UTIL_WINDOW_S) -> float:
    now = gpu.now()
    with gpu._lock:
        busy = sum(_overlap(s, e, now - window_s, now) for s, e, kind, _ in gpu.activity if kind == "kernel")
    return min(100.0, 100.0 * busy / window_s)


def pcie_rx_kb_per_s(gpu: SimulatedGpu, window_s: float = PCIE_WINDOW_S) -> float:
    now = gpu.now()
    with gpu._lock:
        moved = sum(
            n * _overlap(s, e, now - window_s, now) / (e - s)
            for s, e, kind, n in gpu.activity
            if kind == "copy" and e > s
        )
    return moved / window_s / 1000


def simulated_pynvml(gpu: SimulatedGpu) -> types.ModuleType:
    """A module with the handful of ``pynvml`` calls :class:`~loaderbench.cuda.nvml.NvmlSampler` makes."""
    mod = types.ModuleType("pynvml_simulated")

    def handle_by_uuid(uuid: str) -> object:
        if uuid != SIMULATED_GPU_UUID:
            raise LookupError(f"NVML_ERROR_NOT_FOUND: uuid={uuid!r} is not the simulated GPU")
        return gpu

    mod.NVML_PCIE_UTIL_RX_BYTES = _RX  # type: ignore[attr-defined]
    mod.nvmlInit = lambda: None  # type: ignore[attr-defined]
    mod.nvmlShutdown = lambda: None  # type: ignore[attr-defined]
    mod.nvmlDeviceGetHandleByUUID = handle_by_uuid  # type: ignore[attr-defined]
    mod.nvmlDeviceGetHandleByIndex = lambda index: gpu  # type: ignore[attr-defined]
    mod.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(  # type: ignore[attr-defined]
        gpu=round(utilization_percent(h)), memory=0
    )
    mod.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=h.reserved)  # type: ignore[attr-defined]
    mod.nvmlDeviceGetPcieThroughput = lambda h, counter: int(pcie_rx_kb_per_s(h))  # type: ignore[attr-defined]
    # the default 12 GB/s engine sits on a PCIe gen3 x16 link (spec line 15.75 GB/s)
    for name, value in (("Generation", PCIE_GENERATION), ("Width", PCIE_WIDTH)):
        setattr(mod, f"nvmlDeviceGetCurrPcieLink{name}", lambda h, v=value: v)
        setattr(mod, f"nvmlDeviceGetMaxPcieLink{name}", lambda h, v=value: v)
    return mod
