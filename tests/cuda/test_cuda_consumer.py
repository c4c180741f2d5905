"""The CUDA consumer's bookkeeping and what NVML tells it, on a CPU-only machine.

The consumer runs against the simulated device (:class:`~loaderbench.testing.simulated_gpu.SimulatedGpu`) driven
by a fake host clock, so every figure is exact; NVML's sampling and its fallbacks run against fake ``pynvml``
modules.  Nothing here asserts a real timing.  The spec, the arithmetic and the real-GPU tests are in
test_cuda.py.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest
import torch

from loaderbench.clock import FakeClock
from loaderbench.cuda import (
    NVML_FIELDS,
    CudaConsumer,
    CudaSpec,
    cuda_available,
    parent_cuda_initialized,
)
from loaderbench.cuda.nvml import NvmlSample, NvmlSampler, import_pynvml, nvml_uuid, summarize
from loaderbench.errors import NotMeasured
from loaderbench.testing.simulated_gpu import SIMULATED_GPU_NAME, SimulatedGpu, SimulatedGpuSpec

HAS_GPU = cuda_available()[0]
no_gpu = pytest.mark.skipif(HAS_GPU, reason="checks the CPU-only behaviour; this machine has a CUDA GPU")


# --- NVML -------------------------------------------------------------------------------


class _NVMLError(Exception):
    pass


def _fake_pynvml(*, init_error: bool = False, pcie_error: bool = False) -> types.ModuleType:
    mod = types.ModuleType("pynvml")
    calls: dict[str, int] = {"pcie": 0, "shutdown": 0}

    def init() -> None:
        if init_error:
            raise _NVMLError("Driver Not Loaded")

    def pcie(handle: object, counter: int) -> int:
        calls["pcie"] += 1
        assert counter == 1
        if pcie_error:
            raise _NVMLError("Not Supported")
        return 25_000_000  # KB/s

    def shutdown() -> None:
        calls["shutdown"] += 1

    mod.NVML_PCIE_UTIL_RX_BYTES = 1  # type: ignore[attr-defined]
    mod.nvmlInit = init  # type: ignore[attr-defined]
    mod.nvmlShutdown = shutdown  # type: ignore[attr-defined]
    mod.nvmlDeviceGetHandleByUUID = lambda uuid: ("h", uuid)  # type: ignore[attr-defined]
    mod.nvmlDeviceGetHandleByIndex = lambda i: ("h", i)  # type: ignore[attr-defined]
    mod.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=87, memory=10)  # type: ignore[attr-defined]
    mod.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=2_000_000_000)  # type: ignore[attr-defined]
    mod.nvmlDeviceGetPcieThroughput = pcie  # type: ignore[attr-defined]
    mod.calls = calls  # type: ignore[attr-defined]
    return mod


def test_nvml_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    with pytest.raises(ImportError):
        import_pynvml()
    sampler = NvmlSampler()
    assert sampler.start() is False
    assert sampler.status.startswith("not measured: pynvml is not importable")
    assert "pip install nvidia-ml-py" in sampler.status
    assert sampler.stop() == ()
    summary = sampler.summary([(0.0, 1.0)])
    assert set(summary) == set(NVML_FIELDS)
    assert summary["nvml_status"] == sampler.status
    assert all(summary[k] is None for k in NVML_FIELDS if k != "nvml_status")


def test_nvml_init_failure() -> None:
    sampler = NvmlSampler(loader=lambda: _fake_pynvml(init_error=True))
    assert sampler.start() is False
    assert sampler.status == "not measured: nvmlInit failed (_NVMLError: Driver Not Loaded)"
    assert sampler.summary()["nvml_gpu_util_percent_mean"] is None


def test_nvml_samples_in_a_thread_and_reports_unsupported_fields() -> None:
    fake = _fake_pynvml(pcie_error=True)
    clock = FakeClock(step=1.0)
    sampler = NvmlSampler(uuid="GPU-abc", interval_s=0.001, clock=clock, loader=lambda: fake)
    assert sampler.start()
    samples = sampler.stop()
    assert samples  # start() takes one before the thread runs
    assert samples[0] == NvmlSample(t=0.0, gpu_util_percent=87.0, mem_used_bytes=2e9, pcie_rx_bytes_per_s=None)
    assert fake.calls["pcie"] == 1  # an unsupported query is not asked again
    assert fake.calls["shutdown"] == 1
    summary = sampler.summary()
    assert summary["nvml_status"] == "ok; pcie_rx: _NVMLError: Not Supported"
    assert summary["nvml_gpu_util_percent_mean"] == 87.0
    assert summary["nvml_mem_used_bytes_max"] == 2_000_000_000
    assert summary["nvml_pcie_rx_bytes_per_s_mean"] is None


def test_nvml_pcie_kb_is_converted_to_bytes_and_index_fallback_is_noted() -> None:
    sampler = NvmlSampler(index=3, interval_s=60, loader=_fake_pynvml)
    assert sampler.start()
    sampler.stop()
    summary = sampler.summary()
    assert summary["nvml_pcie_rx_bytes_per_s_mean"] == 25e9
    assert "no UUID from torch, sampled NVML device index 3" in summary["nvml_status"]


def test_nvml_summary_keeps_the_steady_state_windows() -> None:
    samples = [
        NvmlSample(t=0.5, gpu_util_percent=0.0, mem_used_bytes=1e9, pcie_rx_bytes_per_s=0.0),
        NvmlSample(t=1.5, gpu_util_percent=90.0, mem_used_bytes=3e9, pcie_rx_bytes_per_s=20e9),
        NvmlSample(t=2.5, gpu_util_percent=100.0, mem_used_bytes=2e9, pcie_rx_bytes_per_s=None),
        NvmlSample(t=9.0, gpu_util_percent=0.0, mem_used_bytes=9e9, pcie_rx_bytes_per_s=0.0),
    ]
    s = summarize(samples, "ok", windows=[(1.0, 2.0), (2.0, 3.0)])
    assert s["nvml_samples"] == 2
    assert s["nvml_gpu_util_percent_mean"] == 95.0
    assert s["nvml_gpu_util_percent_max"] == 100.0
    assert s["nvml_mem_used_bytes_max"] == 3_000_000_000
    assert s["nvml_pcie_rx_bytes_per_s_mean"] == 20e9
    empty = summarize(samples, "ok", windows=[(3.0, 4.0)])
    assert empty["nvml_samples"] == 0
    assert empty["nvml_gpu_util_percent_mean"] is None
    assert "none of the 4 samples fell inside the steady-state rounds" in empty["nvml_status"]


def test_nvml_uuid() -> None:
    assert nvml_uuid("58f1a9a0-1111") == "GPU-58f1a9a0-1111"
    assert nvml_uuid("GPU-58f1") == "GPU-58f1"
    assert nvml_uuid("MIG-1") == "MIG-1"
    assert nvml_uuid(None) is None
    assert nvml_uuid("") is None


# --- the consumer against a fake GPU ----------------------------------------------------


def _gpu(clock: FakeClock, *, pinned: bool | None = True, **spec: Any) -> SimulatedGpu:
    """The simulated device on a fake clock: a 4000 bytes/ms copy engine, ``_sleep`` at 1000 cycles/ms."""
    return SimulatedGpu(SimulatedGpuSpec(h2d_bytes_per_s=4e6, cycles_per_ms=1000.0, **spec), pinned=pinned, clock=clock)


def _streams_used(gpu: SimulatedGpu, call: str) -> set[str]:
    return {k.split(":", 1)[1] for k, n in gpu.calls.items() if k.startswith(f"{call}:") and n}


BATCH = torch.zeros(4, 250)  # 4 samples, 4000 bytes: one fake millisecond of copy (pinned)


def _drive(
    spec: CudaSpec,
    *,
    arrive_ms: float,
    rounds: int = 3,
    per_round: int = 20,
    warmup: int = 3,
    batch_size: int | None = 4,
    pinned: bool = True,
) -> tuple[CudaConsumer, SimulatedGpu, list[dict[str, float]]]:
    """Run the harness's sequence (warm-up, then rounds ending in sync) with each next() taking arrive_ms."""
    clock = FakeClock()
    gpu = _gpu(clock, pinned=pinned)
    consumer = CudaConsumer(spec, batch_size=batch_size, clock=clock, ops=gpu)
    for _ in range(warmup):
        clock.advance(arrive_ms / 1e3)
        consumer.consume(BATCH)
    out = []
    for _ in range(rounds):
        start = clock()
        for _ in range(per_round):
            clock.advance(arrive_ms / 1e3)
            consumer.consume(BATCH)
        consumer.sync()
        out.append(dict(consumer.round_metrics(per_round * 4, clock() - start)))
    return consumer, gpu, out


