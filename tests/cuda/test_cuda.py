"""The CUDA side, tested on a CPU-only machine: the CUDA spec, availability and fork safety, and the arithmetic.

The arithmetic (calibration, bandwidth, AU, data wait) is tested on made-up numbers.  Nothing here asserts a
real timing.  The few tests that need a real GPU skip without one.  The consumer's bookkeeping on the simulated
device and NVML's sampling are in test_cuda_consumer.py.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from loaderbench.config import LoaderConfig
from loaderbench.cuda import (
    CudaSpec,
    check_start_method,
    cuda_available,
    fork_hazard,
    parent_cuda_initialized,
)
from loaderbench.cuda import rates as cm
from loaderbench.errors import InvalidConfig, NotMeasured

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


def test_a_thread_pipeline_starts_no_process_so_cuda_allows_its_workers() -> None:
    for pipeline in ("nodesthread", "spdl"):  # workers are threads: nothing is forked from the CUDA process
        config = LoaderConfig(num_workers=4, pin_memory=True, pipeline=pipeline)
        assert config.start_method is None
        check_start_method(config)
        assert fork_hazard(config) is None
    assert LoaderConfig(num_workers=4, pipeline="nodesprocess", multiprocessing_context="fork").start_method == "fork"


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
