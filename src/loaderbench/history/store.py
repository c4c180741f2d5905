"""The history store: append runs to ``DIR/<fingerprint key>.jsonl``, and read one or several files back.

The format is :mod:`loaderbench.history.record`'s.  The promises:

* **Append-only.**  A run's records are appended as whole lines in one ``write`` on a descriptor opened with
  ``O_APPEND``, then ``fsync``-ed; nothing already in the file is ever rewritten, except a torn last line
  (below).  Appends take the store's lock (:func:`loaderbench.jsondoc.locked`, an ``flock`` on
  ``.NAME.jsonl.lock`` beside the file), so concurrent appends from several processes all land, whole.
* **Crash-safe.**  A run killed mid-append leaves at most a torn last line (no newline at its end).  A reader
  skips a torn *last* line with a warning (logged, and in :attr:`History.notes`); the next append, under the
  lock, cuts it off (or ends it with a newline, if it is a whole record) before it writes.  An empty file (a
  run killed as it created the file) reads as no runs and is given its header by the next append.
* **Bad lines are errors.**  Any other line that is not JSON, not a record, or another format's header is a
  :class:`~loaderbench.errors.HistoryError` naming the file and the line number; nothing is skipped
  silently, and every other line and file stays readable (``skip_bad=True`` reads past them, each listed in
  the notes, for tools that must show what there is).  Appends never read the middle of the file, so a bad
  line there does not stop new runs from being kept.
* **Versioned, keyed by hardware.**  A header of a newer format version is refused ("upgrade loaderbench");
  a history of other hardware than the one asked for (``hardware=``, or the file appended to) is refused,
  naming what differs.
* **Merged histories.**  A directory is read as every ``*.jsonl`` in it; files (or directories) of several
  runners of one hardware class, copied side by side or concatenated into one file, read as one history:
  one series per case, ordered by time, a run seen twice (the same ``run`` and ``case``) kept once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loaderbench import jsondoc
from loaderbench.errors import HistoryError
from loaderbench.history.record import Point, RunRecord, header, header_hardware, is_header, point
from loaderbench.measurement import now
from loaderbench.metrics import METRICS
from loaderbench.store.environment import Environment
from loaderbench.store.fingerprint import Fingerprint, diff

#: A history file's suffix.
SUFFIX = ".jsonl"
#: The fault hook's step (tests only, :mod:`loaderbench.jsondoc`): die with half an append written.
HALF_WRITTEN = "history-half-written"
#: The lock's default patience (seconds), as the baseline store's.
LOCK_TIMEOUT_S = 120.0
#: How every header this code writes begins (a torn one is a prefix of it).
_HEADER_START = b'{"format":"loaderbench-history"'

_log = logging.getLogger(__name__)


def path_for(directory: Path, hardware: Fingerprint) -> Path:
    """The history file of ``hardware`` in ``directory``."""
    return directory / f"{hardware.key}{SUFFIX}"


@dataclass(frozen=True, slots=True)
class History:
    """The runs of one hardware class, from one or more files, ordered by time (ties: in reading order).

    ``notes`` says what was skipped (a torn last line, a bad line under ``skip_bad``, duplicate runs)."""

    hardware: Fingerprint
    records: tuple[RunRecord, ...]
    paths: tuple[Path, ...]
    notes: tuple[str, ...] = ()
    _by_case: dict[str, tuple[RunRecord, ...]] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        groups: dict[str, list[RunRecord]] = {}
        for r in self.records:
            groups.setdefault(r.case, []).append(r)
        self._by_case.update({c: tuple(rs) for c, rs in groups.items()})

    def cases(self) -> list[str]:
        """Every case with at least one run, sorted."""
        return sorted(self._by_case)

    def runs(self, case: str) -> tuple[RunRecord, ...]:
        """``case``'s records, ordered by time; a :class:`HistoryError` names the known cases for an unknown one."""
        found = self._by_case.get(case)
        if found is None:
            known = ", ".join(self.cases()[:12]) or "none"
            raise HistoryError(f"case={case!r}: no run of it in the history ({self.where()}). Known cases: {known}.")
        return found

    def metrics(self, case: str) -> list[str]:
        """The metrics any run of ``case`` recorded, in the gate's order (unknown names last, by name)."""
        order = {name: i for i, name in enumerate(METRICS)}
        seen = {name for r in self.runs(case) for name in r.metrics}
        return sorted(seen, key=lambda name: (order.get(name, len(order)), name))

    def series(self, case: str, metric: str) -> tuple[Point, ...]:
        """``case``'s runs that recorded ``metric``, as points ordered by time (empty when none did)."""
        return tuple(p for p in (point(r, metric) for r in self.runs(case)) if p is not None)

    def where(self) -> str:
        return ", ".join(str(p) for p in self.paths) or "no file"


# --- reading ---------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _File:
    path: Path
    hardware: Fingerprint | None
    records: list[RunRecord]
    notes: list[str]
    environments: dict[str, Environment] = field(default_factory=dict)


