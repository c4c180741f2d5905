"""The baseline store: one versioned JSON document per machine fingerprint.

``<dir>/<fingerprint key>.json`` holds, for every case, its LoaderConfig, and
the raw values of every recorded measurement ("run"): all per-round series and
the one-off phases and peak memory.  Several runs of a case let the gate
re-derive the case's run-to-run noise; the ``metrics`` summary in each entry is
for humans and is recomputed, never trusted, on load.

Writes are atomic and safe under concurrency: a saver takes an exclusive
``fcntl.flock`` on ``<dir>/.<key>.lock``, re-reads the document, merges its
cases in, writes a temporary file in the same directory, fsyncs it and
``os.replace``-s it over the old one.  A crash at any point leaves either the
old document or the new one, never a half-written or empty file.

Format history (``"version"``):

* 1: first version.  Top level: ``format`` (``"loaderbench-baseline"``),
  ``version``, ``written_by``, ``created``, ``updated``, ``fingerprint``,
  ``cases``.  A case: ``workload``, ``device``, ``config`` (``LoaderConfig.as_dict()``),
  ``recorded``, ``runs`` (each ``{"recorded", "session", "rounds": {name: [values]},
  "values": {name: value}}``; ``session`` is shared by the runs of one
  recording process), ``metrics`` (derived summary), ``notes``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import re
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loaderbench import stats
from loaderbench.errors import BaselineError as BaselineError
from loaderbench.measurement import Measurement
from loaderbench.metrics import METRICS, Run
from loaderbench.store.fingerprint import Fingerprint, diff

FORMAT = "loaderbench-baseline"
#: The version this code writes and reads.  Bump it, and add a line to the history above, on any change.
VERSION = 1
DEFAULT_DIR = Path("fixtures") / "baselines"
#: Recording sessions kept per case when sessions are appended (a rolling baseline).
MAX_SESSIONS = 10
_LOCK_TIMEOUT_S = 120.0
_NUMBER_LIST = re.compile(r"\[\s+([-+0-9.eE,\s]+?)\s+\]")
_RERECORD = "Delete it and record a new one with: pytest --benchmark --loader-baseline-save"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True, slots=True)
class CaseEntry:
    """A case's baseline: its identity, its LoaderConfig (``as_dict()``) and its runs."""

    case_id: str
    workload: str
    device: str
    config: Mapping[str, Any]
    runs: tuple[Run, ...]
    recorded: str = ""
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BaselineDoc:
    """One baseline document, as read from (or about to be written to) ``path``."""

    path: Path
    fingerprint: Fingerprint
    cases: Mapping[str, CaseEntry] = field(default_factory=dict)
    created: str = ""
    updated: str = ""
    written_by: str = ""


def entries_from(
    measurements: Sequence[Measurement], *, session: str | None = None, case_ids: Sequence[str] | None = None
) -> list[CaseEntry]:
    """Group measurements by case id (several measurements of one case become its runs),
    all tagged with one recording ``session`` id (a fresh one by default).  ``case_ids``,
    parallel to ``measurements``, overrides their ``case_id``."""
    session = session or uuid.uuid4().hex[:12]
    if case_ids is not None and len(case_ids) != len(measurements):
        raise BaselineError(f"case_ids: {len(case_ids)} ids for {len(measurements)} measurements. Pass one id each.")
    ids = list(case_ids) if case_ids is not None else [m.case_id for m in measurements]
    groups: dict[str, list[Measurement]] = {}
    for cid, m in zip(ids, measurements, strict=True):
        groups.setdefault(cid, []).append(m)
    out = []
    stamp = _now()
    for cid, ms in groups.items():
        config = ms[0].config.as_dict()
        for other in ms[1:]:
            if other.config.as_dict() != config:
                raise BaselineError(
                    f"case={cid!r}: measurements with different LoaderConfigs share one case id. Fix the case ids."
                )
        notes = tuple(dict.fromkeys(w for m in ms for w in m.warnings))
        runs = tuple(replace(Run.from_measurement(m), recorded=stamp, session=session) for m in ms)
        out.append(CaseEntry(cid, ms[0].workload, ms[0].device, config, runs, stamp, notes))
    return out


