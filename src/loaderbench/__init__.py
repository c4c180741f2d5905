"""loaderbench: a pytest-based performance regression suite for PyTorch input pipelines.

The public surface is small; everything else lives in private-by-convention
modules named for their one job.
"""

from loaderbench.clock import FakeClock, perf_clock
from loaderbench.config import LoaderConfig
from loaderbench.engine.consumers import CpuConsumer
from loaderbench.engine.harness import measure
from loaderbench.engine.plan import Plan
from loaderbench.engine.workloads import Workload, load_scenarios
from loaderbench.errors import CaseFailed, InvalidConfig, LoaderbenchError, NotMeasured, UsageError, WorkloadError
from loaderbench.measurement import Measurement

__version__ = "0.1.0"

__all__ = [
    "CaseFailed",
    "CpuConsumer",
    "FakeClock",
    "InvalidConfig",
    "LoaderConfig",
    "LoaderbenchError",
    "Measurement",
    "NotMeasured",
    "Plan",
    "UsageError",
    "Workload",
    "WorkloadError",
    "__version__",
    "load_scenarios",
    "measure",
    "perf_clock",
]
