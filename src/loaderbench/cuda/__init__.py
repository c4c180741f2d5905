"""The CUDA path: how a GPU is fed.  This package re-exports its modules' main names; importers may use either.

What a GPU job cares about is how fast samples become *ready in GPU memory*,
how long the GPU waits for them, and how close the host-to-device path comes to
what the machine can physically do.  :class:`CudaConsumer` measures that for
one case: it copies every batch to the GPU and runs a simulated compute step
(``torch.cuda._sleep``, calibrated to milliseconds on the running GPU), timing
with CUDA events, never with a CPU clock around asynchronous work.

Two pipelines are kept side by side (:attr:`CudaSpec.pipeline`):

- ``plain``: copy the batch on the compute stream, then compute, the loop most
  training scripts write;
- ``prefetcher``: the apex ``data_prefetcher`` pattern, the reference: the copy
  of batch N+1 runs on a side stream while batch N computes.

Fork safety: CUDA cases must start their workers with spawn or forkserver
(:func:`check_start_method`), and run after every fork-started CPU case
(:func:`fork_hazard`).  Importing this module initialises no CUDA context.

- :mod:`loaderbench.cuda.spec`: ``CudaSpec``, availability, fork safety (no GPU needed);
- :mod:`loaderbench.cuda.consumer`: the consumer (GPU);
- :mod:`loaderbench.cuda.ops`: the GPU operations behind one seam (``GpuOps``; the simulated device,
  :mod:`loaderbench.testing.simulated_gpu`, is its other implementation), sleep calibration, the H2D limit (GPU);
- :mod:`loaderbench.cuda.rates`: the arithmetic of every metric (pure, unit-tested);
- :mod:`loaderbench.cuda.nvml`: the NVML background sampler and its fallbacks.
"""

from __future__ import annotations

from loaderbench.cuda.consumer import CudaConsumer
from loaderbench.cuda.nvml import FIELDS as NVML_FIELDS
from loaderbench.cuda.nvml import NvmlSample, NvmlSampler
from loaderbench.cuda.ops import (
    CudaOps,
    GpuOps,
    calibrate_sleep_cycles_per_ms,
    cuda_call_of,
    iter_tensors,
    measure_h2d_limit_bytes_per_s,
)
from loaderbench.cuda.rates import StepTiming, accelerator_utilization, round_metrics
from loaderbench.cuda.spec import (
    CUDA_PIPELINES,
    SAFE_START_METHODS,
    CudaPipeline,
    CudaSpec,
    check_start_method,
    cuda_available,
    fork_hazard,
    parent_cuda_initialized,
)

__all__ = [
    "CUDA_PIPELINES",
    "NVML_FIELDS",
    "SAFE_START_METHODS",
    "CudaConsumer",
    "CudaOps",
    "CudaPipeline",
    "CudaSpec",
    "GpuOps",
    "NvmlSample",
    "NvmlSampler",
    "StepTiming",
    "accelerator_utilization",
    "calibrate_sleep_cycles_per_ms",
    "check_start_method",
    "cuda_available",
    "cuda_call_of",
    "fork_hazard",
    "iter_tensors",
    "measure_h2d_limit_bytes_per_s",
    "parent_cuda_initialized",
    "round_metrics",
]