class BaselineStore:
    """The baseline documents in one directory (default ``fixtures/baselines``)."""

    def __init__(self, directory: str | os.PathLike[str] = DEFAULT_DIR) -> None:
        self.directory = Path(directory)

    def path_for(self, fingerprint: Fingerprint) -> Path:
        return self.directory / f"{fingerprint.key}.json"

    def load(self, fingerprint: Fingerprint) -> BaselineDoc | None:
        """The document for this fingerprint; None when there is none.  Raises :class:`BaselineError`
        when it exists but cannot be used, or was written for another fingerprint."""
        path = self.path_for(fingerprint)
        if not path.exists():
            return None
        doc = read(path)
        if doc.fingerprint != fingerprint:
            raise BaselineError(
                f"{path}: its fingerprint does not match its file name (differs in: "
                f"{'; '.join(diff(doc.fingerprint, fingerprint))}). The file was renamed or edited. {_RERECORD}"
            )
        return doc

    def documents(self) -> list[Path]:
        """Every baseline file in the directory (possibly for other machines)."""
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.glob("*.json") if not p.name.startswith("."))

    def closest(self, fingerprint: Fingerprint) -> tuple[BaselineDoc | None, list[str], list[str]]:
        """The readable document whose fingerprint differs least from ``fingerprint``.

        Returns ``(doc, differences, problems)``; ``problems`` lists files that
        could not be read (they are skipped here, not fatal: they belong to other machines).
        """
        best: tuple[int, BaselineDoc, list[str]] | None = None
        problems = []
        for path in self.documents():
            try:
                doc = read(path)
            except BaselineError as exc:
                problems.append(str(exc))
                continue
            differences = diff(doc.fingerprint, fingerprint)
            if best is None or len(differences) < best[0]:
                best = (len(differences), doc, differences)
        if best is None:
            return None, [], problems
        return best[1], best[2], problems

    def save(
        self,
        fingerprint: Fingerprint,
        entries: Sequence[CaseEntry],
        *,
        prune: bool = False,
        append: bool = False,
        written_by: str = "",
    ) -> Path:
        """Merge ``entries`` into this machine's document, atomically and under a lock.

        A case in ``entries`` replaces its stored entry (with ``append=True``
        its runs are added to the stored ones of the same config, keeping the
        runs of the last :data:`MAX_SESSIONS` recording sessions).  Stored cases absent from ``entries`` are kept,
        unless ``prune=True``.  Creates the directory.  Returns the file's path.
        """
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BaselineError(
                f"baseline_dir={str(self.directory)!r}: cannot create it ({exc.strerror}). "
                "Pass a writable directory with --loader-baseline-dir."
            ) from None
        path = self.path_for(fingerprint)
        with _locked(self.directory / f".{fingerprint.key}.lock"):
            _remove_stale_temps(path)
            old = self.load(fingerprint) if path.exists() else None
            cases: dict[str, CaseEntry] = {} if (old is None or prune) else dict(old.cases)
            for entry in entries:
                previous = old.cases.get(entry.case_id) if old is not None else None
                if append and previous is not None and dict(previous.config) == dict(entry.config):
                    entry = replace(entry, runs=_last_sessions(previous.runs + entry.runs, MAX_SESSIONS))
                cases[entry.case_id] = entry
            now = _now()
            doc = BaselineDoc(
                path=path,
                fingerprint=fingerprint,
                cases=dict(sorted(cases.items())),
                created=old.created if old is not None and old.created else now,
                updated=now,
                written_by=written_by or _written_by(),
            )
            atomic_write(path, dumps(doc))
        return path


def _last_sessions(runs: tuple[Run, ...], keep: int) -> tuple[Run, ...]:
    order = list(dict.fromkeys(r.session or f"#{i}" for i, r in enumerate(runs)))
    kept = set(order[-keep:])
    return tuple(r for i, r in enumerate(runs) if (r.session or f"#{i}") in kept)


def _written_by() -> str:
    from loaderbench import __version__

    return f"loaderbench {__version__}"


# --- file primitives --------------------------------------------------------------------


@contextlib.contextmanager
def _locked(lock_path: Path, timeout_s: float = _LOCK_TIMEOUT_S) -> Iterator[None]:
    """An exclusive ``flock`` on ``lock_path`` (the lock file is left in place on purpose:
    deleting it would let two savers lock two different files)."""
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise BaselineError(
            f"{lock_path}: cannot open the lock file ({exc.strerror}). Check the directory is writable."
        ) from None
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() > deadline:
                    raise BaselineError(
                        f"{lock_path}: another process has held the baseline lock for {timeout_s:g} s. "
                        "Wait for the other save to finish, or remove the lock file if no save is running."
                    ) from None
                time.sleep(0.01)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _remove_stale_temps(path: Path) -> None:
    """Temporary files of a saver that crashed (safe under the lock: no other saver is writing)."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(OSError):
            stale.unlink()


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old content or the new, never a mix."""
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename durable; not possible on every filesystem
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


# --- JSON ---------------------------------------------------------------------------------


