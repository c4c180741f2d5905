"""The simulated device: its contract with ``GpuOps``, CUDA's rules it keeps, and known physics through it.

Exact figures come from the device on a FakeClock; the runs through the harness use real time and assert
only what the simulation's physics guarantees (a feed can never beat the copy engine it was given), never
how fast this machine is.
"""

from __future__ import annotations

import gc
import inspect
from typing import Any

import pytest
import torch

from loaderbench.clock import FakeClock
from loaderbench.config import LoaderConfig
from loaderbench.cuda import CudaConsumer, CudaSpec
from loaderbench.cuda.ops import CudaOps, GpuOps
from loaderbench.engine.case import Case
from loaderbench.engine.plan import Plan
from loaderbench.errors import CaseFailed, InvalidConfig, NotMeasured
from loaderbench.selection.run import run_case
from loaderbench.store import fingerprint
from loaderbench.testing import simulated_gpu as sim
from loaderbench.testing.simulated_gpu import SIMULATED_GPU_NAME, SimulatedGpu, SimulatedGpuSpec
from loaderbench.workloads.recipes import Workload

# --- the contract ---------------------------------------------------------------------------


def _public(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(fn)
        for name, fn in vars(cls).items()
        if callable(fn) and not name.startswith("_") and not isinstance(fn, (staticmethod, classmethod))
    }


def test_method_set_matches_cudaops_and_the_protocol() -> None:
    real, simulated, protocol = _public(CudaOps), _public(SimulatedGpu), _public(GpuOps)
    assert set(real) == set(protocol)
    missing = set(real) - set(simulated)
    assert not missing, f"SimulatedGpu lacks {sorted(missing)}"
    for name, sig in real.items():
        assert list(sig.parameters) == list(simulated[name].parameters), name
    assert isinstance(SimulatedGpu(), GpuOps) and isinstance(CudaOps(), GpuOps)
    assert SimulatedGpu.simulated is True and CudaOps.simulated is False
    assert not issubclass(SimulatedGpu, CudaOps)  # a missing method must never fall through to torch.cuda


@pytest.mark.parametrize(
    ("kwargs", "start"),
    [
        ({"h2d_bytes_per_s": 0}, "h2d_bytes_per_s=0: must be a positive finite number. Use e.g. 12e9."),
        ({"cycles_per_ms": float("nan")}, "cycles_per_ms=nan:"),
        ({"pageable_fraction": 1.5}, "pageable_fraction=1.5: must be in (0, 1]"),
        ({"fail_at": ("memcpy", 1)}, "fail_at=('memcpy', 1): must be (call, n) with call one of"),
    ],
)
def test_spec_validation(kwargs: dict[str, Any], start: str) -> None:
    with pytest.raises(InvalidConfig) as info:
        SimulatedGpuSpec(**kwargs)
    assert str(info.value).startswith(start)


def test_fingerprint_names_the_simulated_device() -> None:
    real = fingerprint.current()
    simulated = fingerprint.current(simulated_gpu=True)
    assert fingerprint.SIMULATED_GPU == SIMULATED_GPU_NAME
    assert simulated.gpus[0] == SIMULATED_GPU_NAME
    assert simulated.key != real.key and "-loaderbench-simulated-" in simulated.key
    assert any(line.startswith("GPUs: ") for line in fingerprint.diff(real, simulated))


# --- CUDA's rules, on a fake clock (exact) ----------------------------------------------------


def _device(clock: FakeClock, **spec: Any) -> SimulatedGpu:
    return SimulatedGpu(SimulatedGpuSpec(h2d_bytes_per_s=1e6, cycles_per_ms=1000.0, **spec), clock=clock)


@pytest.mark.parametrize(
    ("pinned", "non_blocking", "host_waits"),
    [(True, True, False), (True, False, True), (False, True, True), (False, False, True)],
)
def test_only_a_pinned_non_blocking_copy_returns_at_once(pinned: bool, non_blocking: bool, host_waits: bool) -> None:
    clock = FakeClock()
    gpu = _device(clock, pageable_fraction=0.5)
    gpu.pinned = pinned
    gpu.sleep(5000)  # 5 ms already queued on the stream
    gpu.to_device(torch.zeros(250), 0, non_blocking)  # 1000 bytes: 1 ms pinned, 2 ms pageable
    expected = (5 + (1 if pinned else 2)) / 1e3
    assert clock.now == pytest.approx(expected if host_waits else 0.0)
    gpu.synchronize(0)
    assert clock.now == pytest.approx(expected)


