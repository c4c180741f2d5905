"""``Measurement``: the one record of a measured case, in memory and in JSON.

It keeps every round's raw value (for the gate's statistics) and the phase
timings, computes its summaries lazily, and warns about itself when the case is
unstable.  The same record, through :meth:`Measurement.to_json` and
:meth:`Measurement.from_json`, is a run in a baseline file and a case in
``results.json``; ``extra_info`` is derived from it by
:meth:`Measurement.extra_info` and read back by :func:`from_extra_info`, in the
manner of pyperf's ``Run``.

``session`` ties the measurements of one process together (the gate counts
processes, not measurements: a process's offset persists across its
measurements); ``recorded`` is when the measurement was taken (UTC, ISO 8601).
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from loaderbench import jsondoc, stats
from loaderbench.config import LoaderConfig

#: Relative IQR of samples/s from which a case is called unstable.
UNSTABLE_RELATIVE_IQR = 0.10
#: Fewer steady-state batches than this and the throughput is not trustworthy.
MIN_STEADY_BATCHES = 20


#: This process's session id: every measurement this process takes carries it.
PROCESS_SESSION = uuid.uuid4().hex[:12]

#: One-off phases (seconds) a measurement may hold, in report order.
PHASES = ("startup_s", "ttfb_s", "epoch_end_s", "epoch_shutdown_s", "epoch_stall_s", "shutdown_s")


def now() -> str:
    """The current UTC time, ISO 8601 to the second (``recorded`` stamps)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


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
        "close other programs, raise --loader-rounds, or treat the case's verdicts as noisy",
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
    session: str = ""
    recorded: str = ""
    #: What the reports group this case with ("": its workload): a user's ``loader_benchmark`` test function,
    #: so that its parametrized configs are compared with each other as a workload's are.  Not part of the
    #: case id (the baseline key).
    group: str = ""

    @property
    def case_id(self) -> str:
        return case_id(self.workload, self.device, self.config, self.consumer)

    @property
    def family(self) -> str:
        """The name the reports group and label this case by: :attr:`group`, else the workload."""
        return self.group or self.workload

    def value(self, name: str) -> float:
        """A one-off value: a phase (seconds) or ``peak_memory_bytes``; NaN when not measured."""
        if name == "peak_memory_bytes":
            return math.nan if self.peak_memory_bytes is None else float(self.peak_memory_bytes)
        found = self.phases.get(name)
        return math.nan if found is None else float(found)

    @classmethod
    def from_raw(
        cls,
        rounds: Mapping[str, Sequence[float]] | None = None,
        values: Mapping[str, float] | None = None,
        *,
        workload: str = "case",
        device: str = "cpu",
        config: LoaderConfig | None = None,
        session: str = "",
        recorded: str = "",
    ) -> Measurement:
        """A record from raw values alone: per-round series and one-off ``values`` (phases and
        ``peak_memory_bytes``).  Used to read format-1 baselines, and by tests."""
        values = dict(values or {})
        memory = values.pop("peak_memory_bytes", None)
        return cls(
            workload=workload,
            device=device,
            config=config or LoaderConfig(),
            rounds={k: tuple(float(v) for v in vs) for k, vs in (rounds or {}).items()},
            phases={k: float(v) for k, v in values.items()},
            steady_batches=0,
            bytes_per_sample=0,
            peak_memory_bytes=None if memory is None else int(memory),
            memory_kind="",
            ideal_samples_per_s=None,
            torch_threads=1,
            cpus=1,
            session=session,
            recorded=recorded,
        )

    def stamped(self, *, session: str, recorded: str) -> Measurement:
        """A copy tagged with a recording session and time."""
        return dataclasses.replace(self, session=session, recorded=recorded)

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
        if self.config.loading_processes > self.cpus:
            ranks = f"{self.config.ranks} ranks x " if self.config.ranks > 1 else ""
            out.append(FLAGS["O"].with_detail(f"{ranks}num_workers={self.config.num_workers} on {self.cpus} CPUs"))
        if self.notes:
            out.append(FLAGS["N"])
        return tuple(out)

    @property
    def warnings(self) -> tuple[str, ...]:
        """The harness's own notes, then each failed instability check with its detail and advice."""
        return (*self.notes, *(f.sentence() for f in self.flags if f.letter != "N"))

    def extra_info(self) -> dict[str, Any]:
        """The metrics recorded in pytest-benchmark's ``extra_info``: the contract's keys, the summaries, the raw
        rounds, and the consumer's own metrics (the CUDA ones) at the top level."""
        info: dict[str, Any] = {
            "workload": self.workload,
            "device": self.device,
            "config": self.config.describe_kwargs(),
            "config_id": self.config.id,
            "pipeline": self.config.pipeline,
            "case_id": self.case_id,
            "consumer": self.consumer,
            "loaderbench_config": self.config.as_dict(),
            "samples_per_s": self.samples_per_s,
            "batches_per_s": self.median("batches_per_s"),
            "bytes_per_s": self.median("bytes_per_s"),
            **{name: self.phases.get(name) for name in PHASES},
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
            "session": self.session,
            "recorded": self.recorded,
            **({"group": self.group} if self.group else {}),
        }
        info.update(self.extra)
        cleaned: dict[str, Any] = jsondoc.clean(info)  # the JSON rule: NaN and infinities become null
        return cleaned

    # --- JSON -------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The record as JSON values (NaN and infinities become ``null``)."""
        record: dict[str, Any] = jsondoc.clean(
            {
                "case_id": self.case_id,
                "workload": self.workload,
                "device": self.device,
                "consumer": self.consumer,
                "config": self.config.as_dict(),
                "rounds": {k: list(v) for k, v in self.rounds.items()},
                "phases": dict(self.phases),
                "steady_batches": self.steady_batches,
                "bytes_per_sample": self.bytes_per_sample,
                "peak_memory_bytes": self.peak_memory_bytes,
                "memory_kind": self.memory_kind,
                "ideal_samples_per_s": self.ideal_samples_per_s,
                "torch_threads": self.torch_threads,
                "cpus": self.cpus,
                "notes": list(self.notes),
                "extra": dict(self.extra),
                "session": self.session,
                "recorded": self.recorded,
                **({"group": self.group} if self.group else {}),
            }
        )
        return record

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Measurement:
        """Inverse of :meth:`to_json`; derived keys (``case_id``, a ``metrics`` summary) are ignored.
        Raises ``KeyError``/``TypeError``/``ValueError`` (or ``InvalidConfig``) on a malformed record."""
        if not isinstance(d, Mapping):
            raise TypeError(f"a measurement record is a JSON object, not {type(d).__name__}")
        try:
            return cls._from_mapping(d)
        except OverflowError as exc:  # int() of an infinite number
            raise ValueError(f"a number out of range ({exc})") from None

    @classmethod
    def _from_mapping(cls, d: Mapping[str, Any]) -> Measurement:
        ideal = d.get("ideal_samples_per_s")
        memory = d.get("peak_memory_bytes")
        config = d["config"]
        if not isinstance(config, Mapping):
            raise TypeError("'config' is not a JSON object")
        return cls(
            workload=str(d["workload"]),
            device=str(d["device"]),
            config=LoaderConfig(**config),
            rounds={str(k): _floats(v) for k, v in jsondoc.mapping(d.get("rounds", {}), "rounds").items()},
            phases={
                str(k): float(v) for k, v in jsondoc.mapping(d.get("phases", {}), "phases").items() if v is not None
            },
            steady_batches=int(d.get("steady_batches", 0)),
            bytes_per_sample=int(d.get("bytes_per_sample", 0)),
            peak_memory_bytes=None if memory is None else int(memory),
            memory_kind=str(d.get("memory_kind", "")),
            ideal_samples_per_s=None if ideal is None else float(ideal),
            torch_threads=int(d.get("torch_threads", 1)),
            cpus=int(d.get("cpus", 1)),
            notes=tuple(str(n) for n in d.get("notes", ())),
            extra=dict(jsondoc.mapping(d.get("extra", {}), "extra")),
            consumer=str(d.get("consumer", "")),
            session=str(d.get("session", "")),
            recorded=str(d.get("recorded", "")),
            group=str(d.get("group", "")),
        )


