"""``--loader-history`` and ``--loader-history-fail`` in a benchmark session (and in the A/B, for its head arm).

At the start of a measuring session the keeper reads this machine's history in the directory, if there is one
(every file of its hardware: its own ``<key>.jsonl`` and any copied there from other runners of the class,
merged; other machines' files are left alone), so that a bad file is a usage error before anything is
measured, and so that a gate run can pool each case's measured drift into its noise priors
(:mod:`loaderbench.history.drift`).  At the end it appends one record per measured case
(never for a case that failed, never from a pytest-xdist worker, never after an interrupted run) as one run
(:mod:`loaderbench.history.store`); with ``--loader-history-fail`` it then reads the history back and fails the
run on every regression the newest runs opened (:mod:`loaderbench.history.alarms`).  A history that cannot be
appended to fails the run too, as an unsaved baseline does: a nightly job that silently stopped keeping its
history would read green.
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest

from loaderbench.errors import HistoryError, UsageError
from loaderbench.gate.priors import Prior
from loaderbench.gate.thresholds import Thresholds
from loaderbench.history import store
from loaderbench.history.alarms import OpenRegression, open_regressions
from loaderbench.history.drift import case_drift, offset_drift
from loaderbench.history.record import records_from
from loaderbench.history.store import History
from loaderbench.measurement import Measurement, now
from loaderbench.pytest_plugin.run_options import run_options
from loaderbench.store.environment import Environment
from loaderbench.store.fingerprint import Fingerprint

#: The heading of the regressions ``--loader-history-fail`` found.
HEADING = "HISTORY REGRESSIONS (--loader-history-fail)"


def history_directory(text: str) -> Path:
    """argparse type of ``--loader-history``: a directory (created when missing), never an existing file."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "Could not parse value: --loader-history='' is empty. Pass a directory, e.g. --loader-history=history."
        )
    path = Path(text)
    try:
        a_file = path.exists() and not path.is_dir()
    except (OSError, ValueError) as exc:  # a NUL byte, a name too long
        raise argparse.ArgumentTypeError(
            f"Could not parse value: --loader-history={text!r} is not a usable directory name ({exc}). "
            "Pass a directory, e.g. --loader-history=history."
        ) from None
    if a_file:
        raise argparse.ArgumentTypeError(
            f"Could not parse value: --loader-history={text!r} is a file, not a directory. Pass the directory "
            "that holds (or will hold) the history files, one per hardware key; it is created when missing."
        )
    return path


class HistoryKeeper:
    """This machine's history in one directory: read at the start, appended to at the end of a run."""

    def __init__(
        self,
        directory: Path,
        hardware: Fingerprint,
        environment: Environment,
        *,
        fail: bool = False,
        thresholds: Thresholds | None = None,
    ) -> None:
        self.directory = directory
        self.hardware = hardware
        self.environment = environment
        self.fail = fail
        self.thresholds = thresholds or Thresholds()
        self.path = store.path_for(directory, hardware)
        # a bad file is a usage error now, before anything is measured (HistoryError propagates)
        self.history = self._read()
        self.lines: list[str] = [
            f"loaderbench history: {note}" for note in (self.history.notes if self.history else ())
        ]
        if self.history is None:
            self.lines.append(f"loaderbench history: no run of this machine ({hardware.key}) in {directory} yet")
        self.regressions: list[OpenRegression] = []
        self.error = ""

    def _read(self) -> History | None:
        """This machine's runs in the directory: every file of its hardware (its own, and copies from other
        runners of the class), merged; other machines' files are theirs, and left alone."""
        if not self.directory.is_dir():
            return None
        mine = [h for h in store.histories(self.directory) if h.hardware == self.hardware]
        return mine[0] if mine else None

    @classmethod
    def of(cls, config: pytest.Config, hardware: Fingerprint, environment: Environment) -> HistoryKeeper | None:
        """The keeper ``config``'s options ask for; None without ``--loader-history`` and in an xdist worker.
        Raises :class:`UsageError` for ``--loader-history-fail`` alone, :class:`HistoryError` for a bad file."""
        opts = run_options(config)
        directory = opts.history
        fail = opts.history_fail
        if fail and directory is None:
            raise UsageError(
                "--loader-history-fail: there is no history to look at. Add --loader-history=DIR (the directory "
                "the nightly job keeps its history in)."
            )
        if directory is None or getattr(config, "workerinput", None) is not None:
            return None  # a pytest-xdist worker never writes: see loaderbench.pytest_plugin.parallel
        thresholds = opts.threshold
        return cls(directory, hardware, environment, fail=fail, thresholds=thresholds)

    def offset_drift(self) -> dict[str, Prior]:
        """Each metric's measured between-run noise of a run's common offset (empty: too few runs or cases)."""
        return offset_drift(self.history) if self.history is not None else {}

    def drift(self) -> dict[tuple[str, str], Prior]:
        """Each case's measured between-run noise from the history read at the start (empty: none yet)."""
        found = case_drift(self.history) if self.history is not None else {}
        if found:
            self.lines.append(
                f"loaderbench history: the drift of {len({c for c, _ in found})} case(s), measured over their runs in "
                f"{self.directory}, is pooled with the gate's noise priors (it widens them where the history is "
                "noisier)"
            )
        return found

    def keep(
        self, measurements: Sequence[Measurement], *, environment: Environment | None = None, interrupted: bool = False
    ) -> None:
        """Append ``measurements`` as one run (one record per case), under ``environment`` (default: this
        process's); then, with ``fail``, look for regressions.  An ``interrupted`` run appends nothing, as it saves
        no baseline."""
        if interrupted:
            self.lines.append("loaderbench history: the run was interrupted; nothing appended")
            return
        run = uuid.uuid4().hex[:12]
        records = records_from(measurements, run=run, time=now(), environment=environment or self.environment)
        if not records:
            self.lines.append("loaderbench history: no case was measured; nothing appended")
            return
        try:
            path = store.append(self.directory, self.hardware, records)
        except HistoryError as exc:
            self.error = f"the history was NOT appended to (the run fails): {exc}"
            self.lines.append(f"loaderbench history: {self.error}")
            return
        self.lines.append(f"loaderbench history: appended {len(records)} case(s) as run {run} to {path}")
        if self.fail:
            self._check([r.case for r in records])

    def _check(self, cases: Sequence[str]) -> None:
        try:
            history = self._read()
        except HistoryError as exc:
            history, why = None, str(exc)
        else:
            why = f"no run of this machine in {self.directory}"
        if history is None:
            self.error = f"--loader-history-fail could not read the history back: {why}"
            self.lines.append(f"loaderbench history: {self.error}")
            return
        self.regressions = open_regressions(history, cases=cases, thresholds=self.thresholds)
        if not self.regressions:
            self.lines.append(
                f"loaderbench history: no regression opened by the newest runs in {len(cases)} case(s) "
                f"({len(history.records)} runs of cases in the history)"
            )
            return
        self.lines += [f"{HEADING}: {len(self.regressions)}", *(f"  {r.sentence()}" for r in self.regressions)]

    def failures(self) -> list[tuple[str, int, str]]:
        """Why the run fails because of its history (``(summary key, count, reason)`` each; empty: it does not)."""
        out = []
        if self.error:
            out.append(("history not kept", 1, self.error))
        if self.regressions:
            n = len(self.regressions)
            out.append(("history regressed", n, f"--loader-history-fail: {n} regression(s) opened by the newest runs"))
        return out
