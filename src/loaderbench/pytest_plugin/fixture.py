"""The ``loader_benchmark`` fixture: benchmark a user's own dataset in the user's own test.

::

    def test_my_pipeline(loader_benchmark):
        loader_benchmark(MyDataset(), LoaderConfig(num_workers=2, batch_size=32), device="cpu")

The dataset (or a no-argument factory returning one) is measured by the same
harness as the suite's own cases, recorded in the same baseline store under the
test's name (``test_my_pipeline-cpu-w2-bs32``), judged by the same gate, and
skipped without ``pytest --benchmark``.  The reports group a test's parametrized
configs under the test function's node id (``tests/test_x.py::test_my_pipeline``), as they
group a workload's configs (``vs w0``, the worker plots).  It needs no ``fixtures/`` folder and no TOML.
:func:`tier_configs` gives a tier's configs to parametrize over.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from loaderbench.config import LoaderConfig
from loaderbench.cuda.spec import cuda_available
from loaderbench.engine.case import Case
from loaderbench.errors import UsageError
from loaderbench.measurement import Measurement
from loaderbench.pipelines.registry import unavailable_reason
from loaderbench.pytest_names import CASE_FIXTURE, FIXTURE
from loaderbench.pytest_plugin.session import LoaderbenchSession
from loaderbench.selection.tiers import build_tier
from loaderbench.testing.simulated_gpu import SimulatedGpuSpec
from loaderbench.workloads.recipes import Workload

__all__ = ["CASE_FIXTURE", "FIXTURE", "LoaderBenchmark", "make", "tier_configs", "workload_name"]
_DEVICES = ("cpu", "cuda")


def workload_name(node_name: str) -> str:
    """The workload name (and so the baseline key's first part) of a test: its name, brackets made dashes."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", node_name).strip("-")


def tier_configs(tier: str = "smoke", *, batch_size: int = 32) -> list[LoaderConfig]:
    """The CPU LoaderConfigs tier ``tier`` sweeps on the suite's I/O workload, at ``batch_size``.  Parametrize a
    ``loader_benchmark`` test over them::

        @pytest.mark.parametrize("cfg", tier_configs("smoke"), ids=lambda c: c.id)
    """
    probe = Workload(name="io", kind="sleep", batch_size=batch_size, params={"latency_s": 0.001})
    configs = {c.config.id: c.config for c in build_tier(tier, {"io": probe}).cases if c.device == "cpu"}
    return list(configs.values())


class LoaderBenchmark:
    """Callable once per test: ``loader_benchmark(dataset_or_factory, config, device="cpu") -> Measurement``."""

    def __init__(
        self,
        session: LoaderbenchSession,
        benchmark: Any,
        name: str,
        *,
        simulated_gpu: SimulatedGpuSpec | None = None,
        cuda_problem: Callable[[], str] = str,
        group: str = "",
    ) -> None:
        self._session = session
        self._benchmark = benchmark
        self.name = name
        self.group = group  # the test function: the reports compare its parametrized configs with each other
        self.simulated_gpu = simulated_gpu
        self._cuda_problem = cuda_problem
        self.measurement: Measurement | None = None

    def __call__(self, dataset: Any, config: LoaderConfig | None = None, *, device: str = "cpu") -> Measurement:
        if self.measurement is not None:
            raise UsageError(
                f"{FIXTURE}: called twice in {self.name}. Measure one config per test: parametrize the test "
                "with pytest.mark.parametrize over LoaderConfigs."
            )
        if device not in _DEVICES:
            raise UsageError(f"device={device!r}: not a device loader_benchmark measures. Use 'cpu' or 'cuda'.")
        config = config if config is not None else LoaderConfig()
        if not isinstance(config, LoaderConfig):
            raise UsageError(
                f"config={config!r}: not a LoaderConfig. Pass e.g. LoaderConfig(num_workers=2, batch_size=32)."
            )
        if self._session.ranks > 1 and config.ranks == 1:  # --loader-ranks=N runs it in N ranks
            config = config.replace(ranks=self._session.ranks)
        missing = unavailable_reason(config.pipeline)
        if missing is not None:  # a rival pipeline that is not installed: a skip with the one reason, as for cases
            self._skip(missing)
        simulated = self.simulated_gpu if device == "cuda" else None
        if device == "cuda":
            problem = self._cuda_problem()
            if problem:
                pytest.fail(problem, pytrace=False)
            ok, why = cuda_available()
            if simulated is None and not ok:  # never a silent fallback to the simulated device
                self._skip(f"{why}; --loader-simulated-gpu runs it on the simulated device")
        workload = Workload(
            name=self.name,
            kind="user",
            batch_size=config.batch_size or 1,
            description=f"{FIXTURE} in {self.name}",
            params={"dataset": dataset},
            group=self.group,
        )
        case = Case(workload, config, device=device, simulated_gpu=simulated)
        self.measurement = self._session.run(case, self._benchmark)
        return self.measurement

    def _skip(self, reason: str) -> None:
        self._benchmark.skipped = True  # no pytest-benchmark "fixture was not used" warning beside the reason
        pytest.skip(reason)


def make(
    request: pytest.FixtureRequest,
    session: LoaderbenchSession,
    *,
    simulated_gpu: bool = False,
    cuda_problem: Callable[[], str] = str,
) -> LoaderBenchmark:
    """The fixture's value for ``request``'s test (a skip without ``--benchmark``); ``simulated_gpu`` runs its
    CUDA measurement on the simulated device; ``cuda_problem`` says why it may not measure on CUDA now."""
    if not session.enabled:
        pytest.skip("loader_benchmark runs only under `pytest --benchmark`")
    benchmark = request.getfixturevalue("benchmark")
    return LoaderBenchmark(
        session,
        benchmark,
        workload_name(request.node.name),
        simulated_gpu=SimulatedGpuSpec.from_env() if simulated_gpu else None,
        cuda_problem=cuda_problem,
        group=request.node.nodeid.split("[", 1)[0],  # the test function, by its module (and class): no two clash
    )
