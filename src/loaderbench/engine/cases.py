"""A benchmark case (workload x LoaderConfig x device, with the CUDA consumer's spec), and
:func:`run_case`, which turns one into a :class:`~loaderbench.measurement.Measurement`."""

from __future__ import annotations

from dataclasses import dataclass

from loaderbench.config import LoaderConfig
from loaderbench.cuda.consumer import CudaConsumer
from loaderbench.cuda.ops import SIMULATED_SUFFIX
from loaderbench.cuda.spec import CudaSpec, check_start_method
from loaderbench.engine.consumers import Consumer, CpuConsumer, Runner, default_runner
from loaderbench.engine.harness import measure
from loaderbench.engine.plan import Plan
from loaderbench.engine.workloads import Workload
from loaderbench.errors import NotMeasured
from loaderbench.measurement import Measurement, case_id
from loaderbench.ranks.launch import in_process_group, launch
from loaderbench.testing.simulated_gpu import SimulatedGpu, SimulatedGpuSpec


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


def run_case(case: Case, plan: Plan, *, runner: Runner = default_runner) -> Measurement:
    """Measure ``case``: on CUDA through a :class:`CudaConsumer` (never a fork start method), released
    afterwards also when the case fails.  A case of ``ranks > 1`` runs in that many ranks started by
    ``torch.distributed.run`` (:func:`loaderbench.ranks.launch.launch`), unless this process already is one
    of them.  Raises :class:`~loaderbench.errors.CaseFailed` on a fault."""
    if case.simulated_gpu is not None and case.config.ranks > 1:
        raise NotMeasured(simulated_ranks_reason(case.config.ranks))
    if case.config.ranks > 1 and not in_process_group():
        return launch(case, plan, runner=runner)
    consumer: Consumer | None = None
    if case.device == "cuda":
        consumer = make_consumer(case)
    try:
        return measure(case.workload, case.config, device=case.device, plan=plan, consumer=consumer, runner=runner)
    finally:
        if consumer is not None:
            consumer.close()  # releases GPU memory
