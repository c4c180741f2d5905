"""loaderbench: a pytest-based performance regression suite for PyTorch input pipelines.

The public surface is small and listed here; everything else lives in
subpackages named for their one job:

* ``loaderbench.engine``: workloads, the harness (:func:`measure`), consumers, tiers, faults;
* ``loaderbench.cuda``: the CUDA consumer, its arithmetic and NVML sampling;
* ``loaderbench.store``: baselines, ``results.json`` and the machine fingerprint;
* ``loaderbench.gate``: the statistical model and the regression gate;
* ``loaderbench.report``: terminal, Markdown and plot reports;
* ``loaderbench.tune``: ``loaderbench tune``'s search;
* ``loaderbench.pytest_plugin``: the pytest plugin;
* ``loaderbench.tools``: the suite's self-checks (selfcheck, soak, spread, overhead);
* ``loaderbench.testing.strategies``: hypothesis strategies for your own tests (needs ``loaderbench[test]``).
"""

from typing import TYPE_CHECKING

from loaderbench.version import __version__

if TYPE_CHECKING:  # the names below load on first use (PEP 562), so a worker process that unpickles a dataset
    # from loaderbench.engine pays for torch, not for the gate, scipy and the reports
    from loaderbench.clock import FakeClock, perf_clock
    from loaderbench.config import LoaderConfig
    from loaderbench.engine.consumers import CpuConsumer
    from loaderbench.engine.harness import measure
    from loaderbench.engine.plan import Plan
    from loaderbench.engine.workloads import Workload, load_scenarios
    from loaderbench.errors import (
        BaselineError,
        CaseFailed,
        InvalidConfig,
        LoaderbenchError,
        NotMeasured,
        UsageError,
        WorkloadError,
    )
    from loaderbench.gate import Gate, Settings, Thresholds, Verdict, compare
    from loaderbench.measurement import Measurement

#: Public name -> the module that defines it.
_LAZY = {
    "FakeClock": "loaderbench.clock",
    "perf_clock": "loaderbench.clock",
    "LoaderConfig": "loaderbench.config",
    "CpuConsumer": "loaderbench.engine.consumers",
    "measure": "loaderbench.engine.harness",
    "Plan": "loaderbench.engine.plan",
    "Workload": "loaderbench.engine.workloads",
    "load_scenarios": "loaderbench.engine.workloads",
    "BaselineError": "loaderbench.errors",
    "CaseFailed": "loaderbench.errors",
    "InvalidConfig": "loaderbench.errors",
    "LoaderbenchError": "loaderbench.errors",
    "NotMeasured": "loaderbench.errors",
    "UsageError": "loaderbench.errors",
    "WorkloadError": "loaderbench.errors",
    "Gate": "loaderbench.gate",
    "Settings": "loaderbench.gate",
    "Thresholds": "loaderbench.gate",
    "Verdict": "loaderbench.gate",
    "compare": "loaderbench.gate",
    "Measurement": "loaderbench.measurement",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'loaderbench' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


#: Where the hypothesis strategies live (imported on demand: they need hypothesis).
STRATEGIES_MODULE = "loaderbench.testing.strategies"

__all__ = [
    "STRATEGIES_MODULE",
    "BaselineError",
    "CaseFailed",
    "CpuConsumer",
    "FakeClock",
    "Gate",
    "InvalidConfig",
    "LoaderConfig",
    "LoaderbenchError",
    "Measurement",
    "NotMeasured",
    "Plan",
    "Settings",
    "Thresholds",
    "UsageError",
    "Verdict",
    "Workload",
    "WorkloadError",
    "__version__",
    "compare",
    "load_scenarios",
    "measure",
    "perf_clock",
]