def test_streams_share_one_copy_engine_and_events_time_the_gpu() -> None:
    clock = FakeClock()
    gpu = _device(clock)
    gpu.pinned = True
    side = gpu.new_stream()
    start, mid, end = gpu.event(), gpu.event(), gpu.event()
    start.record(gpu.main)
    gpu.to_device(torch.zeros(250), 0, True)
    mid.record(gpu.main)
    with gpu.stream(side):
        gpu.to_device(torch.zeros(250), 0, True)  # waits for the engine, not for the main stream
        end.record(side)
    with pytest.raises(RuntimeError, match="device not ready"):
        start.elapsed_time(end)
    end.synchronize()
    assert start.elapsed_time(mid) == pytest.approx(1.0)
    assert start.elapsed_time(end) == pytest.approx(2.0)
    with pytest.raises(RuntimeError, match="never recorded"):
        gpu.event().elapsed_time(end)


def test_memory_is_counted_while_device_tensors_live() -> None:
    gpu = _device(FakeClock(), memory_bytes=3000)
    gpu.pinned = True
    a = gpu.to_device(torch.zeros(250), 0, True)
    b = gpu.to_device(torch.zeros(250), 0, True)
    assert gpu.allocated == gpu.max_memory_allocated(0) == 2000
    with pytest.raises(torch.OutOfMemoryError, match="Tried to allocate 2000 bytes on the loaderbench simulated"):
        gpu.to_device(torch.zeros(500), 0, True)
    del a, b
    gc.collect()
    assert gpu.allocated == 0 and gpu.reserved == 2000
    gpu.empty_cache()
    assert gpu.reserved == 0 and gpu.max_memory_allocated(0) == 2000


# --- known physics through the consumer (fake clock: exact) ---------------------------------------


def _run(spec: CudaSpec, *, pinned: bool, loader_ms: float = 0.0, steps: int = 20, **dev: Any) -> dict[str, Any]:
    """Warm-up, then two rounds of ``steps`` batches of 10 kB (10 ms of pinned copy at 1 MB/s) each."""
    clock = FakeClock()
    gpu = SimulatedGpu(SimulatedGpuSpec(h2d_bytes_per_s=1e6, cycles_per_ms=1000.0, **dev), pinned=pinned, clock=clock)
    consumer = CudaConsumer(spec, batch_size=4, clock=clock, ops=gpu)
    batch = torch.zeros(4, 625)
    for _ in range(2):
        consumer.consume(batch)
    consumer.sync()
    for _ in range(2):
        t0 = clock()
        for _ in range(steps):
            clock.advance(loader_ms / 1e3)
            consumer.consume(batch)
        consumer.sync()
        consumer.round_metrics(4 * steps, clock() - t0)
    return dict(consumer.finish())


@pytest.mark.parametrize("pipeline", ["plain", "prefetcher"])
@pytest.mark.parametrize("pinned", [True, False])
@pytest.mark.parametrize("step_ms", [0.0, 5.0])
def test_feed_never_exceeds_the_copy_bandwidth(pipeline: Any, pinned: bool, step_ms: float) -> None:
    info = _run(CudaSpec(step_ms=step_ms, pipeline=pipeline), pinned=pinned)
    assert info["h2d_bytes_per_s"] <= 1e6 * (1 + 1e-9)
    assert info["h2d_copy_bytes_per_s"] <= 1e6 * (1 + 1e-9)
    assert info["feed_samples_per_s"] * 10_000 / 4 <= 1e6 * (1 + 1e-9)
    assert info["h2d_limit_bytes_per_s"] == pytest.approx(1e6)


def test_pinned_non_blocking_overlaps_the_step_and_pageable_does_not() -> None:
    # prefetcher: 8 ms in the loader, 10 ms copy, 12 ms step; pageable at full speed, so only CUDA's rule
    # differs: a pinned non_blocking copy runs while the host loads the next batch and the GPU computes
    # (max(12, 8, 10) = 12 ms a step), a pageable one holds the host (max(12, 8 + 10) = 18 ms a step)
    kw: dict[str, Any] = {"loader_ms": 8.0, "pageable_fraction": 1.0}
    pinned = _run(CudaSpec(step_ms=12, pipeline="prefetcher"), pinned=True, **kw)
    pageable = _run(CudaSpec(step_ms=12, pipeline="prefetcher"), pinned=False, **kw)
    assert pinned["accelerator_utilization"] > 0.9
    # at most 12/18 (each round's first and last batch lower it a little)
    assert 0.55 < pageable["accelerator_utilization"] <= 12 / 18 + 1e-9
    assert pinned["feed_bound"] == "GPU-bound", pinned["feed_bound_figures"]
    assert pageable["feed_bound"] == "copy-bound", pageable["feed_bound_figures"]
    assert pageable["batch_pinned"] is False and pinned["batch_pinned"] is True


