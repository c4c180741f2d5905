"""Run one case where it belongs: in this process through the harness, or in several ranks through the
ranks launcher; the one place that chooses between them."""

from __future__ import annotations

from loaderbench.engine.case import Case, make_consumer, simulated_ranks_reason
from loaderbench.engine.consumers import Consumer, Runner, default_runner
from loaderbench.engine.harness import measure
from loaderbench.engine.plan import Plan
from loaderbench.errors import NotMeasured
from loaderbench.measurement import Measurement
from loaderbench.ranks.launch import in_process_group, launch


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
