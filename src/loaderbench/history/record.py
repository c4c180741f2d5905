"""One line of a history: a run of one case, its JSON form, and how its figures come from ``Measurement``s.

A history (:mod:`loaderbench.history.store`) is one JSON Lines file per hardware key,
``DIR/<fingerprint key>.jsonl``.  Format ``loaderbench-history``, version 1:

* line 1, the header: ``{"format": "loaderbench-history", "version": 1, "hardware": {...}, "written_by": ...,
  "created": ...}``; ``hardware`` is the machine's fingerprint (:class:`~loaderbench.store.fingerprint.Fingerprint`,
  ``as_dict()``), the same one that names its baseline.  A file that is several files concatenated (a history
  merged from several runners of one class) has more header lines; each must name the same hardware.
* every further line, one run of one case: ``{"run": RUN, "time": "2026-12-03T02:00:00+00:00",
  "commit": "1a2b3c4d5e6f" | null, "environment": {...}, "case": CASE, "workload": ..., "device": ...,
  "consumer": ..., "simulated": false, "config": {...}, "memory_kind": ..., "flags": "U",
  "metrics": {METRIC: {"value": V, "lo": LO, "hi": HI}, ...}}``.  ``run`` is one id per measuring session (the
  pytest run, or the head arm of an A/B): the cases of one run share it, its ``time`` (UTC, ISO 8601, when the
  run appended) and its ``environment`` (:class:`~loaderbench.store.environment.Environment`, ``as_dict()``, of
  its fields, the packages the user named and the workload packages: :func:`compact`);
  ``commit`` is the environment's git commit, repeated at the top for readers.  ``simulated`` marks a case
  measured on the simulated GPU (``--loader-simulated-gpu``), never a real one.  ``flags`` holds the letters of
  the instability checks the case failed (``U``: unstable rounds; :data:`loaderbench.measurement.FLAGS`).

``metrics`` holds every gated metric (:data:`loaderbench.metrics.METRICS`) the case measured and the gate
judges for it (CPU time per sample only for CPU-bound cases).  ``value`` is the run's figure, ``lo``/``hi`` the
95% interval of its within-run uncertainty, computed in log space (so it is a ratio, and never below zero):

* from one measurement: ``value`` is the median of its rounds (per-round metrics: samples/s, feed rate...)
  or its one value (TTFB, epoch stall, peak memory, CPU per sample); the standard error of that median is
  the one the gate uses (:func:`loaderbench.gate.model.within_se`: ``1.2533 x (IQR of the log rounds / 1.349)
  / sqrt(rounds)``), and ``lo, hi = value x exp(-/+ 1.96 se)``.  A one-off value has no rounds to tell its
  own uncertainty: ``lo = hi = value``, and only the series' own scatter speaks for it.
* from several measurements of the case in one run (the head arm's blocks of an A/B): ``value`` is the
  geometric mean of their values, and ``se^2 = (s^2 + w^2) / n`` with ``s`` the standard deviation of their
  log values (0 for one) and ``w`` the within-run figure above, over ``n`` measurements.

A newer format version is refused ("upgrade loaderbench"); unknown keys of a record are ignored, so fields
can be added without a new version.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from loaderbench import jsondoc
from loaderbench.gate.model import within_se
from loaderbench.measurement import Measurement
from loaderbench.metrics import METRICS
from loaderbench.store.environment import WORKLOAD_PACKAGES, Environment, normalise
from loaderbench.store.fingerprint import Fingerprint

FORMAT = "loaderbench-history"
#: The version this code writes.  Bump it, and describe it above, on a change that old readers misread.
VERSION = 1
#: Versions this code reads.
READABLE = (1,)
#: The two-sided coverage of a record's ``lo``/``hi`` and its normal quantile.
COVERAGE = 0.95
Z = statistics.NormalDist().inv_cdf(0.5 + COVERAGE / 2)


@dataclass(frozen=True, slots=True)
class Figure:
    """One metric of one run: ``value`` and its within-run interval ``lo <= value <= hi``."""

    value: float
    lo: float
    hi: float

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "lo": self.lo, "hi": self.hi}


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run of one case: a line of a history file (see the module docstring)."""

    run: str
    time: str
    commit: str | None
    environment: Environment
    case: str
    workload: str
    device: str
    simulated: bool
    metrics: Mapping[str, Figure]
    consumer: str = ""
    config: Mapping[str, Any] = field(default_factory=dict)
    memory_kind: str = ""
    flags: str = ""

    @property
    def moment(self) -> datetime:
        """``time`` as an aware datetime (records are ordered by it)."""
        return parse_time(self.time)

    def to_json(self) -> dict[str, Any]:
        data = {
            "run": self.run,
            "time": self.time,
            "commit": self.commit,
            "environment": self.environment.as_dict(),
            "case": self.case,
            "workload": self.workload,
            "device": self.device,
            "consumer": self.consumer,
            "simulated": self.simulated,
            "config": dict(self.config),
            "memory_kind": self.memory_kind,
            "flags": self.flags,
            "metrics": {name: f.as_dict() for name, f in self.metrics.items()},
        }
        cleaned: dict[str, Any] = jsondoc.clean(data)
        return cleaned

    def line(self) -> str:
        """The record as one line of JSON, newline included."""
        return json.dumps(self.to_json(), allow_nan=False, separators=(",", ":")) + "\n"

    @classmethod
    def from_json(cls, data: Any, *, seen: dict[str, Environment] | None = None) -> RunRecord:
        """Inverse of :meth:`to_json`; raises ``ValueError`` naming what is missing or mistyped.  ``seen``: the
        environments read so far, by their JSON text (the runs of one run share theirs: read once)."""
        if not isinstance(data, dict):
            raise ValueError(f"a record is a JSON object, not {type(data).__name__}")
        for key in ("run", "time", "case", "workload", "device"):
            if not isinstance(data.get(key), str) or not data[key]:
                raise ValueError(f"field {key!r} is missing or not a non-empty string")
        commit = data.get("commit")
        if commit is not None and not isinstance(commit, str):
            raise ValueError("field 'commit' is not a string or null")
        if not isinstance(data.get("simulated", False), bool):
            raise ValueError("field 'simulated' is not true or false")
        environment = data.get("environment", {})
        if not isinstance(environment, dict):
            raise ValueError("field 'environment' is not a JSON object")
        config = data.get("config", {})
        if not isinstance(config, dict):
            raise ValueError("field 'config' is not a JSON object")
        parse_time(data["time"])
        key = repr(environment)
        env = seen.get(key) if seen is not None else None
        if env is None:
            env = Environment.from_dict(environment)
            if seen is not None:
                seen[key] = env
        return cls(
            run=data["run"],
            time=data["time"],
            commit=commit,
            environment=env,
            case=data["case"],
            workload=data["workload"],
            device=data["device"],
            simulated=bool(data.get("simulated", False)),
            metrics=_figures(data.get("metrics")),
            consumer=str(data.get("consumer", "")),
            config=config,
            memory_kind=str(data.get("memory_kind", "")),
            flags=str(data.get("flags", "")),
        )


