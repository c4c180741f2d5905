"""The gate's answer, and the levels it decides at: :class:`Verdict` and :class:`Settings`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from loaderbench.metrics import METRICS

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
        m = METRICS[self.metric]
        if self.slowdown == 1:
            return "same"
        if self.slowdown > 1:
            return f"{self.slowdown:.2f}x {m.worse}"
        return f"{1 / self.slowdown:.2f}x {m.better}"

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
        m = METRICS[self.metric]
        numbers = f"{m.format_value(self.baseline)} -> {m.format_value(self.current)}"
        tail = f"; {self.reason}" if self.reason else ""
        if self.outcome in ("regressed", "improved"):
            tail = f" (threshold {self.threshold:.0%}){tail}"
        return f"{self.case_id} {self.metric}: {self.change} ({numbers}), {self.evidence}: {self.outcome}{tail}"

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
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in data.items()}
