"""The gate's answer, and the levels it decides at: :class:`Verdict` and :class:`Settings`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from loaderbench.metrics import METRICS
from loaderbench.store import jsondoc

Outcome = Literal["regressed", "improved", "unchanged", "inconclusive"]


@dataclass(frozen=True, slots=True)
class Settings:
    """Decision levels.  ``alpha``: Mann–Whitney level for per-round metrics (asv's 0.002);
    ``z_significance``: one-sided z for significance (3.09: 0.1%); ``z_power``: power margin (1.28: 90%);
    ``confirm``: extra measurements a regression must survive before it is reported, so that one
    disturbed measurement cannot fail the run; ``min_sessions``: recording sessions a case's baseline
    needs before its session-to-session noise is known well enough to fail a run."""

    alpha: float = 0.002
    z_significance: float = 3.09
    z_power: float = 1.28
    confirm: int = 1
    min_sessions: int = 3


#: The default decision levels.
DEFAULT_SETTINGS = Settings()


@dataclass(frozen=True, slots=True)
class Verdict:
    """The gate's answer for one case and metric, with the numbers behind it.

    ``baseline`` and ``current`` are geometric means of run values in the
    metric's unit; ``ratio`` is ``current / baseline``; ``slowdown`` is the
    change as a factor above 1 when worse.  ``p_value`` is the one-sided
    Mann–Whitney p in the direction of the change (None for one-off metrics),
    ``z`` the session-level z score, ``noise`` the relative standard error ``se``,
    ``resolves`` the smallest change this noise can resolve; ``baseline_sessions``
    counts the baseline's recording sessions, ``current_runs`` today's measurements.
    """

    case_id: str
    metric: str
    outcome: Outcome
    baseline: float
    current: float
    ratio: float
    slowdown: float
    threshold: float
    p_value: float | None
    z: float
    noise: float
    resolves: float
    baseline_sessions: int
    current_runs: int
    extra_measurements: int = 0
    reason: str = ""
    #: Whether another measurement could decide it (a suspected regression not yet confirmed, or a
    #: large enough change whose rounds are not yet significant); the gate takes one while it may.
    needs_more: bool = False

    @property
    def failed(self) -> bool:
        return self.outcome == "regressed"

    @property
    def change(self) -> str:
        """``1.23x slower`` / ``1.05x faster`` / ``same``."""
        return METRICS[self.metric].describe_change(self.slowdown)

    @property
    def evidence(self) -> str:
        """``p=0.0004 < 0.002, z=5.2 >= 3.09`` and the like."""
        parts = []
        if self.p_value is not None:
            parts.append(f"p={self.p_value:.2g}")
        parts.append(f"z={self.z:.1f}")
        parts.append(f"noise ±{self.noise:.1%}")
        parts.append(f"{self.baseline_sessions} baseline sessions, {self.current_runs} run(s)")
        return ", ".join(parts)

    def message(self) -> str:
        """One line, pyperf style: ``io-cpu-w0-bs32 samples_per_s: 1.23x slower (...): regressed (...)``."""
        return message_line(self, self.baseline, self.current)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON values (non-finite numbers become None), e.g. for ``extra_info``."""
        data = {
            "case_id": self.case_id,
            "metric": self.metric,
            "outcome": self.outcome,
            "baseline": self.baseline,
            "current": self.current,
            "ratio": self.ratio,
            "threshold": self.threshold,
            "p_value": self.p_value,
            "z": self.z,
            "noise": self.noise,
            "resolves": self.resolves,
            "baseline_sessions": self.baseline_sessions,
            "current_runs": self.current_runs,
            "extra_measurements": self.extra_measurements,
            "message": self.message(),
        }
        cleaned: dict[str, Any] = jsondoc.clean(data)
        return cleaned


class _Decided(Protocol):
    """What :func:`message_line` reads: a stored-baseline :class:`Verdict` or an A/B verdict."""

    @property
    def case_id(self) -> str: ...
    @property
    def metric(self) -> str: ...
    @property
    def outcome(self) -> str: ...
    @property
    def threshold(self) -> float: ...
    @property
    def reason(self) -> str: ...
    @property
    def change(self) -> str: ...

    @property
    def evidence(self) -> str: ...


def message_line(v: _Decided, before: float, after: float) -> str:
    """``CASE METRIC: CHANGE (BEFORE -> AFTER), EVIDENCE: OUTCOME (threshold T); REASON``: one verdict's line."""
    m = METRICS[v.metric]
    numbers = f"{m.format_value(before)} -> {m.format_value(after)}"
    tail = f"; {v.reason}" if v.reason else ""
    if v.outcome in ("regressed", "improved"):
        tail = f" (threshold {v.threshold:.0%}){tail}"
    return f"{v.case_id} {v.metric}: {v.change} ({numbers}), {v.evidence}: {v.outcome}{tail}"
