"""``Measurement``: one case's raw results, with lazily computed summaries.

It keeps every round's raw value (for the gate's statistics) and the phase
timings, and warns about itself when the case is unstable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from loaderbench import stats
from loaderbench.config import LoaderConfig

#: Relative IQR of samples/s from which a case is called unstable.
UNSTABLE_RELATIVE_IQR = 0.10
#: Fewer steady-state batches than this and the throughput is not trustworthy.
MIN_STEADY_BATCHES = 20


def case_id(workload: str, device: str, config: LoaderConfig, consumer: str = "") -> str:
    """The pytest test id and baseline key of a case (``consumer`` is the CUDA consumer's id, if any)."""
    base = f"{workload}-{device}-{config.id}"
    return f"{base}-{consumer}" if consumer else base


@dataclass(frozen=True, slots=True)
class Flag:
    """An instability check: its report letter, what it means, what to do, and (per case) the measured detail."""

    letter: str
    what: str
    fix: str
    detail: str = ""

    def with_detail(self, detail: str) -> Flag:
        return Flag(self.letter, self.what, self.fix, detail)

    def sentence(self) -> str:
        detail = f" ({self.detail})" if self.detail else ""
        return f"{self.what}{detail}; {self.fix}"


#: The instability checks, by the letter the reports show (the one place their wording lives).
FLAGS: Mapping[str, Flag] = {
    "U": Flag(
        "U",
        f"unstable: IQR/median of samples/s >= {UNSTABLE_RELATIVE_IQR:.0%}",
        "close other programs, raise --loader-rounds, or treat this case's verdicts as noisy",
    ),
    "F": Flag(
        "F",
        f"too few steady-state batches (< {MIN_STEADY_BATCHES})",
        "raise --loader-round-seconds so each round covers more batches",
    ),
    "O": Flag(
        "O",
        "more workers than CPUs in the affinity mask",
        "workers time-share cores, so GIL-bound work cannot scale past the CPU count",
    ),
    "N": Flag("N", "a note from the harness or torch (listed below)", "read the note"),
}


@dataclass(frozen=True, slots=True)
class Measurement:
    """What the harness measured for one case.

    ``rounds`` maps a metric name to its raw per-round values (at least
    ``samples_per_s``, ``batches_per_s``, ``bytes_per_s`` and ``round_s``).
    ``phases`` holds the one-off phase timings in seconds: ``startup_s``
    (``iter(loader)``, which starts the workers), ``ttfb_s`` (``iter()`` to the
    first batch), ``epoch_end_s`` (the call that raises ``StopIteration``),
    ``epoch_stall_s`` (next epoch's ``iter()`` to its first batch) and
    ``shutdown_s`` (releasing the loader until every worker has exited).
    """

    workload: str
    device: str
    config: LoaderConfig
    rounds: Mapping[str, tuple[float, ...]]
    phases: Mapping[str, float]
    steady_batches: int
    bytes_per_sample: int
    peak_memory_bytes: int | None
    memory_kind: str
    ideal_samples_per_s: float | None
    torch_threads: int
    cpus: int
    notes: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)
    consumer: str = ""

    @property
    def case_id(self) -> str:
        return case_id(self.workload, self.device, self.config, self.consumer)

    def median(self, metric: str) -> float:
        """Median of a per-round metric (NaN if it was not measured)."""
        return stats.median(self.rounds.get(metric, ()))

    @property
    def samples_per_s(self) -> float:
        return self.median("samples_per_s")

    @property
    def relative_iqr(self) -> float:
        return stats.relative_iqr(self.rounds.get("samples_per_s", ()))

    @property
    def flags(self) -> tuple[Flag, ...]:
        """The instability checks this case fails (see :data:`FLAGS`), each with its measured detail."""
        out = []
        riqr = self.relative_iqr
        if not math.isnan(riqr) and riqr >= UNSTABLE_RELATIVE_IQR:
            out.append(FLAGS["U"].with_detail(f"{riqr:.1%}"))
        if self.steady_batches < MIN_STEADY_BATCHES:
            out.append(FLAGS["F"].with_detail(f"{self.steady_batches}"))
        if self.config.num_workers > self.cpus:
            out.append(FLAGS["O"].with_detail(f"num_workers={self.config.num_workers} on {self.cpus} CPUs"))
        if self.notes:
            out.append(FLAGS["N"])
        return tuple(out)

    @property
    def warnings(self) -> tuple[str, ...]:
        """The harness's own notes, then each failed instability check with its detail and advice."""
        return (*self.notes, *(f.sentence() for f in self.flags if f.letter != "N"))

    def extra_info(self) -> dict[str, Any]:
        """The metrics recorded in pytest-benchmark's ``extra_info`` (DESIGN.md section 2)."""
        info: dict[str, Any] = {
            "workload": self.workload,
            "device": self.device,
            "config": self.config.describe_kwargs(),
            "config_id": self.config.id,
            "case_id": self.case_id,
            "consumer": self.consumer,
            "loaderbench_config": self.config.as_dict(),
            "samples_per_s": self.samples_per_s,
            "batches_per_s": self.median("batches_per_s"),
            "bytes_per_s": self.median("bytes_per_s"),
            "ttfb_s": self.phases.get("ttfb_s"),
            "startup_s": self.phases.get("startup_s"),
            "epoch_end_s": self.phases.get("epoch_end_s"),
            "epoch_stall_s": self.phases.get("epoch_stall_s"),
            "shutdown_s": self.phases.get("shutdown_s"),
            "peak_memory_bytes": self.peak_memory_bytes,
            "memory_kind": self.memory_kind,
            "ideal_samples_per_s": self.ideal_samples_per_s,
            "efficiency": (self.samples_per_s / self.ideal_samples_per_s) if self.ideal_samples_per_s else None,
            "relative_iqr": self.relative_iqr,
            "steady_batches": self.steady_batches,
            "bytes_per_sample": self.bytes_per_sample,
            "torch_threads": self.torch_threads,
            "cpus": self.cpus,
            "rounds": {k: list(v) for k, v in self.rounds.items()},
            "warnings": list(self.warnings),
        }
        info.update(self.extra)
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in info.items()}
