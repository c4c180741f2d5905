"""The baseline document: its types and its JSON format, with the reader of every older version.

A document (``<dir>/<fingerprint key>.json``) holds, for every case, its LoaderConfig and
every recorded measurement of it ("run"): the same record as everywhere
(:meth:`Measurement.to_json`), tagged with its recording session.  Several
sessions of a case let the gate re-derive the case's session-to-session noise;
the ``metrics`` summary in each entry is for humans and is recomputed, never
trusted, on load.

Format history (``"version"``):

* 1: first version.  Top level: ``format`` (``"loaderbench-baseline"``),
  ``version``, ``written_by``, ``created``, ``updated``, ``fingerprint``,
  ``cases``.  A case: ``workload``, ``device``, ``config`` (``LoaderConfig.as_dict()``),
  ``recorded``, ``runs`` (each ``{"recorded", "session", "rounds": {name: [values]},
  "values": {name: value}}``; ``session`` is shared by the runs of one
  recording process), ``metrics`` (derived summary), ``notes``.
* 2: a run is the measurement record itself (``Measurement.to_json()``: rounds,
  phases, peak memory, bytes per sample, threads, CPUs, notes, consumer extras,
  ``session``, ``recorded``).  ``fingerprint`` holds the hardware only, and the
  file is named by it; the software is the environment, recorded per session in
  ``sessions`` (session id -> ``{"recorded", "environment", "calibration"}``;
  ``calibration`` holds ``spin_loops_per_s``, the cpu workload's calibration,
  which comparisons reuse).  Version-1 files (whose fingerprint also held the
  OS, Python, torch, CUDA and driver, and whose name hashed them) are found by
  their hardware, read (their runs become records with the raw values they hold,
  their software becomes every session's environment) and replaced by a version-2
  file under the new name on the next save.

A session's ``environment`` has a format version of its own (:mod:`loaderbench.store.environment`):
its version 2 adds ``distributions`` (every installed distribution), a key that readers of either
environment version handle (an older reader ignores it, a newer one reads its absence as not
recorded), so the document's version stays 2.

A case's ``config`` (and a run's) written before a LoaderConfig field existed lacks that field: it is
read as the field's default (:func:`loaderbench.config.complete_stored`; compare with
:meth:`LoaderConfig.matches_stored`), which reproduces the behaviour from before the field, so adding a
field needs no new format version and voids no stored case.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loaderbench import jsondoc, stats
from loaderbench.config import LoaderConfig, complete_stored
from loaderbench.errors import BaselineError, InvalidConfig
from loaderbench.measurement import Measurement, sessions
from loaderbench.metrics import METRICS
from loaderbench.store.environment import Environment
from loaderbench.store.fingerprint import ENVIRONMENT_FIELDS, Fingerprint

FORMAT = "loaderbench-baseline"
#: The version this code writes.  Bump it, and add a line to the history above, on any change.
VERSION = 2
#: Versions this code reads (older ones are migrated on read).
READABLE = (1, 2)
_NUMBER_LIST = re.compile(r"\[\s+([-+0-9.eE,\s]+?)\s+\]")
RERECORD = "Delete it and record a new one with: pytest --benchmark --loader-baseline-save"


@dataclass(frozen=True, slots=True)
class CaseEntry:
    """A case's baseline: its identity, its LoaderConfig (``as_dict()``; as read, every field is present,
    a field the file lacks holding its default) and its runs."""

    case_id: str
    workload: str
    device: str
    config: Mapping[str, Any]
    runs: tuple[Measurement, ...]
    recorded: str = ""
    notes: tuple[str, ...] = ()

    @property
    def sessions(self) -> int:
        """How many recording sessions the runs come from."""
        return len(sessions(self.runs))


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """What one recording session ran under: when, the environment, and the calibrations it used."""

    recorded: str = ""
    environment: Environment = field(default_factory=Environment)
    calibration: Mapping[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "recorded": self.recorded,
            "environment": self.environment.as_dict(),
            "calibration": dict(self.calibration),
        }


@dataclass(frozen=True, slots=True)
class BaselineDoc:
    """One baseline document, as read from (or about to be written to) ``path``."""

    path: Path
    fingerprint: Fingerprint
    cases: Mapping[str, CaseEntry] = field(default_factory=dict)
    created: str = ""
    updated: str = ""
    written_by: str = ""
    #: The format version the file had when read (a version-1 file is rewritten as 2 on the next save).
    version: int = VERSION
    sessions: Mapping[str, SessionInfo] = field(default_factory=dict)

    def latest_session(self) -> SessionInfo | None:
        """The most recently recorded session's information."""
        if not self.sessions:
            return None
        ordered = list(self.sessions.values())  # in recording order
        return max(reversed(ordered), key=lambda s: s.recorded)  # the later of two recorded in the same second

    @property
    def environment(self) -> Environment:
        """The environment of the latest recording session (all unknown when none was recorded)."""
        latest = self.latest_session()
        return latest.environment if latest is not None else Environment()

    @property
    def hosts(self) -> frozenset[str]:
        """The hashed ids of the hosts the sessions were recorded on (where known)."""
        return frozenset(s.environment.host_id for s in self.sessions.values() if s.environment.host_id)

    def calibration(self, name: str) -> float | None:
        """The median of a calibration over the recording sessions (None: none recorded it)."""
        values = [s.calibration[name] for s in self.sessions.values() if name in s.calibration]
        return stats.median(values) if values else None