def test_plain_loop_serialises_copy_and_compute() -> None:
    # GPU-bound: batches are ready at once; each step is a 1 ms copy then 5 ms compute on one stream
    _, gpu, rounds = _drive(CudaSpec(step_ms=5), arrive_ms=0.0)
    m = rounds[-1]
    assert _streams_used(gpu, "to_device") == {"main"}
    assert m["accelerator_utilization"] == pytest.approx(100 / 120)
    assert m["data_wait_mean_s"] == pytest.approx(0.001)  # the copy, between two computes
    assert m["step_ms_measured"] == pytest.approx(5.0)
    assert m["h2d_copy_bytes_per_s"] == pytest.approx(4e6)
    assert m["feed_samples_per_s"] == pytest.approx(80 / 0.120)


def test_prefetcher_hides_the_copy_behind_compute() -> None:
    _, gpu, rounds = _drive(CudaSpec(step_ms=5, pipeline="prefetcher"), arrive_ms=0.0)
    m = rounds[-1]
    assert _streams_used(gpu, "to_device") == {"side1"}
    # the compute stream waits for each copy, and the allocator is told the copies are used there
    assert _streams_used(gpu, "wait_event") == _streams_used(gpu, "record_stream") == {"main"}
    assert gpu.calls["wait_event:main"] == gpu.calls["record_stream:main"] == 3 + 3 * 20
    # only the first copy of a round is exposed: 1 + 20 * 5 ms
    assert m["accelerator_utilization"] == pytest.approx(100 / 101)
    assert m["data_wait_mean_s"] == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("pipeline", "mean_wait_s"),
    [
        ("plain", 0.005),
        # the round's last batch is flushed by sync() as soon as its copy is done: 18 waits of 5 ms and one of 0
        ("prefetcher", 18 * 0.005 / 19),
    ],
)
def test_loader_bound_waits(pipeline: Any, mean_wait_s: float) -> None:
    # each next() takes 10 ms; the GPU needs 1 + 5 ms per batch, so it waits about 5 ms per step
    _, _, rounds = _drive(CudaSpec(step_ms=5, pipeline=pipeline), arrive_ms=10.0)
    m = rounds[-1]
    assert m["data_wait_mean_s"] == pytest.approx(mean_wait_s)
    assert m["data_wait_p95_s"] == pytest.approx(0.005)
    assert m["host_wait_mean_s"] == pytest.approx(0.010)
    assert m["accelerator_utilization"] < 0.6


