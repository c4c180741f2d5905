"""The tests that need a real GPU.  They initialise CUDA, so they never run in the pytest process that runs the
fork-worker tests: ``tests/cuda/test_cuda.py::test_gpu_unit_tests_in_a_subprocess`` runs this file in a child pytest
(with LOADERBENCH_GPU_SUBPROCESS=1); anywhere else every test here skips saying so.  ``python -m
loaderbench.tools.gpu_check`` runs it the same way."""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch

from loaderbench.cuda import NVML_FIELDS, CudaConsumer, CudaSpec, cuda_available, parent_cuda_initialized

HAS_GPU, GPU_REASON = cuda_available()
pytestmark = [
    pytest.mark.skipif(
        os.environ.get("LOADERBENCH_GPU_SUBPROCESS") != "1",
        reason="runs in a child pytest (tests/cuda/test_cuda.py::test_gpu_unit_tests_in_a_subprocess), so CUDA is "
        "never initialised before the fork-worker tests (pytorch#68383)",
    ),
    pytest.mark.skipif(not HAS_GPU, reason=GPU_REASON),
]


def test_gpu_calibration_is_positive_and_cached() -> None:
    from loaderbench.cuda import calibrate_sleep_cycles_per_ms, measure_h2d_limit_bytes_per_s

    rate = calibrate_sleep_cycles_per_ms(0)
    assert rate > 0
    assert calibrate_sleep_cycles_per_ms(0) == rate
    assert measure_h2d_limit_bytes_per_s(1 << 20, 0) > 0


@pytest.mark.parametrize("pipeline", ["plain", "prefetcher"])
@pytest.mark.parametrize("pinned", [True, False])
def test_gpu_consumer_reports_every_metric(pipeline: Any, pinned: bool) -> None:
    batch = torch.ones(8, 3, 64, 64)
    if pinned:
        batch = batch.pin_memory()
    consumer = CudaConsumer(CudaSpec(step_ms=1, pipeline=pipeline), batch_size=8, nvml_interval_s=0.01)
    for _ in range(3):
        consumer.consume(batch)
    consumer.sync()
    metrics = consumer.round_metrics(3 * 8, 0.1)
    assert {"feed_samples_per_s", "h2d_bytes_per_s", "accelerator_utilization", "data_wait_mean_s"} <= set(metrics)
    info = consumer.finish()
    assert info["batch_pinned"] is pinned
    assert info["h2d_limit_bytes_per_s"] > 0
    assert info["sleep_cycles_per_ms"] > 0
    assert set(NVML_FIELDS) <= set(info)
    assert parent_cuda_initialized()


def test_gpu_h2d_limit_pinned_beats_pageable_and_nvml_reads_the_device() -> None:
    from loaderbench.cuda import measure_h2d_limit_bytes_per_s
    from loaderbench.cuda.ops import CudaOps

    pinned = measure_h2d_limit_bytes_per_s(64 << 20, 0)
    assert pinned > 1e9  # any PCIe link moves more than 1 GB/s pinned
    ops = CudaOps()
    name, uuid = ops.gpu(0)
    assert name and (uuid is None or uuid.startswith(("GPU-", "MIG-")))
    assert ops.marks() == {"simulated_gpu": False}