@dataclass(frozen=True, slots=True)
class Point:
    """One run of a case's series for one metric: what the change-point detector and the page read."""

    run: str
    time: str
    commit: str | None
    environment: Environment
    value: float
    lo: float
    hi: float
    simulated: bool


def point(record: RunRecord, metric: str) -> Point | None:
    """``record``'s point for ``metric``; None when the run did not record that metric."""
    f = record.metrics.get(metric)
    if f is None:
        return None
    return Point(record.run, record.time, record.commit, record.environment, f.value, f.lo, f.hi, record.simulated)


def parse_time(text: Any) -> datetime:
    """An ISO 8601 time with its offset (``2026-12-03T02:00:00+00:00``); ``ValueError`` otherwise."""
    try:
        moment = datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ValueError(f"field 'time' is {text!r}, not an ISO 8601 time with its UTC offset")
    return moment


def _figures(raw: Any) -> dict[str, Figure]:
    if not isinstance(raw, dict):
        raise ValueError("field 'metrics' is missing or not a JSON object")
    out = {}
    for name, f in raw.items():
        if not isinstance(f, dict):
            raise ValueError(f"metrics.{name} is not a JSON object")
        numbers = []
        for key in ("value", "lo", "hi"):
            v = f.get(key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"metrics.{name}.{key} is missing or not a finite number")
            numbers.append(float(v))
        value, lo, hi = numbers
        if not lo <= value <= hi:
            raise ValueError(f"metrics.{name}: lo <= value <= hi does not hold ({lo:g}, {value:g}, {hi:g})")
        out[str(name)] = Figure(value, lo, hi)
    return out


# --- the header --------------------------------------------------------------------------------------------