def _summary(entry: CaseEntry) -> dict[str, Any]:
    """Per-metric medians and noise, for people reading the file (recomputed on load)."""
    out: dict[str, Any] = {}
    for metric in METRICS.values():
        values = [metric.run_value(r) for r in entry.runs]
        values = [v for v in values if math.isfinite(v) and v > 0]
        if not values:
            continue
        logs = [math.log(v) for v in values]
        item: dict[str, Any] = {"median": stats.median(values), "runs": len(values), "sessions": entry.sessions}
        if len(logs) > 1:
            item["run_to_run_noise"] = round(_sd(logs), 6)
        rounds = [metric.run_rounds(r) for r in entry.runs]
        if any(rounds):
            item["relative_iqr"] = round(max(stats.relative_iqr(r) for r in rounds if r), 6)
        out[metric.name] = item
    return out


def _sd(values: Sequence[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def dumps(doc: BaselineDoc) -> str:
    """The document as JSON text: stable key order, number lists on one line (readable diffs)."""
    cases = {}
    for cid, e in doc.cases.items():
        cases[cid] = {
            "workload": e.workload,
            "device": e.device,
            "config": dict(e.config),
            "recorded": e.recorded,
            "runs": [r.to_json() for r in e.runs],
            "metrics": _summary(e),
            "notes": list(e.notes),
        }
    data = {
        "format": FORMAT,
        "version": VERSION,
        "written_by": doc.written_by,
        "created": doc.created,
        "updated": doc.updated,
        "fingerprint": doc.fingerprint.as_dict(),
        "sessions": {sid: info.as_dict() for sid, info in doc.sessions.items()},  # in recording order
        "cases": cases,
    }
    text = json.dumps(jsondoc.clean(data), indent=2, allow_nan=False)
    return _NUMBER_LIST.sub(lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text) + "\n"


def read(path: Path) -> BaselineDoc:
    """Read and validate one baseline file (any readable version).  Every problem is a
    :class:`BaselineError` naming the file and the field."""
    version, data = jsondoc.load(
        path, fmt=FORMAT, readable=READABLE, error=BaselineError, prefix=str(path), fix=RERECORD
    )
    try:
        return _parse(path, data, version)
    except (KeyError, TypeError, ValueError, InvalidConfig) as exc:
        detail = f"field {exc} is missing" if isinstance(exc, KeyError) else str(exc)
        raise BaselineError(f"{path}: malformed baseline ({detail}). {RERECORD}.") from None


def _parse(path: Path, data: Mapping[str, Any], version: int) -> BaselineDoc:
    raw_fingerprint = jsondoc.mapping(data["fingerprint"], "fingerprint")
    fingerprint = Fingerprint.from_dict(raw_fingerprint)
    cases = {}
    for cid, raw in jsondoc.mapping(data["cases"], "cases").items():
        entry = jsondoc.mapping(raw, f"case {cid!r}")
        config = complete_stored(jsondoc.mapping(entry["config"], f"case {cid!r} config"))
        runs = []
        for i, run in enumerate(jsondoc.items(entry["runs"], f"case {cid!r} runs")):
            where = f"case {cid!r} run {i}"
            run = jsondoc.mapping(run, where)
            if version == 1:
                runs.append(_v1_run(run, where, str(entry["workload"]), str(entry["device"]), config))
                continue
            _check_numbers(run, where)
            try:
                record = Measurement.from_json(run)
            except KeyError as exc:
                raise ValueError(f"{where}: field {exc} is missing") from None
            except (TypeError, ValueError, InvalidConfig) as exc:
                raise ValueError(f"{where}: {exc}") from None
            runs.append(record)
        if not runs:
            raise ValueError(f"case {cid!r} has no runs")
        cases[str(cid)] = CaseEntry(
            case_id=str(cid),
            workload=str(entry["workload"]),
            device=str(entry["device"]),
            config=config,
            runs=tuple(runs),
            recorded=str(entry.get("recorded", "")),
            notes=tuple(str(n) for n in jsondoc.items(entry.get("notes", []), f"case {cid!r} notes")),
        )
    return BaselineDoc(
        path=path,
        fingerprint=fingerprint,
        cases=cases,
        created=str(data.get("created", "")),
        updated=str(data.get("updated", "")),
        written_by=str(data.get("written_by", "")),
        version=version,
        sessions=_v1_sessions(raw_fingerprint, cases) if version == 1 else _sessions(data.get("sessions", {})),
    )


def _sessions(raw: Any) -> dict[str, SessionInfo]:
    out = {}
    for sid, info in jsondoc.mapping(raw, "sessions").items():
        info = jsondoc.mapping(info, f"session {sid!r}")
        calibration = {
            str(k): jsondoc.number(v, f"session {sid!r} calibration.{k}")
            for k, v in jsondoc.mapping(info.get("calibration", {}), f"session {sid!r} calibration").items()
        }
        environment = Environment.from_dict(
            jsondoc.mapping(info.get("environment", {}), f"session {sid!r} environment")
        )
        out[str(sid)] = SessionInfo(str(info.get("recorded", "")), environment, calibration)
    return out


def _v1_sessions(fingerprint: Mapping[str, Any], cases: Mapping[str, CaseEntry]) -> dict[str, SessionInfo]:
    """A format-1 document's software, from its fingerprint, as the environment of each of its sessions."""
    software = {k: fingerprint.get(k) for k in ENVIRONMENT_FIELDS}
    os_text = str(software.get("os") or "")
    match = re.fullmatch(r"(\S+) (\S+)(?: \((.*)\))?", os_text)
    kernel = None
    if match:  # format 1 wrote "Linux 6.18.44-fc-v669 (Debian GNU/Linux 12 (bookworm))"
        kernel = match.group(2)
        software["os"] = f"{match.group(1)} ({match.group(3)})" if match.group(3) else match.group(1)
    environment = Environment.from_dict({**software, "kernel": kernel})
    out: dict[str, SessionInfo] = {}
    for entry in cases.values():
        for run in entry.runs:
            if run.session and run.session not in out:
                out[run.session] = SessionInfo(run.recorded, environment, {})
    return out


def _check_numbers(run: Mapping[str, Any], where: str) -> None:
    """Every raw value of a version-2 run is a finite number; the error names the field."""
    for k, vs in jsondoc.mapping(run.get("rounds", {}), f"{where} rounds").items():
        for v in jsondoc.items(vs, f"{where} rounds.{k}"):
            jsondoc.number(v, f"{where} rounds.{k}")
    for k, v in jsondoc.mapping(run.get("phases", {}), f"{where} phases").items():
        jsondoc.number(v, f"{where} phases.{k}")
    if run.get("peak_memory_bytes") is not None:
        jsondoc.number(run["peak_memory_bytes"], f"{where} peak_memory_bytes")


def _v1_run(run: Mapping[str, Any], where: str, workload: str, device: str, config: Mapping[str, Any]) -> Measurement:
    """A format-1 run (raw rounds and one-off values) as a record."""
    rounds = {
        str(k): tuple(jsondoc.number(v, f"{where} rounds.{k}") for v in jsondoc.items(vs, f"{where} rounds.{k}"))
        for k, vs in jsondoc.mapping(run["rounds"], f"{where} rounds").items()
    }
    values = {
        str(k): jsondoc.number(v, f"{where} values.{k}")
        for k, v in jsondoc.mapping(run["values"], f"{where} values").items()
    }
    return Measurement.from_raw(
        rounds,
        values,
        workload=workload,
        device=device,
        config=LoaderConfig.from_stored(config),
        session=str(run.get("session", "")),
        recorded=str(run.get("recorded", "")),
    )
