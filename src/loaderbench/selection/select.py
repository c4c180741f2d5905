"""The one rule that turns the user's selection (``--loader-tier``, ``--loader-workloads``, ``--loader-config``,
``--loader-device``, ``--loader-simulated-gpu``, ``--loader-ranks``) into the cases of a run, used alike by the
pytest session and by each arm of an A/B."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from loaderbench.config import LoaderConfig
from loaderbench.engine.case import Case
from loaderbench.selection.tiers import Tier, build_tier, explicit_tier, tier_in_ranks
from loaderbench.testing.simulated_gpu import SimulatedGpuSpec
from loaderbench.workloads.recipes import Workload


@dataclass(frozen=True, slots=True)
class Selection:
    """Which cases a run covers; the defaults are the options' defaults."""

    tier: str = "smoke"
    workloads: tuple[str, ...] | None = None
    config: str | None = None
    device: str = "all"
    simulated_gpu: bool = False
    ranks: int = 1

    def tier_of(self, workloads: Mapping[str, Workload]) -> Tier:
        """The tier's cases for every device, the explicit config in place of the tier's when given, each case in
        ``ranks`` ranks.  Raises :class:`~loaderbench.errors.LoaderbenchError` subclasses naming the option."""
        only = list(self.workloads) if self.workloads else None
        tier = build_tier(self.tier, dict(workloads), only=only)
        if self.config:
            tier = explicit_tier(tier, dict(workloads), LoaderConfig.from_id(self.config))
        return tier_in_ranks(tier, self.ranks)

    def cases_of(self, tier: Tier) -> list[Case]:
        """``tier``'s cases on the selected device, CUDA cases on the simulated device when asked (never as a
        fallback), CPU cases first: CUDA must not be initialised before fork-started workers."""
        cases = [c for c in tier.cases if self.device == "all" or c.device == self.device]
        if self.simulated_gpu:
            gpu = SimulatedGpuSpec.from_env()
            cases = [dataclasses.replace(c, simulated_gpu=gpu) if c.device == "cuda" else c for c in cases]
        return sorted(cases, key=lambda c: c.device == "cuda")