def header(hardware: Fingerprint, *, created: str) -> dict[str, Any]:
    """The first line of a history file for ``hardware``."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "hardware": hardware.as_dict(),
        "written_by": jsondoc.WRITTEN_BY,
        "created": created,
    }


def is_header(data: Any) -> bool:
    """Whether a parsed line claims to be a history header (then :func:`header_hardware` judges it)."""
    return isinstance(data, dict) and "format" in data and "run" not in data


def header_hardware(data: Mapping[str, Any]) -> Fingerprint:
    """The hardware of a header line; ``ValueError`` for another format, a version this code cannot read (a
    newer one says to upgrade), or a malformed fingerprint."""
    if data.get("format") != FORMAT:
        raise ValueError(f'not a loaderbench history (its header has no "format": "{FORMAT}")')
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version not in READABLE:
        if isinstance(version, int) and not isinstance(version, bool) and version > max(READABLE):
            raise ValueError(
                f"written by a newer loaderbench (history format version {version}; this one reads "
                f"{', '.join(map(str, READABLE))}). Upgrade loaderbench to read or append to it"
            )
        raise ValueError(f"its format version is {version!r}; this loaderbench reads {', '.join(map(str, READABLE))}")
    hardware = data.get("hardware")
    if not isinstance(hardware, dict):
        raise ValueError("its header has no 'hardware' object")
    return Fingerprint.from_dict(hardware)


# --- from measurements -------------------------------------------------------------------------------------


def figures(measurements: Sequence[Measurement]) -> dict[str, Figure]:
    """Every gated metric of one case's measurements in one run, with its interval (see the module docstring)."""
    out = {}
    for metric in METRICS.values():
        if not metric.present(measurements) or not metric.applies(measurements):
            continue
        logs = [math.log(metric.run_value(m)) for m in measurements]
        n = len(logs)
        between = statistics.stdev(logs) if n >= 2 else 0.0
        se = math.sqrt((between**2 + within_se(metric, measurements) ** 2) / n)
        centre = statistics.fmean(logs)
        value = math.exp(centre) if n > 1 else metric.run_value(measurements[0])  # one: exactly its value
        out[metric.name] = Figure(value, value * math.exp(-Z * se), value * math.exp(Z * se))
    return out


def compact(environment: Environment) -> Environment:
    """``environment`` as a history keeps it on every line: its fields (torch, CUDA, driver, Python, kernel,
    loaderbench, the git commit, the host), the packages the user named, and the workload packages (Pillow,
    numpy, torchdata, spdl) among them; not every installed distribution, which would make each line
    kilobytes long."""
    packages = dict(environment.packages)
    for name in WORKLOAD_PACKAGES:
        version = (environment.distributions or {}).get(normalise(name))
        if version is not None and not any(normalise(n) == normalise(name) for n in packages):
            packages[name] = version
    return dataclasses.replace(environment, packages=packages, distributions=None)


def records_from(
    measurements: Sequence[Measurement],
    *,
    run: str,
    time: str,
    environment: Environment,
    case_ids: Sequence[str] | None = None,
) -> list[RunRecord]:
    """One record per case of ``measurements`` (several measurements of one case, e.g. an A/B arm's blocks,
    make one record), all of run ``run`` at ``time`` under ``environment`` (kept :func:`compact`); ``case_ids``,
    parallel to ``measurements``, overrides their ``case_id``.  A case without any gated metric makes no record."""
    environment = compact(environment)
    ids = list(case_ids) if case_ids is not None else [m.case_id for m in measurements]
    if len(ids) != len(measurements):
        raise ValueError(f"case_ids: {len(ids)} ids for {len(measurements)} measurements")
    groups: dict[str, list[Measurement]] = {}
    for cid, m in zip(ids, measurements, strict=True):
        groups.setdefault(cid, []).append(m)
    out = []
    for cid, ms in groups.items():
        found = figures(ms)
        if not found:
            continue
        first = ms[0]
        flags = "".join(dict.fromkeys(f.letter for m in ms for f in m.flags if f.letter != "N"))
        out.append(
            RunRecord(
                run=run,
                time=time,
                commit=environment.git_commit,
                environment=environment,
                case=cid,
                workload=first.workload,
                device=first.device,
                simulated=any(bool(m.extra.get("simulated_gpu")) for m in ms),
                metrics=found,
                consumer=first.consumer,
                config=first.config.as_dict(),
                memory_kind=first.memory_kind,
                flags=flags,
            )
        )
    return out
