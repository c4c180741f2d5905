"""The trials of ``loaderbench tune``'s search: a config and its measurements (:class:`Trial`), what a
config costs (:func:`cost`), the progress the search reports (:class:`Progress`), and :func:`ordered`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from loaderbench import stats
from loaderbench.config import LoaderConfig
from loaderbench.measurement import Measurement


@dataclass(slots=True)
class Trial:
    """One config and every measurement of it (their rounds pooled)."""

    config: LoaderConfig
    measurements: list[Measurement] = field(default_factory=list)
    objective: str = "samples_per_s"

    @property
    def samples(self) -> tuple[float, ...]:
        out: list[float] = []
        for m in self.measurements:
            out.extend(m.rounds.get(self.objective) or m.rounds.get("samples_per_s", ()))
        return tuple(out)

    @property
    def median(self) -> float:
        return stats.median(self.samples)

    @property
    def relative_iqr(self) -> float:
        return stats.relative_iqr(self.samples)

    def phase(self, name: str) -> float | None:
        values = [m.phases[name] for m in self.measurements if name in m.phases]
        return stats.median(values) if values else None

    @property
    def peak_memory_bytes(self) -> int | None:
        values = [m.peak_memory_bytes for m in self.measurements if m.peak_memory_bytes is not None]
        return max(values) if values else None


def cost(config: LoaderConfig) -> tuple[int, int, bool, bool, bool]:
    """Cheaper first: fewer workers, smaller prefetch, in order, unpinned, non-persistent."""
    c = config
    return (c.num_workers, c.effective_prefetch_factor or 0, not c.in_order, c.pin_memory, c.persistent_workers)


@dataclass(frozen=True, slots=True)
class Progress:
    """What the progress line shows after each measurement."""

    elapsed_s: float
    budget_s: float
    phase: str
    tried: int
    last: str
    last_rate: float
    best: str
    best_rate: float
    defaults_rate: float


def ordered(trials: Sequence[Trial]) -> list[Trial]:
    """Fastest first."""
    return sorted(trials, key=lambda t: (math.isnan(t.median), -t.median if not math.isnan(t.median) else 0))
