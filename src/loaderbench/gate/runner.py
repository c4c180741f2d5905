"""The gate's state for one session: the baseline it compares against, its verdicts, and the
extra measurements it takes while a possible regression is undecided.

The decisions themselves are :func:`loaderbench.gate.model.compare`'s; the
end-of-session text is :mod:`loaderbench.report.verdicts`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from loaderbench.errors import LoaderbenchError, UsageError
from loaderbench.gate.model import DEFAULT_SETTINGS, Settings, Verdict, compare
from loaderbench.gate.priors import NoisePriors
from loaderbench.gate.thresholds import Thresholds
from loaderbench.measurement import Measurement
from loaderbench.metrics import METRICS
from loaderbench.store.baseline import BaselineDoc, BaselineStore
from loaderbench.store.environment import Environment, changes
from loaderbench.store.fingerprint import Fingerprint

#: Extra measurements the gate may take per case before it answers ``inconclusive`` (``--loader-max-extra``).
DEFAULT_MAX_EXTRA = 3


class Gate:
    """Compares each measured case with this machine's baseline.  Built once per pytest session.

    Construction reads the baseline (a :class:`~loaderbench.store.baseline.BaselineError`
    propagates for a corrupt or unreadable file).  Without a baseline for this
    fingerprint the gate is inactive and :meth:`status` says why and what to do;
    ``allow_mismatch=True`` compares against the closest other machine's baseline.

    ``environment`` is today's software: the status names what changed since the
    baseline's latest session (``torch 2.13.0 -> 2.14.1``), and a host the baseline
    was not recorded on gets the prior's between-host noise.  ``priors`` are the
    workloads' noise priors (``None``: the baseline's own sessions alone decide, and
    a case needs ``min_sessions`` of them to fail a run).  ``record_command`` is the command the "no
    baseline" status tells the user to run (the session passes the user's own options in it).
    """

    def __init__(
        self,
        store: BaselineStore,
        fingerprint: Fingerprint,
        *,
        thresholds: Thresholds | None = None,
        allow_mismatch: bool = False,
        max_extra_measurements: int = DEFAULT_MAX_EXTRA,
        settings: Settings = DEFAULT_SETTINGS,
        environment: Environment | None = None,
        priors: NoisePriors | None = None,
        record_command: str = "pytest --benchmark --loader-baseline-save",
    ) -> None:
        if max_extra_measurements < 0:
            raise UsageError(f"max_extra_measurements={max_extra_measurements}: must be 0 or more. Use e.g. 3.")
        self.thresholds = thresholds or Thresholds()
        self.max_extra = max_extra_measurements
        self.settings = settings
        self.fingerprint = fingerprint
        self.environment = environment or Environment()
        self.priors = priors
        self.changes: list[str] = []
        self.other_host = True
        self._verdicts: list[Verdict] = []
        self.new_cases: list[str] = []
        self.mismatched: list[str] = []  # cases whose baseline entry has another LoaderConfig
        self.notes: list[str] = []
        save_hint = f"record one with: {record_command}"
        doc = store.load(fingerprint)
        self.doc: BaselineDoc | None = doc
        if doc is not None:
            self._compare_with(doc)
            self._status = (
                f"comparing against {doc.path} ({len(doc.cases)} cases{self._sessions_note(doc)}); {self.context()}"
            )
            return
        other, differences, problems = store.closest(fingerprint)
        skipped = f" (skipped unreadable files: {' | '.join(problems)})" if problems else ""
        if other is None:
            self._status = (
                f"no baseline for this machine ({fingerprint.key}) in {store.directory}{skipped}; "
                f"not comparing. To {save_hint}"
            )
        elif allow_mismatch:
            self.doc = other
            self._compare_with(other)
            self._status = (
                f"comparing anyway against {other.path}, recorded on a different machine: {'; '.join(differences)}; "
                f"{self.context()}"
            )
        else:
            self._status = (
                f"no baseline for this machine ({fingerprint.key}); the closest, {other.path}, was recorded on a "
                f"different machine: {'; '.join(differences)}. Not comparing. To {save_hint}; "
                f"to compare anyway: --loader-compare-anyway{skipped}"
            )

    def _compare_with(self, doc: BaselineDoc) -> None:
        self.changes = changes(doc.environment, self.environment)
        host = self.environment.host_id
        self.other_host = host is None or host not in doc.hosts

    def context(self) -> str:
        """What changed since the baseline, and whether this host recorded it: the header of a comparison."""
        changed = "; ".join(self.changes) if self.changes else "none"
        host = (
            "this host is not one the baseline was recorded on (between-host noise allowed for)"
            if self.other_host
            else "recorded on this host"
        )
        return f"environment changes since the baseline: {changed}; {host}"

    def _sessions_note(self, doc: BaselineDoc) -> str:
        if self.priors is not None:
            return ""  # with priors, every recorded case gates
        few = [cid for cid, e in doc.cases.items() if e.sessions < self.settings.min_sessions]
        if not few:
            return ""
        return (
            f"; {len(few)} recorded in fewer than {self.settings.min_sessions} sessions cannot fail the run yet: "
            "add sessions with --loader-baseline-save --loader-baseline-append"
        )

    @property
    def active(self) -> bool:
        """Whether :meth:`check` compares anything."""
        return self.doc is not None

    def status(self) -> str:
        return self._status

    @property
    def min_sessions(self) -> int:
        return self.settings.min_sessions

    @property
    def verdicts(self) -> tuple[Verdict, ...]:
        return tuple(self._verdicts)

    def uncompared(self) -> list[str]:
        """The measured cases this gate could not compare: no baseline entry, or one with another config."""
        return [*self.new_cases, *self.mismatched]

    @property
    def failed(self) -> bool:
        return any(v.failed for v in self._verdicts)

    def check(
        self, m: Measurement, remeasure: Callable[[], Measurement], *, case_id: str | None = None
    ) -> list[Verdict]:
        """Verdicts for every gated metric the case and its baseline both have.

        ``case_id`` overrides ``m.case_id`` as the baseline key (e.g. with a CUDA
        consumer-spec suffix).  Calls ``remeasure()`` (at most ``max_extra_measurements`` times) while
        a possible regression is still undecided; its results are pooled.
        """
        if self.doc is None:
            return []
        cid = case_id or m.case_id
        entry = self.doc.cases.get(cid)
        if entry is None:
            self.new_cases.append(cid)
            return []
        if dict(entry.config) != m.config.as_dict():
            self.mismatched.append(cid)
            self.notes.append(f"{cid}: the baseline entry has a different LoaderConfig; not compared (re-record it)")
            return []
        current = [m]
        extra = 0
        while True:
            verdicts = self._assess(cid, entry.runs, current, extra)
            if extra >= self.max_extra or not any(v.needs_more for v in verdicts):
                break
            try:
                current.append(remeasure())
            except LoaderbenchError as exc:
                self.notes.append(f"{cid}: an extra measurement failed, deciding with what there is: {exc}")
                break
            extra += 1
        self._verdicts.extend(verdicts)
        return verdicts

    def _assess(
        self, case_id: str, baseline: Sequence[Measurement], current: Sequence[Measurement], extra: int
    ) -> list[Verdict]:
        out = []
        for metric in METRICS.values():
            if not (metric.present(baseline) and metric.present(current)):
                continue
            verdict = compare(
                case_id,
                metric,
                baseline,
                current,
                threshold=self.thresholds.get(case_id, metric),
                settings=self.settings,
                extra_measurements=extra,
                prior=self.priors.get(baseline[0].workload, metric.name) if self.priors is not None else None,
                other_host=self.other_host,
            )
            out.append(verdict)
        return out