def files_in(path: Path) -> list[Path]:
    """The history files ``path`` names: itself, or every ``*.jsonl`` of a directory (hidden files aside)."""
    if path.is_dir():
        return sorted(p for p in path.glob(f"*{SUFFIX}") if not p.name.startswith(".") and p.is_file())
    if not path.exists():
        raise HistoryError(
            f"history={str(path)!r}: no such file or directory. Pass the directory given to --loader-history "
            "(or one of its .jsonl files)."
        )
    return [path]


def histories(path: Path, *, skip_bad: bool = False) -> tuple[History, ...]:
    """Every hardware class's history in ``path`` (a file or a directory), one :class:`History` each."""
    by_key: dict[str, list[_File]] = {}
    for p in files_in(path):
        f = _read_file(p, skip_bad=skip_bad)
        if f.hardware is not None:
            by_key.setdefault(f.hardware.key, []).append(f)
    return tuple(_merge(fs) for _, fs in sorted(by_key.items()))


def read(path: Path, *, hardware: Fingerprint | None = None, skip_bad: bool = False) -> History:
    """The history in ``path`` (a directory, or one file) as one :class:`History`.

    ``hardware`` picks that machine's files and refuses a history of other hardware, naming what differs;
    without it, every file must be of one hardware class.  Raises :class:`HistoryError` for a bad file or line
    (``skip_bad``: reads past bad lines, listing them in the notes), and when there is no run at all."""
    found = histories(path, skip_bad=skip_bad)
    if hardware is not None:
        mine = [h for h in found if h.hardware == hardware]
        if mine:
            return mine[0]
        if found:
            other = found[0]
            raise HistoryError(
                f"history={str(path)!r}: recorded on other hardware than this machine "
                f"({'; '.join(diff(other.hardware, hardware))}). A history gates only the machine class it was "
                "recorded on: point --loader-history at this machine's history, or start a new one in an empty "
                "directory."
            )
        raise HistoryError(f"history={str(path)!r}: holds no history of this machine ({hardware.key}) yet.")
    if not found:
        raise HistoryError(
            f"history={str(path)!r}: holds no history file with a header. Record one with "
            "pytest --benchmark --loader-history=DIR."
        )
    if len(found) > 1:
        keys = ", ".join(h.hardware.key for h in found)
        raise HistoryError(
            f"history={str(path)!r}: holds the histories of {len(found)} hardware classes ({keys}), whose runs "
            "cannot share a series. Pass one of its files."
        )
    return found[0]


def _merge(files: Sequence[_File]) -> History:
    hardware = files[0].hardware
    assert hardware is not None
    seen: set[tuple[str, str]] = set()
    kept: list[tuple[Any, int, RunRecord]] = []
    duplicates = 0
    for r in (r for f in files for r in f.records):
        key = (r.run, r.case)
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        kept.append((r.moment, len(kept), r))
    notes = [n for f in files for n in f.notes]
    if duplicates:
        notes.append(f"{duplicates} run(s) of a case seen more than once (merged copies) were kept once")
    kept.sort(key=lambda item: (item[0], item[1]))
    return History(hardware, tuple(r for _, _, r in kept), tuple(f.path for f in files), tuple(notes))


def _read_file(path: Path, *, skip_bad: bool) -> _File:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise HistoryError(f"{path}: cannot read it ({exc.strerror}). Check the file's permissions.") from None
    out = _File(path, None, [], [])
    if not raw.strip():
        out.notes.append(f"{path}: empty (a run was killed as it created it); no runs")
        _log.warning("%s", out.notes[-1])
        return out
    lines = raw.split(b"\n")
    torn = not raw.endswith(b"\n")  # the last element is then a line without its end
    if not torn:
        lines.pop()
    for number, text in enumerate(lines, start=1):
        last = number == len(lines)
        try:
            _take(out, number, text)
        except ValueError as exc:
            if number == 1 and out.hardware is None and not (torn and last):
                raise HistoryError(
                    f"{path}: line 1: {exc}. This is not a loaderbench history file: pass the directory given to "
                    "--loader-history, or one of its .jsonl files."
                ) from None
            if torn and last:
                out.notes.append(
                    f"{path}: line {number}: a torn last line (a run killed mid-append) was skipped; the next "
                    "append removes it"
                )
                _log.warning("%s", out.notes[-1])
            elif skip_bad:
                out.notes.append(f"{path}: line {number} skipped: {exc}")
            else:
                raise HistoryError(
                    f"{path}: line {number}: {exc}. The other lines are intact: fix or delete that line "
                    f"(sed -i '{number}d' {path}), or restore the file from a copy."
                ) from None
    return out