@pytest.mark.parametrize("step_ms", [5.0, 10.0, 40.0])
def test_au_follows_the_step_time(step_ms: float) -> None:
    # the plain loop: copy (10 ms) then step on one stream, so AU = step / (step + copy)
    info = _run(CudaSpec(step_ms=step_ms), pinned=True)
    assert info["accelerator_utilization"] == pytest.approx(step_ms / (step_ms + 10))
    assert info["step_ms_measured"] == pytest.approx(step_ms)


def test_a_loader_slower_than_the_step_reads_loader_bound() -> None:
    info = _run(CudaSpec(step_ms=5, pipeline="prefetcher"), pinned=True, loader_ms=30.0)
    assert info["feed_bound"] == "loader-bound", info["feed_bound_figures"]
    assert info["data_wait_mean_s"] > 0.02
    assert info["accelerator_utilization"] < 0.2
    fast = _run(CudaSpec(step_ms=30, pipeline="prefetcher"), pinned=True, loader_ms=5.0)
    assert fast["feed_bound"] == "GPU-bound", fast["feed_bound_figures"]


# --- through the harness, in real time --------------------------------------------------------------

_TRANSFER = Workload(name="transfer", kind="tensor-fill", batch_size=8, params={"shape": [3, 32, 32]})
_PLAN = Plan(rounds=2, round_s=0.05, warmup_batches=2, next_epoch=False, batch_timeout_s=60)


def _case(spec: CudaSpec, gpu: SimulatedGpuSpec, **config: Any) -> Case:
    cfg = LoaderConfig(batch_size=_TRANSFER.batch_size, **config)
    return Case(_TRANSFER, cfg, device="cuda", consumer=spec, simulated_gpu=gpu)


def test_a_case_runs_through_the_harness_marked_simulated_and_bounded_by_the_copy_engine() -> None:
    # 98 kB batches at 200 MB/s: 0.5 ms of copy each, slower than the in-process loader, so the engine is the limit
    bandwidth = 200e6
    case = _case(CudaSpec(step_ms=0), SimulatedGpuSpec(h2d_bytes_per_s=bandwidth), pin_memory=True)
    assert case.id.endswith("-step0ms-nb-plain-simgpu")
    m = run_case(case, _PLAN)
    info = m.extra_info()
    assert m.case_id == case.id
    assert info["simulated_gpu"] is True and info["gpu_name"] == SIMULATED_GPU_NAME
    assert info["batch_pinned"] is True
    assert info["h2d_bytes_per_s"] <= bandwidth * 1.02
    assert info["feed_samples_per_s"] * m.bytes_per_sample <= bandwidth * 1.02
    assert info["h2d_limit_bytes_per_s"] == pytest.approx(bandwidth, rel=0.02)
    assert info["nvml_status"].startswith("ok")
    assert info["nvml_pcie_rx_bytes_per_s_mean"] is not None
    assert info["feed_bound"] in ("copy-bound", "loader-bound"), info["feed_bound_figures"]
    assert info["simulated_gpu_note"] in m.notes  # the device's own words reach every report's notes


def test_a_cuda_error_in_a_case_is_one_paragraph_memory_is_released_and_the_next_case_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[SimulatedGpu] = []

    class Recording(SimulatedGpu):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr("loaderbench.engine.case.SimulatedGpu", Recording)
    failing = _case(CudaSpec(step_ms=1), SimulatedGpuSpec(fail_at=("sleep", 4)))
    with pytest.raises(CaseFailed) as info:
        run_case(failing, _PLAN)
    text = str(info.value)
    assert info.value.kind == "cuda" and "\n" not in text
    assert text.startswith(f"case {failing.id} failed: the GPU raised a CUDA error at torch.cuda._sleep")
    assert "simulated fault injected at call 4 of sleep" in text
    assert "Remedy:" in text
    gc.collect()
    assert made[0].allocated == 0 and made[0].reserved == 0 and made[0].calls["empty_cache"] == 1
    after = run_case(_case(CudaSpec(step_ms=1), SimulatedGpuSpec()), _PLAN)
    assert after.extra_info()["feed_samples_per_s"] > 0


def test_ranks_on_the_simulated_device_are_refused_with_the_reason() -> None:
    case = _case(CudaSpec(), SimulatedGpuSpec())
    ranked = Case(case.workload, case.config.replace(ranks=2), device="cuda", simulated_gpu=SimulatedGpuSpec())
    with pytest.raises(NotMeasured, match=r"^ranks=2: the simulated GPU has no NCCL"):
        run_case(ranked, _PLAN)
    assert sim.SIMULATED_ID == "simgpu"
