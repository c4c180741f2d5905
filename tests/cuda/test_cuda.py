"""The CUDA side, tested on a CPU-only machine.

The arithmetic (calibration, bandwidth, AU, data wait) is tested on made-up
numbers; the consumer's bookkeeping runs against the simulated device
(:class:`~loaderbench.testing.simulated_gpu.SimulatedGpu`) driven by a fake host
clock, so every figure is exact; NVML's fallbacks run against fake ``pynvml`` modules.  Nothing here
asserts a real timing.  The few tests that need a real GPU skip without one.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from loaderbench.clock import FakeClock
from loaderbench.config import LoaderConfig
from loaderbench.cuda import (
    NVML_FIELDS,
    CudaConsumer,
    CudaSpec,
    check_start_method,
    cuda_available,
    fork_hazard,
    parent_cuda_initialized,
)
from loaderbench.cuda import rates as cm
from loaderbench.cuda.nvml import NvmlSample, NvmlSampler, import_pynvml, nvml_uuid, summarize
from loaderbench.errors import InvalidConfig, NotMeasured
from loaderbench.testing.simulated_gpu import SIMULATED_GPU_NAME, SimulatedGpu, SimulatedGpuSpec

#: Set in the child pytest that runs tests/cuda/test_cuda_gpu.py.
GPU_SUBPROCESS_ENV = "LOADERBENCH_GPU_SUBPROCESS"
HAS_GPU, GPU_REASON = cuda_available()
needs_gpu = pytest.mark.skipif(not HAS_GPU, reason=GPU_REASON)
no_gpu = pytest.mark.skipif(HAS_GPU, reason="checks the CPU-only behaviour; this machine has a CUDA GPU")


# --- CudaSpec -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (CudaSpec(), "step0ms-nb-plain"),
        (CudaSpec(step_ms=5), "step5ms-nb-plain"),
        (CudaSpec(step_ms=0, non_blocking=False, pipeline="prefetcher"), "step0ms-sync-prefetch"),
        (CudaSpec(step_ms=2.5, pipeline="prefetcher", queue_depth=1), "step2.5ms-nb-prefetch-q1"),
        (CudaSpec(step_ms=1.2345678), "step1.2345678ms-nb-plain"),
    ],
)
def test_spec_id(spec: CudaSpec, expected: str) -> None:
    assert spec.id == expected
    assert CudaSpec.from_id(expected) == spec


@given(
    step=st.floats(min_value=0, max_value=1e4, allow_nan=False, allow_infinity=False),
    nb=st.booleans(),
    pipeline=st.sampled_from(["plain", "prefetcher"]),
    depth=st.integers(1, 8),
)
def test_spec_id_round_trips(step: float, nb: bool, pipeline: Any, depth: int) -> None:
    spec = CudaSpec(step_ms=step, non_blocking=nb, pipeline=pipeline, queue_depth=depth)
    assert CudaSpec.from_id(spec.id) == spec


def test_spec_is_frozen_slotted_and_normalises_step() -> None:
    spec = CudaSpec(step_ms=5)
    assert isinstance(spec.step_ms, float)
    assert CudaSpec(step_ms=5) == CudaSpec(step_ms=5.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.step_ms = 1  # type: ignore[misc]
    assert not hasattr(spec, "__dict__")
    assert spec.as_dict() == {"step_ms": 5.0, "non_blocking": True, "pipeline": "plain", "queue_depth": 2}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"step_ms": -1}, "step_ms=-1: must be a finite number of milliseconds >= 0. Use 0 for a pure feed"),
        ({"step_ms": math.inf}, "step_ms=inf:"),
        ({"step_ms": math.nan}, "step_ms=nan:"),
        ({"step_ms": True}, "step_ms=True:"),
        ({"step_ms": "5"}, "step_ms='5':"),
        ({"non_blocking": 1}, "non_blocking=1: must be True or False. Pass a bool."),
        ({"pipeline": "apex"}, "pipeline='apex': is not a CUDA pipeline. Use one of ('plain', 'prefetcher')."),
        ({"queue_depth": 0}, "queue_depth=0: must be an integer >= 1."),
    ],
)
def test_spec_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidConfig) as info:
        CudaSpec(**kwargs)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize("text", ["step5ms-nb-fast", "stepxms", "step5ms-q0", "nb-plain-extra"])
def test_spec_from_bad_id(text: str) -> None:
    with pytest.raises(InvalidConfig, match=r"=.*: .*\. .*\."):
        CudaSpec.from_id(text)


# --- availability and fork safety -------------------------------------------------------


@no_gpu
def test_cuda_available_on_cpu_says_why_without_initialising_cuda() -> None:
    ok, reason = cuda_available()
    assert not ok
    assert reason.startswith("no CUDA GPU: torch.cuda.is_available() is False (")
    assert torch.__version__ in reason
    assert not parent_cuda_initialized()


def test_cuda_available_reasons(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    assert "is a CPU-only build; install a CUDA build of torch" in cuda_available()[1]
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    ok, reason = cuda_available()
    assert not ok
    assert "CUDA 13.0, no usable device or driver, CUDA_VISIBLE_DEVICES=''" in reason
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert cuda_available() == (True, f"CUDA available: 2 device(s), torch {torch.__version__}, CUDA 13.0")


def test_check_start_method() -> None:
    check_start_method(LoaderConfig(num_workers=0))
    check_start_method(LoaderConfig(num_workers=2, multiprocessing_context="spawn"))
    check_start_method(LoaderConfig(num_workers=2, multiprocessing_context="forkserver"))
    with pytest.raises(InvalidConfig) as info:
        check_start_method(LoaderConfig(num_workers=2, multiprocessing_context="fork"))
    assert str(info.value).startswith("multiprocessing_context='fork': a CUDA case with num_workers=2")
    assert "Use multiprocessing_context='spawn' or 'forkserver' for CUDA cases." in str(info.value)


def test_check_start_method_counts_the_platform_default() -> None:
    config = LoaderConfig(num_workers=1)
    if multiprocessing.get_start_method() != "fork":
        check_start_method(config)
        return
    with pytest.raises(InvalidConfig, match=r"multiprocessing_context=None: .* with fork \(the platform default\)"):
        check_start_method(config)


def test_fork_hazard(monkeypatch: pytest.MonkeyPatch) -> None:
    fork = LoaderConfig(num_workers=2, multiprocessing_context="fork")
    spawn = LoaderConfig(num_workers=2, multiprocessing_context="spawn")
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    assert fork_hazard(fork) is None
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    assert parent_cuda_initialized()
    assert "pytorch#68383" in (fork_hazard(fork) or "")
    assert fork_hazard(spawn) is None
    assert fork_hazard(LoaderConfig(num_workers=0)) is None


# --- the arithmetic ---------------------------------------------------------------------


def test_percentile_matches_numpy_linear() -> None:
    assert cm.percentile([1, 2, 3, 4], 95) == pytest.approx(3.85)
    assert cm.percentile([4, 1, 3, 2], 50) == pytest.approx(2.5)
    assert cm.percentile([7], 95) == 7
    assert math.isnan(cm.percentile([], 95))
    with pytest.raises(ValueError, match="q=101"):
        cm.percentile([1], 101)


def test_sleep_calibration_takes_the_median() -> None:
    # 10 M cycles; one run caught a clock ramp (8 ms), one a preemption (12 ms)
    assert cm.sleep_cycles_per_ms(10_000_000, [5.0, 8.0, 5.0, 12.0, 5.0]) == pytest.approx(2_000_000)
    assert cm.sleep_cycles_per_ms(1000, [2.0, 4.0]) == pytest.approx(1000 / 3)


@pytest.mark.parametrize(
    ("cycles", "timings"), [(0, [1.0]), (1000, []), (1000, [0.0, 0.0, 1.0]), (1000, [math.nan]), (-5, [1.0])]
)
def test_sleep_calibration_refuses_to_invent(cycles: int, timings: list[float]) -> None:
    with pytest.raises(NotMeasured):
        cm.sleep_cycles_per_ms(cycles, timings)


def test_cycles_for_ms() -> None:
    assert cm.cycles_for_ms(0, 1.98e6) == 0
    assert cm.cycles_for_ms(5, 1.98e6) == 9_900_000
    assert cm.cycles_for_ms(1e-9, 1.0) == 1


def test_bandwidths() -> None:
    assert cm.bytes_per_s(1e9, 0.5) == 2e9
    assert math.isnan(cm.bytes_per_s(1e9, 0))
    # a 19.3 MB batch copied in a median 0.4 ms -> 48 GB/s
    assert cm.copy_bandwidth_bytes_per_s(19_267_584, [0.5, 0.4, 0.4, 0.39, 9.0]) == pytest.approx(19_267_584 / 4e-4)
    with pytest.raises(NotMeasured):
        cm.copy_bandwidth_bytes_per_s(100, [0.0])
    with pytest.raises(NotMeasured):
        cm.copy_bandwidth_bytes_per_s(0, [1.0])


def test_accelerator_utilization_and_ratio() -> None:
    assert cm.accelerator_utilization(0.9, 1.0) == pytest.approx(0.9)
    assert math.isnan(cm.accelerator_utilization(1.0, 0.0))
    assert cm.ratio(40e9, 50e9) == pytest.approx(0.8)
    assert cm.ratio(None, 1.0) is None
    assert cm.ratio(1.0, 0.0) is None
    assert cm.ratio(math.nan, 1.0) is None


def _steps() -> list[cm.StepTiming]:
    return [
        cm.StepTiming(copy_ms=1.0, compute_ms=5.0, gpu_wait_ms=None, nbytes=1000, host_wait_s=None),
        cm.StepTiming(copy_ms=1.0, compute_ms=5.0, gpu_wait_ms=2.0, nbytes=1000, host_wait_s=0.003),
        cm.StepTiming(copy_ms=2.0, compute_ms=5.0, gpu_wait_ms=4.0, nbytes=1000, host_wait_s=0.001),
    ]


def test_round_metrics_accounting() -> None:
    m = cm.round_metrics(_steps(), samples=96, seconds=0.024, simulated_compute=True)
    assert m["feed_samples_per_s"] == pytest.approx(96 / 0.024)
    assert m["h2d_bytes_per_s"] == pytest.approx(3000 / 0.024)
    assert m["h2d_copy_bytes_per_s"] == pytest.approx(3000 / 0.004)
    assert m["accelerator_utilization"] == pytest.approx(0.015 / 0.024)
    assert m["step_ms_measured"] == pytest.approx(5.0)
    # the first step after a synchronize has no wait: it would measure the harness
    assert m["data_wait_mean_s"] == pytest.approx(0.003)
    assert m["data_wait_p95_s"] == pytest.approx(0.0039)
    assert m["host_wait_mean_s"] == pytest.approx(0.002)
    assert m["host_wait_p95_s"] == pytest.approx(0.0029)


def test_round_metrics_pure_feed_has_no_utilisation_and_never_invents() -> None:
    m = cm.round_metrics(_steps(), samples=96, seconds=0.024, simulated_compute=False)
    assert "accelerator_utilization" not in m
    assert "step_ms_measured" not in m
    assert cm.round_metrics([], samples=0, seconds=0.0, simulated_compute=True) == {}
    only_first = cm.round_metrics(_steps()[:1], samples=32, seconds=0.01, simulated_compute=True)
    assert "data_wait_mean_s" not in only_first
    assert "host_wait_mean_s" not in only_first


def test_round_steps_drops_warmup() -> None:
    steps = _steps()
    assert cm.round_steps(steps, samples=64, batch_size=32) == steps[-2:]
    assert cm.round_steps(steps, samples=64, batch_size=None) == steps
    assert cm.round_steps(steps, samples=320, batch_size=32) == steps
    assert cm.medians({"a": [3.0, 1.0, 2.0], "b": []}) == {"a": 2.0}


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


# --- on a real GPU: in a subprocess -------------------------------------------------------


@needs_gpu
def test_gpu_unit_tests_in_a_subprocess() -> None:
    """tests/cuda/test_cuda_gpu.py initialises CUDA, so it runs in a child pytest: in this process CUDA would be
    initialised before the fork-worker tests that follow (pytorch#68383)."""
    here = Path(__file__).parent
    env = {**os.environ, GPU_SUBPROCESS_ENV: "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", str(here / "test_cuda_gpu.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_step_notes() -> None:
    assert cm.step_notes(5.0, 5.1) == []
    assert cm.step_notes(0.0, 1.0) == []
    assert cm.step_notes(5.0, None) == []
    (note,) = cm.step_notes(5.0, 6.0)
    assert note.startswith("the simulated step measured 6.000 ms against 5 ms requested (+20%)")