def _take(out: _File, number: int, text: bytes) -> None:
    """Parse line ``number`` into ``out``; ``ValueError`` saying what is wrong with it."""
    if not text.strip():
        if number == 1:
            raise ValueError("blank where the header belongs")
        return  # a blank line between records: harmless
    try:
        data = json.loads(text.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text (the file is corrupt)") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at column {exc.colno}): truncated or corrupt") from None
    except RecursionError:
        raise ValueError("nested too deeply to be a history line") from None
    if is_header(data):
        hardware = header_hardware(data)
        if out.hardware is not None and hardware != out.hardware:
            raise ValueError(
                "a header of other hardware in the middle of the file (differs in: "
                f"{'; '.join(diff(out.hardware, hardware))}); histories of different machines cannot be merged"
            )
        out.hardware = hardware
        return
    if out.hardware is None:
        raise ValueError("no header line before it")
    out.records.append(RunRecord.from_json(data, seen=out.environments))


# --- appending -------------------------------------------------------------------------------------------------


def append(
    directory: Path, hardware: Fingerprint, records: Iterable[RunRecord], *, lock_timeout_s: float = LOCK_TIMEOUT_S
) -> Path:
    """Append ``records`` to ``hardware``'s history in ``directory`` (created with its header if new), whole and
    durable, under the lock.  Returns the file's path.  Raises :class:`HistoryError` when the directory cannot
    be written, the lock cannot be taken, or the file is another format, a newer version or other hardware."""
    lines = "".join(r.line() for r in records)
    path = path_for(directory, hardware)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HistoryError(
            f"--loader-history={str(directory)!r}: cannot create it ({exc.strerror}). Pass a writable directory."
        ) from None
    if not lines:
        return path
    with jsondoc.locked(path, timeout_s=lock_timeout_s, error=HistoryError):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise HistoryError(f"{path}: cannot open it for appending ({exc.strerror}).") from None
        try:
            prefix = _prepare(fd, path, hardware)
            _write(fd, (prefix + lines).encode("utf-8"))
        except OSError as exc:
            raise HistoryError(f"{path}: the append failed ({exc.strerror}); the lines before it are intact.") from None
        finally:
            os.close(fd)
    return path


def _prepare(fd: int, path: Path, hardware: Fingerprint) -> str:
    """What must precede the new lines: the header of a new (or empty) file, a newline ending a whole last
    record; a torn last line is cut off.  Checks the header's format, version and hardware."""
    size = os.fstat(fd).st_size
    first = _first_line(fd, size)
    if first is None:
        opening = os.pread(fd, len(_HEADER_START), 0)
        if not (opening.startswith(_HEADER_START) or _HEADER_START.startswith(opening)):
            raise HistoryError(
                f"{path}: line 1 is not a loaderbench history header. Not appending to it: move it away, or pass "
                "another --loader-history directory."
            )
        os.ftruncate(fd, 0)  # empty, or a header torn as the file was created: no run was in it
        return _header_line(hardware)
    try:
        data = json.loads(first.decode("utf-8"))
        found = header_hardware(data if isinstance(data, dict) else {})
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise HistoryError(
            f"{path}: line 1: {exc}. Not appending to it: move it away, or pass another --loader-history directory."
        ) from None
    if found != hardware:
        raise HistoryError(
            f"{path}: its header names other hardware than this machine ({'; '.join(diff(found, hardware))}): the "
            "file was renamed or edited. Not appending to it: move it away and start a new history."
        )
    last = os.pread(fd, 1, size - 1)
    if last == b"\n":
        return ""
    start = _last_newline(fd, size) + 1
    tail = os.pread(fd, size - start, start)
    with contextlib.suppress(ValueError, UnicodeDecodeError, RecursionError):
        RunRecord.from_json(json.loads(tail.decode("utf-8")))
        return "\n"  # a whole record that only lacks its newline
    _log.warning("%s: cut off a torn last line (%d bytes) left by a run killed mid-append", path, size - start)
    os.ftruncate(fd, start)
    return ""


def _header_line(hardware: Fingerprint) -> str:
    return json.dumps(header(hardware, created=now()), allow_nan=False, separators=(",", ":")) + "\n"


def _first_line(fd: int, size: int) -> bytes | None:
    """The first line, when it is complete (ends with a newline); None for an empty file or a torn header."""
    chunk, offset = b"", 0
    while offset < size:
        block = os.pread(fd, 65536, offset)
        if not block:
            break
        cut = block.find(b"\n")
        if cut >= 0:
            return chunk + block[:cut]
        chunk += block
        offset += len(block)
    return None


def _last_newline(fd: int, size: int) -> int:
    """The offset of the last newline (-1: none)."""
    end = size
    while end > 0:
        start = max(0, end - 65536)
        block = os.pread(fd, end - start, start)
        cut = block.rfind(b"\n")
        if cut >= 0:
            return start + cut
        end = start
    return -1


def _write(fd: int, data: bytes) -> None:
    """``data`` appended and fsynced: one ``write`` (a short write goes on from where it stopped)."""
    if os.environ.get(jsondoc.FAULT_ENV) == HALF_WRITTEN:  # tests only: die with half of it written
        os.write(fd, data[: len(data) // 2])
        os.fsync(fd)
        jsondoc.fault(HALF_WRITTEN)
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
    os.fsync(fd)