def test_queue_depth_bounds_the_run_ahead() -> None:
    clock = FakeClock()
    gpu = _gpu(clock)
    consumer = CudaConsumer(CudaSpec(step_ms=5, queue_depth=2), clock=clock, ops=gpu)
    for _ in range(10):
        consumer.consume(BATCH)
    # the host may be at most one step behind the GPU's queue end: 10 steps of 6 ms, host blocked until step 8,
    # after the first batch's _sleep calibration (5 sleeps of 2 ms, waited for as on a GPU)
    assert clock.now == pytest.approx(0.010 + 0.048)
    consumer.close()


def test_rounds_leave_out_warmup_only_when_the_batch_size_is_known() -> None:
    _, _, known = _drive(CudaSpec(step_ms=5), arrive_ms=0.0, warmup=5, batch_size=4)
    _, _, unknown = _drive(CudaSpec(step_ms=5), arrive_ms=0.0, warmup=5, batch_size=None)
    assert known[0]["h2d_bytes_per_s"] * known[0]["feed_samples_per_s"] ** -1 == pytest.approx(1000)
    assert unknown[0]["h2d_bytes_per_s"] > known[0]["h2d_bytes_per_s"]
    assert unknown[1] == pytest.approx(known[1])


def test_pure_feed_has_no_compute() -> None:
    consumer, gpu, rounds = _drive(CudaSpec(step_ms=0), arrive_ms=0.5)
    assert gpu.calls["sleep"] == 0
    assert "accelerator_utilization" not in rounds[-1]
    info = consumer.finish()
    assert info["accelerator_utilization"] is None
    assert info["accelerator_utilization_status"].startswith("not applicable: step_ms=0")