def _summary(entry: CaseEntry) -> dict[str, Any]:
    """Per-metric medians and noise, for people reading the file (recomputed on load)."""
    out: dict[str, Any] = {}
    for metric in METRICS.values():
        values = [metric.run_value(r) for r in entry.runs]
        values = [v for v in values if math.isfinite(v) and v > 0]
        if not values:
            continue
        logs = [math.log(v) for v in values]
        sessions = len({r.session or f"#{i}" for i, r in enumerate(entry.runs)})
        item: dict[str, Any] = {"median": stats.median(values), "runs": len(values), "sessions": sessions}
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


def _finite(values: Mapping[str, float]) -> dict[str, float]:
    return {k: v for k, v in values.items() if math.isfinite(v)}


def dumps(doc: BaselineDoc) -> str:
    """The document as JSON text: stable key order, number lists on one line (readable diffs)."""
    cases = {}
    for cid, e in doc.cases.items():
        cases[cid] = {
            "workload": e.workload,
            "device": e.device,
            "config": dict(e.config),
            "recorded": e.recorded,
            "runs": [
                {
                    "recorded": r.recorded,
                    "session": r.session,
                    "rounds": {k: [v for v in vs if math.isfinite(v)] for k, vs in r.rounds.items()},
                    "values": _finite(r.values),
                }
                for r in e.runs
            ],
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
        "cases": cases,
    }
    text = json.dumps(data, indent=2, allow_nan=False)
    return _NUMBER_LIST.sub(lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text) + "\n"


def read(path: Path) -> BaselineDoc:
    """Read and validate one baseline file.  Every problem is a :class:`BaselineError` naming the file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BaselineError(f"{path}: cannot read it ({exc.strerror}). Check the file's permissions.") from None
    if not raw.strip():
        raise BaselineError(f"{path}: the file is empty (a truncated write). {_RERECORD}")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise BaselineError(f"{path}: not UTF-8 text; the file is corrupt. {_RERECORD}") from None
    except json.JSONDecodeError as exc:
        raise BaselineError(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
            f"the file is truncated or corrupt. {_RERECORD}"
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BaselineError(
            f'{path}: not a loaderbench baseline (no "format": "{FORMAT}"). Remove it from the baseline directory.'
        )
    version = data.get("version")
    if version != VERSION:
        if isinstance(version, int) and version > VERSION:
            why = f"it was written by a newer loaderbench (format version {version}; this one reads {VERSION})"
            fix = "Upgrade loaderbench, or record a new baseline with this version"
        else:
            why = f"its format version is {version!r}, and this loaderbench reads only version {VERSION}"
            fix = _RERECORD
        raise BaselineError(f"{path}: {why}. {fix}.")
    try:
        return _parse(path, data)
    except (KeyError, TypeError, ValueError) as exc:
        detail = f"field {exc} is missing" if isinstance(exc, KeyError) else str(exc)
        raise BaselineError(f"{path}: malformed baseline ({detail}). {_RERECORD}") from None


def _parse(path: Path, data: Mapping[str, Any]) -> BaselineDoc:
    fingerprint = Fingerprint.from_dict(_mapping(data["fingerprint"], "fingerprint"))
    cases = {}
    for cid, raw in _mapping(data["cases"], "cases").items():
        entry = _mapping(raw, f"case {cid!r}")
        runs = []
        for i, run in enumerate(_list(entry["runs"], f"case {cid!r} runs")):
            where = f"case {cid!r} run {i}"
            run = _mapping(run, where)
            rounds = {
                str(k): tuple(_number(v, f"{where} rounds.{k}") for v in _list(vs, f"{where} rounds.{k}"))
                for k, vs in _mapping(run["rounds"], f"{where} rounds").items()
            }
            values = {
                str(k): _number(v, f"{where} values.{k}") for k, v in _mapping(run["values"], f"{where} values").items()
            }
            recorded, session = str(run.get("recorded", "")), str(run.get("session", ""))
            runs.append(Run(rounds=rounds, values=values, recorded=recorded, session=session))
        if not runs:
            raise ValueError(f"case {cid!r} has no runs")
        cases[str(cid)] = CaseEntry(
            case_id=str(cid),
            workload=str(entry["workload"]),
            device=str(entry["device"]),
            config=_mapping(entry["config"], f"case {cid!r} config"),
            runs=tuple(runs),
            recorded=str(entry.get("recorded", "")),
            notes=tuple(str(n) for n in _list(entry.get("notes", []), f"case {cid!r} notes")),
        )
    return BaselineDoc(
        path=path,
        fingerprint=fingerprint,
        cases=cases,
        created=str(data.get("created", "")),
        updated=str(data.get("updated", "")),
        written_by=str(data.get("written_by", "")),
    )


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"{where} is not a JSON object")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"{where} is not a JSON list")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{where} is not a finite number")
    return float(value)