def from_extra_info(info: Mapping[str, Any]) -> Measurement:
    """The record rebuilt from the ``extra_info`` that :meth:`Measurement.extra_info` wrote.

    Which keys are the consumer's own extras is derived, not listed: whatever the rebuilt record's own
    ``extra_info()`` does not produce."""
    record = {
        **info,
        "config": info["loaderbench_config"],
        "phases": {k: info[k] for k in PHASES if info.get(k) is not None},
        "notes": (),
        "extra": {},
    }
    base = Measurement.from_json(record)
    derived = set(base.extra_info())
    computed = set(base.warnings)
    return dataclasses.replace(
        base,
        extra={k: v for k, v in info.items() if k not in derived},
        notes=tuple(w for w in info.get("warnings", ()) if w not in computed),
    )


def sessions(runs: Iterable[Measurement]) -> dict[str, list[Measurement]]:
    """Runs grouped by recording session, in first-seen order; an untagged run is a session of its own."""
    out: dict[str, list[Measurement]] = {}
    for i, run in enumerate(runs):
        out.setdefault(run.session or f"#{i}", []).append(run)
    return out


def _floats(values: Any) -> tuple[float, ...]:
    if not isinstance(values, (list, tuple)):
        raise TypeError("a rounds series is not a JSON list")
    return tuple(math.nan if v is None else float(v) for v in values)