def test_finish_reports_every_field_and_releases_memory() -> None:
    consumer, gpu, rounds = _drive(CudaSpec(step_ms=5, pipeline="prefetcher"), arrive_ms=2.0, pinned=False)
    info = consumer.finish()
    for key in (
        "feed_samples_per_s",
        "h2d_bytes_per_s",
        "h2d_limit_bytes_per_s",
        "accelerator_utilization",
        "data_wait_mean_s",
        "data_wait_p95_s",
        "gpu_name",
        "batch_pinned",
        "sleep_cycles_per_ms",
        *NVML_FIELDS,
    ):
        assert key in info, key
    assert info["feed_samples_per_s"] == pytest.approx(sorted(r["feed_samples_per_s"] for r in rounds)[1])
    assert info["h2d_limit_bytes_per_s"] == pytest.approx(4e6)
    assert info["h2d_fraction_of_limit"] == pytest.approx(info["h2d_bytes_per_s"] / 4e6)
    # pageable copies run at the simulated pageable fraction of the pinned limit
    assert info["h2d_copy_fraction_of_limit"] == pytest.approx(0.5)
    assert info["cuda_notes"] == []
    assert info["batch_pinned"] is False
    assert info["batch_bytes"] == 4000
    assert info["gpu_name"] == SIMULATED_GPU_NAME
    assert info["simulated_gpu"] is True
    assert "not on a GPU" in info["simulated_gpu_note"]
    assert info["sleep_cycles_per_ms"] == pytest.approx(1000.0)
    assert info["cuda_spec"] == "step5ms-nb-prefetch"
    assert consumer.id == "step5ms-nb-prefetch-simgpu"
    assert info["nvml_status"].startswith("ok")
    assert gpu.calls["empty_cache"] == 1
    consumer.close()  # twice is fine


def test_finish_without_batches_measures_nothing() -> None:
    info = CudaConsumer(CudaSpec(step_ms=5), ops=_gpu(FakeClock())).finish()
    assert info["h2d_limit_bytes_per_s"] is None
    assert info["h2d_limit_status"] == "not measured: no batch was consumed"
    assert info["nvml_status"] == "not measured: no batch was consumed"
    assert info["feed_samples_per_s"] is None


@no_gpu
def test_consumer_without_gpu_raises_the_skip_reason() -> None:
    consumer = CudaConsumer(CudaSpec())
    with pytest.raises(NotMeasured, match=r"^no CUDA GPU: torch.cuda.is_available\(\) is False"):
        consumer.consume(torch.zeros(2))
    consumer.close()
    assert not parent_cuda_initialized()
