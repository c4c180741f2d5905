"""loaderbench: a pytest-based performance regression suite for PyTorch input pipelines.

The public surface is small and listed below (loaded on first use); everything else lives in subpackages named
for their one job, in layers, lowest first (each imports only from layers below it; ``tests/test_layout.py``
checks it):

* the root's modules: values and rules (``config``, ``measurement``, ``metrics``, ``errors``, ``ids``,
  ``stats``, ``formatting``, ``jsondoc``, ``clock``, ...), importing no subpackage;
* ``data`` (the scenario and noise-prior files), ``workloads`` (dataset recipes), ``pipelines`` (DataLoader and
  the other input pipelines), ``cuda`` (the CUDA consumer, its arithmetic, NVML), ``store`` (baselines, results,
  fingerprint), ``decision`` (how a comparison becomes a verdict);
* ``testing``: the simulated GPU, odd datasets, hypothesis strategies;
* ``engine``: measuring one case (the harness, :func:`measure`);
* ``ranks`` (a case in several ranks) and ``gate`` (the stored regression gate);
* ``selection`` (which cases run, and where) and ``report`` (terminal, Markdown, plots);
* ``history`` (every run kept, change points), ``tune`` (``loaderbench tune``), ``ab`` (the interleaved A/B);
* ``selfcheck`` (the suite's checks of itself) and ``pytest_plugin`` (the plugin);
* entry points: ``suite`` (the shipped benchmark cases), ``cli`` (``loaderbench``), ``tools`` (``python -m``).
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
    from loaderbench.workloads.recipes import Workload, load_scenarios

#: Public name -> the module that defines it.
_LAZY = {
    "FakeClock": "loaderbench.clock",
    "perf_clock": "loaderbench.clock",
    "LoaderConfig": "loaderbench.config",
    "CpuConsumer": "loaderbench.engine.consumers",
    "measure": "loaderbench.engine.harness",
    "Plan": "loaderbench.engine.plan",
    "Workload": "loaderbench.workloads.recipes",
    "load_scenarios": "loaderbench.workloads.recipes",
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
