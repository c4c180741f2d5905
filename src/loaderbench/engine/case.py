"""A benchmark case (workload x LoaderConfig x device, with the CUDA consumer's spec), and the consumer it
feeds; :func:`loaderbench.selection.run.run_case` measures one, in this process or in several ranks."""

from __future__ import annotations

from dataclasses import dataclass

from loaderbench.config import LoaderConfig
from loaderbench.cuda.consumer import CudaConsumer
from loaderbench.cuda.ops import SIMULATED_SUFFIX
from loaderbench.cuda.spec import CudaSpec, check_start_method
from loaderbench.engine.consumers import Consumer, CpuConsumer
from loaderbench.measurement import case_id
from loaderbench.testing.simulated_gpu import SimulatedGpu, SimulatedGpuSpec
from loaderbench.workloads.recipes import Workload


@dataclass(frozen=True, slots=True)
class Case:
    """One benchmark case: what to load, how, and on which device."""

    workload: Workload
    config: LoaderConfig
    device: str = "cpu"
    consumer: CudaSpec | None = None  # how a CUDA case feeds the GPU
    why: str = ""
    #: A CUDA case run on the simulated device (``--loader-simulated-gpu``), never on a GPU; its id ends in -simgpu.
    simulated_gpu: SimulatedGpuSpec | None = None

    @property
    def id(self) -> str:
        consumer = ""
        if self.device == "cuda":
            spec = (self.consumer or CudaSpec()).id if self.consumer or self.simulated_gpu else ""
            consumer = f"{spec}-{SIMULATED_SUFFIX}" if self.simulated_gpu else spec
        return case_id(self.workload.name, self.device, self.config, consumer)


def simulated_ranks_reason(ranks: int) -> str:
    return (
        f"ranks={ranks}: the simulated GPU has no NCCL, so multi-rank CUDA cases need real GPUs. Drop "
        "--loader-ranks, or run on a GPU machine without --loader-simulated-gpu."
    )


def make_consumer(case: Case) -> Consumer:
    """The case's consumer: on CUDA a :class:`CudaConsumer` (never with a fork start method), on the simulated
    device when the case says so (its batches count as pinned when the config pins), else the plain CPU one.
    The caller closes it."""
    if case.device == "cuda":
        check_start_method(case.config)
        ops = None
        if case.simulated_gpu is not None:
            ops = SimulatedGpu(case.simulated_gpu, pinned=case.config.pin_memory)
        return CudaConsumer(case.consumer or CudaSpec(), batch_size=case.config.batch_size or 1, ops=ops)
    return CpuConsumer()
