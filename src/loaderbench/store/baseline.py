"""The baseline store: one versioned JSON document per hardware fingerprint, in one directory.

``<dir>/<fingerprint key>.json`` holds, for every case, its LoaderConfig and
every recorded measurement of it (the document's types and format are in
:mod:`loaderbench.store.document`).  A saver takes the document's lock
(:mod:`loaderbench.jsondoc`), re-reads the document, merges its cases in
and replaces the file atomically, so a crash at any point leaves the old
document or the new one.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from loaderbench import jsondoc
from loaderbench.config import complete_stored
from loaderbench.errors import BaselineError
from loaderbench.measurement import Measurement, now, sessions
from loaderbench.store.document import (
    FORMAT,
    READABLE,
    RERECORD,
    VERSION,
    BaselineDoc,
    CaseEntry,
    SessionInfo,
    dumps,
    read,
)
from loaderbench.store.environment import Environment
from loaderbench.store.fingerprint import Fingerprint, diff

__all__ = [
    "DEFAULT_DIR",
    "FORMAT",
    "MAX_SESSIONS",
    "READABLE",
    "SPIN_CALIBRATION",
    "VERSION",
    "BaselineDoc",
    "BaselineError",
    "BaselineStore",
    "CaseEntry",
    "SessionInfo",
    "dumps",
    "entries_from",
    "read",
]

DEFAULT_DIR = Path("fixtures") / "baselines"
#: The name the cpu workload's spin calibration is recorded under in a session's ``calibration``.
SPIN_CALIBRATION = "spin_loops_per_s"
#: Recording sessions kept per case when sessions are appended (a rolling baseline).
MAX_SESSIONS = 10


def entries_from(
    measurements: Sequence[Measurement], *, session: str | None = None, case_ids: Sequence[str] | None = None
) -> list[CaseEntry]:
    """Group measurements by case id (several measurements of one case become its runs),
    all tagged with one recording ``session`` id (a fresh one by default: one save is one session).  ``case_ids``,
    parallel to ``measurements``, overrides their ``case_id``."""
    session = session or uuid.uuid4().hex[:12]
    if case_ids is not None and len(case_ids) != len(measurements):
        raise BaselineError(f"case_ids: {len(case_ids)} ids for {len(measurements)} measurements. Pass one id each.")
    ids = list(case_ids) if case_ids is not None else [m.case_id for m in measurements]
    groups: dict[str, list[Measurement]] = {}
    for cid, m in zip(ids, measurements, strict=True):
        groups.setdefault(cid, []).append(m)
    out = []
    stamp = now()
    for cid, ms in groups.items():
        config = ms[0].config.as_dict()
        for other in ms[1:]:
            if other.config.as_dict() != config:
                raise BaselineError(
                    f"case={cid!r}: measurements with different LoaderConfigs share one case id. Fix the case ids."
                )
        notes = tuple(dict.fromkeys(w for m in ms for w in m.warnings))
        runs = tuple(m.stamped(session=session, recorded=m.recorded or stamp) for m in ms)
        out.append(CaseEntry(cid, ms[0].workload, ms[0].device, config, runs, stamp, notes))
    return out


class BaselineStore:
    """The baseline documents in one directory (default ``fixtures/baselines``)."""

    def __init__(self, directory: str | os.PathLike[str] = DEFAULT_DIR, *, lock_timeout_s: float = 120.0) -> None:
        self.directory = Path(directory)
        self.lock_timeout_s = lock_timeout_s

    def path_for(self, fingerprint: Fingerprint) -> Path:
        return self.directory / f"{fingerprint.key}.json"

    def load(self, fingerprint: Fingerprint) -> BaselineDoc | None:
        """The document for this fingerprint; None when there is none.  Raises :class:`BaselineError`
        when it exists but cannot be used, or was written for another fingerprint."""
        path = self.path_for(fingerprint)
        if not path.exists():
            return self._older_format(fingerprint)
        doc = read(path)
        if doc.fingerprint != fingerprint:
            raise BaselineError(
                f"{path}: its fingerprint does not match its file name (differs in: "
                f"{'; '.join(diff(doc.fingerprint, fingerprint))}). The file was renamed or edited. {RERECORD}"
            )
        return doc

    def _older_format(self, fingerprint: Fingerprint) -> BaselineDoc | None:
        """A format-1 document of this hardware, under its old name (which hashed the software too)."""
        for path in self.documents():
            try:
                doc = read(path)
            except BaselineError:
                continue  # another machine's problem; `closest` reports unreadable files
            if doc.version == 1 and doc.fingerprint == fingerprint:
                return doc
        return None

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
        sessions_info: Mapping[str, SessionInfo] | None = None,
    ) -> Path:
        """Merge ``entries`` into this machine's document, atomically and under a lock.

        A case in ``entries`` replaces its stored entry (with ``append=True``
        its runs are added to the stored ones of the same config, keeping the
        runs of the last :data:`MAX_SESSIONS` recording sessions).  Stored cases absent from ``entries`` are kept,
        unless ``prune=True``.  ``sessions_info`` describes the sessions of the new runs.  A format-1
        document of this hardware is replaced by the new file.  Creates the directory.  Returns the file's path.
        """
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BaselineError(
                f"baseline_dir={str(self.directory)!r}: cannot create it ({exc.strerror}). "
                "Pass a writable directory with --loader-baseline-dir."
            ) from None
        path = self.path_for(fingerprint)
        with jsondoc.locked(path, timeout_s=self.lock_timeout_s, error=BaselineError):
            for stale in jsondoc.stale_temporaries(path):  # a saver killed mid-write (safe under the lock)
                with contextlib.suppress(OSError):
                    stale.unlink()
            old = self.load(fingerprint)
            cases: dict[str, CaseEntry] = {} if (old is None or prune) else dict(old.cases)
            for entry in entries:
                previous = old.cases.get(entry.case_id) if old is not None else None
                if (
                    append
                    and previous is not None
                    and complete_stored(previous.config) == complete_stored(entry.config)
                ):
                    entry = replace(entry, runs=_last_sessions(previous.runs + entry.runs, MAX_SESSIONS))
                cases[entry.case_id] = entry
            stamp = now()
            known = {**(old.sessions if old is not None else {}), **(sessions_info or {})}
            used = {r.session for e in cases.values() for r in e.runs}
            doc = BaselineDoc(
                path=path,
                fingerprint=fingerprint,
                cases=dict(sorted(cases.items())),
                created=old.created if old is not None and old.created else stamp,
                updated=stamp,
                written_by=written_by or jsondoc.WRITTEN_BY,
                sessions={sid: info for sid, info in known.items() if sid in used},
            )
            jsondoc.atomic_write(path, dumps(doc))
            if old is not None and old.path != path:  # a format-1 file, now migrated under the new name
                with contextlib.suppress(OSError):
                    old.path.unlink()
        return path

    def record(
        self,
        fingerprint: Fingerprint,
        measurements: Sequence[Measurement],
        *,
        prune: bool = False,
        append: bool = False,
        case_ids: Sequence[str] | None = None,
        environment: Environment | None = None,
        calibration: Mapping[str, float] | None = None,
    ) -> Path:
        """Record ``measurements`` (several per case become its runs; one session) as this machine's baseline,
        with the session's ``environment`` and ``calibration``.

        ``case_ids``, parallel to ``measurements``, overrides their ``case_id`` as keys.
        ``append=True`` adds this session to each case's stored sessions instead of replacing them.
        """
        session = uuid.uuid4().hex[:12]
        entries = entries_from(measurements, session=session, case_ids=case_ids)
        info = SessionInfo(now(), environment or Environment(), dict(calibration or {}))
        return self.save(fingerprint, entries, prune=prune, append=append, sessions_info={session: info})


def _last_sessions(runs: tuple[Measurement, ...], keep: int) -> tuple[Measurement, ...]:
    groups = list(sessions(runs).values())
    return tuple(r for g in groups[-keep:] for r in g)


# --- JSON ---------------------------------------------------------------------------------
