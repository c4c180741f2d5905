"""The run's options as one typed value: ``--benchmark`` and every ``--loader-*`` option, read once from pytest's
parsed config (after the plugin's own adjustments) and used by the session, the A/B, the confirming process and
the history, so no part of the plugin reads ``config.option`` for them again."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from loaderbench import data
from loaderbench.engine.plan import Plan
from loaderbench.gate.job import DEFAULT_MAX_EXTRA
from loaderbench.gate.thresholds import Thresholds
from loaderbench.selection.select import Selection

_KEY = pytest.StashKey["RunOptions"]()
_PLAN = Plan()


@dataclass(frozen=True, slots=True)
class RunOptions:
    """What the user asked of this run; defaults are the options' defaults (``pytest_plugin.options``)."""

    benchmark: bool = False
    collect_only: bool = False
    tier: str = "smoke"
    device: str = "all"
    simulated_gpu: bool = False
    workloads: tuple[str, ...] | None = None
    config: str | None = None
    scenarios: str | None = None
    rounds: int = _PLAN.rounds
    round_s: float = _PLAN.round_s
    ranks: int = 1
    batch_timeout_s: float = _PLAN.batch_timeout_s
    report: str | None = None
    baseline_dir: str | None = None
    baseline_save: bool = False
    baseline_append: bool = False
    baseline_prune: bool = False
    require_baseline: bool = False
    compare_anyway: bool = False
    threshold: Thresholds | None = None
    max_extra: int = DEFAULT_MAX_EXTRA
    env_packages: tuple[str, ...] = ()
    history: Path | None = None
    history_fail: bool = False
    ab: str | None = None
    ab_base_dir: str | None = None
    ab_pairs: int = 16
    ab_budget_s: float = 900.0

    @property
    def selection(self) -> Selection:
        return Selection(self.tier, self.workloads, self.config, self.device, self.simulated_gpu, self.ranks)

    def scenario_file(self, root: Path) -> Path:
        """``--loader-scenarios``, else the rootdir's ``fixtures/workloads.toml``, else the packaged one."""
        return Path(self.scenarios) if self.scenarios else data.local_or_packaged(root, data.WORKLOADS)

    @classmethod
    def read(cls, config: pytest.Config) -> RunOptions:
        """The options of ``config`` (pytest's namespace, read attribute by attribute; an option another plugin
        version did not register keeps its default)."""
        opt = config.option
        default = cls()

        def get(name: str, fallback: object) -> object:
            return getattr(opt, name, fallback)

        workloads = get("loader_workloads", None)
        packages = str(get("loader_env_packages", "") or "")
        return cls(
            # an A/B runs the cases in child processes: this session measures nothing itself
            benchmark=bool(get("benchmark", False)) and get("loader_ab", None) is None,
            collect_only=bool(get("collectonly", False)),
            tier=str(get("loader_tier", default.tier)),
            device=str(get("loader_device", default.device)),
            simulated_gpu=bool(get("loader_simulated_gpu", False)),
            workloads=tuple(w for w in str(workloads).split(",") if w) if workloads else None,
            config=_text(get("loader_config", None)),
            scenarios=_text(get("loader_scenarios", None)),
            rounds=int(get("loader_rounds", default.rounds)),  # type: ignore[call-overload]
            round_s=float(get("loader_round_seconds", default.round_s)),  # type: ignore[arg-type]
            ranks=int(get("loader_ranks", 1)),  # type: ignore[call-overload]
            batch_timeout_s=float(get("loader_batch_timeout", default.batch_timeout_s)),  # type: ignore[arg-type]
            report=_text(get("loader_report", None)),
            baseline_dir=_text(get("loader_baseline_dir", None)),
            baseline_save=bool(get("loader_baseline_save", False)),
            baseline_append=bool(get("loader_baseline_append", False)),
            baseline_prune=bool(get("loader_baseline_prune", False)),
            require_baseline=bool(get("loader_require_baseline", False)),
            compare_anyway=bool(get("loader_compare_anyway", False)),
            threshold=get("loader_threshold", None),  # type: ignore[arg-type]
            max_extra=int(get("loader_max_extra", default.max_extra)),  # type: ignore[call-overload]
            env_packages=tuple(p.strip() for p in packages.split(",") if p.strip()),
            history=get("loader_history", None),  # type: ignore[arg-type]
            history_fail=bool(get("loader_history_fail", False)),
            ab=_text(get("loader_ab", None)),
            ab_base_dir=_text(get("loader_ab_base_dir", None)),
            ab_pairs=int(get("loader_ab_pairs", default.ab_pairs)),  # type: ignore[call-overload]
            ab_budget_s=float(get("loader_ab_budget", default.ab_budget_s)),  # type: ignore[arg-type]
        )


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def run_options(config: pytest.Config) -> RunOptions:
    """This run's options, read from ``config`` on first use and kept in its stash."""
    found = config.stash.get(_KEY, None)
    if found is None:
        found = config.stash[_KEY] = RunOptions.read(config)
    return found
