"""The stored gate's levels (:class:`Settings`) and its answer (the one :class:`Verdict` type of
:mod:`loaderbench.decision.verdict`, re-exported)."""

from __future__ import annotations

from dataclasses import dataclass

from loaderbench.decision.rules import JOB_ALPHA, Z_POWER, Levels, Outcome
from loaderbench.decision.verdict import Verdict

__all__ = ["DEFAULT_SETTINGS", "Outcome", "Settings", "Verdict"]


@dataclass(frozen=True, slots=True)
class Settings:
    """Decision levels.  ``job_alpha``: the false-red rate per job (Holm over every case and metric the job
    judges); ``z_power``: the power margin (1.28: 90% at the threshold); ``confirm``: fresh processes a
    suspected regression must be confirmed in before it fails the run; ``min_sessions``: recording sessions
    a case's baseline needs, without a noise prior, before it can fail a run."""

    job_alpha: float = JOB_ALPHA
    z_power: float = Z_POWER
    confirm: int = 1
    min_sessions: int = 3

    @property
    def levels(self) -> Levels:
        return Levels(job_alpha=self.job_alpha, z_power=self.z_power)


#: The default decision levels.
DEFAULT_SETTINGS = Settings()
