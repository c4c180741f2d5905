"""The gate's state for one session: the baseline it compares against, the cases measured, and at the
end of the session the job's verdicts.

:meth:`Gate.check` keeps each measured case (and returns its provisional verdicts, the case judged
alone); :meth:`Gate.finalize` decides the whole job at once with the one decision engine
(:mod:`loaderbench.decision`: Holm over every case and metric, the common offset, the control case),
and confirms each suspected regression in a fresh process (``confirm``, at most
``max_extra_measurements`` rounds of it) before it may fail the run.  The end-of-session text is
:mod:`loaderbench.report.verdicts`'s.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Callable, Mapping, Sequence

from loaderbench.decision.job import EVERY_CASE, Control, JobDecision, decide_job
from loaderbench.decision.rules import Evidence
from loaderbench.decision.verdict import verdict_of
from loaderbench.engine.control import ControlReading, busier, shift
from loaderbench.errors import LoaderbenchError, UsageError
from loaderbench.gate.model import DEFAULT_SETTINGS, Settings, Verdict, evidence, stored_verdict
from loaderbench.gate.priors import NoisePriors, Prior, pooled
from loaderbench.gate.thresholds import Thresholds
from loaderbench.measurement import Measurement
from loaderbench.metrics import METRICS
from loaderbench.store.baseline import BaselineDoc, BaselineStore
from loaderbench.store.environment import Environment, changes
from loaderbench.store.fingerprint import Fingerprint

#: Fresh-process confirmations the gate may take per suspected regression (``--loader-max-extra``).
DEFAULT_MAX_EXTRA = 3
#: Metrics whose common offset the control case speaks for (not memory).
CONTROLLED = frozenset({"samples_per_s", "ttfb_s", "epoch_stall_s", "cpu_s_per_sample", "feed_samples_per_s"})
#: Measures cases in a fresh process: case ids -> their measurements (absent: not measured).
Confirm = Callable[[Sequence[str]], Mapping[str, Measurement]]


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
    baseline" status tells the user to run (the session passes the user's own options in it).  ``drift``
    holds each case's measured between-run noise ``(case id, metric) -> Prior``, from a history
    (:mod:`loaderbench.history.drift`), pooled conservatively with the workload's prior
    (:func:`loaderbench.gate.priors.pooled`; only with ``priors``); ``offset_drift`` the between-run noise of a
    run's common offset per metric, from the same history, pooled likewise with the priors' ``[offset]``.
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
        drift: Mapping[tuple[str, str], Prior] | None = None,
        offset_drift: Mapping[str, Prior] | None = None,
    ) -> None:
        if max_extra_measurements < 0:
            raise UsageError(f"max_extra_measurements={max_extra_measurements}: must be 0 or more. Use e.g. 3.")
        self.thresholds = thresholds or Thresholds()
        self.record_command = record_command  # the user's own selection and --loader-baseline-dir, for every hint
        self.max_extra = max_extra_measurements
        self.settings = settings
        self.fingerprint = fingerprint
        self.environment = environment or Environment()
        self.priors = priors
        self.drift: Mapping[tuple[str, str], Prior] = drift or {}
        self.offset_drift: Mapping[str, Prior] = offset_drift or {}
        self.changes: list[str] = []
        self.other_host = True
        self._verdicts: list[Verdict] = []
        self.new_cases: list[str] = []
        self.mismatched: list[str] = []  # cases whose baseline entry has another LoaderConfig
        self.notes: list[str] = []
        self._current: dict[str, list[Measurement]] = {}  # today's measurements of each compared case
        self._baselines: dict[str, tuple[Measurement, ...]] = {}
        self.control: Control | None = None
        self.control_today: ControlReading | None = None
        self.load_excess = 0.0
        self.job: JobDecision | None = None
        self.lines: list[str] = []  # what the job said about the machine (the common offset), one line each
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
        if self.environment.host_id is None:
            host = "this host has no id (no /etc/machine-id, DMI UUID or boot id): between-host noise allowed for"
        elif self.other_host:
            host = "this host is not one the baseline was recorded on (between-host noise allowed for)"
        else:
            host = "recorded on this host"
        return f"environment changes since the baseline: {changed}; {host}"

    def _sessions_note(self, doc: BaselineDoc) -> str:
        if self.priors is not None:
            return ""  # with priors, every recorded case gates
        few = [cid for cid, e in doc.cases.items() if e.sessions < self.settings.min_sessions]
        if not few:
            return ""
        return (
            f"; {len(few)} recorded in fewer than {self.settings.min_sessions} sessions cannot fail the run yet: "
            f"add sessions with {self.record_command} --loader-baseline-append"
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

    def check(self, m: Measurement, *, case_id: str | None = None) -> list[Verdict]:
        """Keep ``m`` for the job's decision and return its provisional verdicts (the case judged alone, as
        one hypothesis of a job of its own metrics; :meth:`finalize` decides them for real).

        ``case_id`` overrides ``m.case_id`` as the baseline key (e.g. with a CUDA consumer-spec suffix).
        """
        if self.doc is None:
            return []
        cid = case_id or m.case_id
        entry = self.doc.cases.get(cid)
        if entry is None:
            self.new_cases.append(cid)
            return []
        if not m.config.matches_stored(entry.config):
            self.mismatched.append(cid)
            self.notes.append(f"{cid}: the baseline entry has a different LoaderConfig; not compared (re-record it)")
            return []
        self._current[cid] = [m]
        self._baselines[cid] = entry.runs
        job = decide_job(self._evidence(cid), levels=self.settings.levels)
        return self._verdicts_of(job, {cid})

    def _evidence(self, cid: str) -> list[Evidence]:
        baseline, current = self._baselines[cid], self._current[cid]
        out = []
        for metric in METRICS.values():
            if not (metric.present(baseline) and metric.present(current)) or not metric.applies(baseline):
                continue
            if not metric.comparable(baseline, current):
                note = (
                    f"peak memory was measured as {', '.join(sorted({r.memory_kind for r in baseline}))} in the "
                    f"baseline and {current[0].memory_kind} now (different pages counted): not compared; re-record "
                    "the baseline to gate memory again"
                )
                if note not in self.notes:
                    self.notes.append(note)
                continue
            out.append(
                evidence(
                    cid,
                    metric,
                    baseline,
                    current,
                    threshold=self.thresholds.get(cid, metric),
                    settings=self.settings,
                    prior=self._prior(baseline[0], metric.name, cid),
                    other_host=self.other_host,
                )
            )
        return out

    def _prior(self, m: Measurement, metric: str, case_id: str) -> Prior | None:
        """The workload's prior, pooled with the case's measured drift when a history gave one."""
        if self.priors is None:
            return None
        stored = self.priors.get(m.workload, metric, oversubscribed=m.config.loading_processes > m.cpus)
        measured = self.drift.get((case_id, metric))
        return stored if measured is None else pooled(stored, measured)

    def _verdicts_of(self, job: JobDecision, cases: set[str] | None = None) -> list[Verdict]:
        out = []
        for d in job.decisions:
            cid = d.evidence.case_id
            if cid == EVERY_CASE:
                out.append(verdict_of(d, baseline=d.evidence.baseline, current=d.evidence.current))
                continue
            if cases is not None and cid not in cases:
                continue
            metric = METRICS[d.evidence.metric]
            out.append(stored_verdict(d, metric, self._baselines[cid], self._current[cid], settings=self.settings))
        return out

    def offset_sigma(self) -> dict[str, float]:
        """Each metric's between-period noise of a run's common offset (log sd): the spread of the baseline's
        session offsets (the median over cases of each session's deviation from the case's mean), pooled
        with the priors' ``[offset]`` figure (itself pooled with a history's, when given); widened by how much busier
        the machine is than at recording."""
        out: dict[str, float] = {}
        for metric in METRICS.values():
            per_session: dict[str, list[float]] = {}
            for runs in self._baselines.values():
                if not metric.present(runs):
                    continue
                by: dict[str, list[float]] = {}
                for r in runs:
                    by.setdefault(r.session, []).append(math.log(metric.run_value(r)))
                means = {sid: statistics.fmean(v) for sid, v in by.items()}
                centre = statistics.fmean(means.values())
                for sid, v in means.items():
                    per_session.setdefault(sid, []).append(v - centre)
            offs = [statistics.median(v) for v in per_session.values()]
            prior = (self.priors.offset(metric.name) if self.priors is not None else None) or Prior(0.03, 4.0)
            measured = self.offset_drift.get(metric.name)
            if measured is not None:
                prior = pooled(prior, measured)
            k = len(offs)
            s2 = statistics.variance(offs) if k >= 2 else 0.0
            p, d = prior.sigma, prior.dof
            sigma2 = ((k - 1) * s2 + d * p * p) / (max(0, k - 1) + d) if k >= 1 else p * p
            out[metric.name] = math.sqrt(sigma2 * (1 + 1 / max(1, k))) * (1 + self.load_excess)
        return out

    def use_control(self, today: ControlReading | None) -> None:
        """Compare today's control reading with the baseline's recorded ones (before :meth:`finalize`)."""
        self.control_today = today
        if today is None or self.doc is None:
            return
        recorded = [
            r for r in (ControlReading.from_calibration(s.calibration) for s in self.doc.sessions.values()) if r
        ]
        self.control = shift(recorded, today)
        self.load_excess = busier(recorded, today) if recorded else 0.0
        if self.load_excess >= 0.25:
            self.notes.append(
                f"this machine is busier than when the baseline was recorded (load per CPU and stolen time "
                f"+{self.load_excess:.2f}): every noise figure is widened {1 + self.load_excess:.2f}x, and a "
                "regression here may be the load's; rerun on a quiet machine to be sure"
            )

    def finalize(self, confirm: Confirm | None = None) -> JobDecision | None:
        """Decide the job: every kept case and metric together (see the module docstring).  A suspected
        regression is measured again in a fresh process by ``confirm`` (None: it stays ``inconclusive``)."""
        if self.doc is None or not self._current:
            return None
        extra = 0
        while True:
            found = [e for cid in self._current for e in self._evidence(cid)]
            scaled = [dataclasses.replace(e, se=e.se * (1 + self.load_excess)) for e in found]
            job = decide_job(
                scaled,
                levels=self.settings.levels,
                offset_sigma=self.offset_sigma(),
                control=self.control,
                controlled=CONTROLLED,
            )
            verdicts = self._verdicts_of(job)
            suspects = sorted({v.case_id for v in verdicts if v.needs_more})
            if not suspects or confirm is None or extra >= self.max_extra:
                break
            try:
                fresh = confirm(suspects)
            except LoaderbenchError as exc:
                self.notes.append(f"confirming {', '.join(suspects)} in a fresh process failed: {exc}")
                break
            extra += 1
            for cid in suspects:
                if cid in fresh:
                    self._current[cid].append(fresh[cid])
                else:
                    self.notes.append(f"{cid}: the fresh process did not measure it; deciding with what there is")
            if not any(cid in fresh for cid in suspects):
                break
        self.job = job
        self.lines = list(job.lines)
        self._verdicts = verdicts
        return job
