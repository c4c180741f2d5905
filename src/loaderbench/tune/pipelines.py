"""``loaderbench tune --pipelines``: the best DataLoader setting tried on the other input pipelines.

After the DataLoader search, each requested pipeline (``nodesthread``, ``nodesprocess``, ``stateful``,
``spdl``) runs the recommended setting mapped onto it with
:func:`loaderbench.pipelines.registry.nearest`, measured by the search's own measure function (the same
rounds, round length and dropped first round).  A rival is recommended only when the search's own rule says
it is faster than the DataLoader setting (:meth:`~loaderbench.tune.search.Search.separated`: at least
``tie`` faster and one-sided Mann-Whitney p <= alpha); while a rival is neither separated from the DataLoader
setting nor tied with it, both are measured again (at most :data:`CONFIRM` times).  A pipeline that is not
installed is skipped with its one reason.  The rivals are measured after the search, so they add to
``--budget``: one measurement each, and up to :data:`CONFIRM` more of each side when undecided.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from loaderbench import stats
from loaderbench.config import LoaderConfig
from loaderbench.config_rules import PIPELINES
from loaderbench.errors import CaseFailed, UsageError
from loaderbench.pipelines import registry
from loaderbench.tune.search import MeasureFn, Search
from loaderbench.tune.trials import Trial

#: The most extra measurements of a rival (and of the DataLoader setting) to tell the two apart.
CONFIRM = 2


def parse_pipelines(value: str) -> tuple[str, ...]:
    """The rival pipelines named by ``--pipelines`` (``all``: every one; those not installed are then
    reported as skipped with the reason); ``dataloader`` is the search itself and is dropped.  Raises
    :class:`UsageError` naming the option for an unknown name."""
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        raise UsageError(f"--pipelines={value!r}: names no pipeline. Use a comma-separated list of {list(PIPELINES)}.")
    out: list[str] = []
    for name in names:
        if name == "all":
            out.extend(PIPELINES)
        elif name not in PIPELINES:
            raise UsageError(
                f"--pipelines={value!r}: {name!r} is not a known pipeline. "
                f"Use a comma-separated list of {', '.join(PIPELINES)}, or all."
            )
        else:
            out.append(name)
    return tuple(dict.fromkeys(n for n in out if n != "dataloader"))


def cpu_s_per_sample(trial: Trial | None) -> float | None:
    """The median CPU seconds per sample (every process) over the trial's measurements, when measured."""
    values = [] if trial is None else [m.extra.get("cpu_s_per_sample") for m in trial.measurements]
    floats = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return stats.median(floats) if floats else None


@dataclass(slots=True)
class Rival:
    """One requested pipeline: its config and trial, or why it was not measured, and the verdict."""

    pipeline: str
    config: LoaderConfig | None = None
    trial: Trial | None = None
    skipped: str = ""  # not installed: the registry's one reason
    failed: str = ""  # the measurement raised CaseFailed
    faster: bool = False
    verdict: str = ""


@dataclass(slots=True)
class Rivals:
    """Every requested pipeline against the DataLoader setting, and which (if any) is recommended."""

    baseline: Trial
    rivals: list[Rival] = field(default_factory=list)

    @property
    def winner(self) -> Rival | None:
        """The fastest rival that is statistically faster than the DataLoader setting, if any."""
        faster = [r for r in self.rivals if r.faster and r.trial is not None]
        return max(faster, key=lambda r: r.trial.median if r.trial else -math.inf, default=None)

    @property
    def summary(self) -> str:
        """One sentence: the recommended pipeline, or that the DataLoader setting stays."""
        win = self.winner
        if win is not None:
            what = f"{win.pipeline} ({PIPELINES[win.pipeline]})"
            return f"Use {what} with this setting: against the DataLoader setting {win.verdict}."
        measured = [r for r in self.rivals if r.trial is not None]
        if not measured:
            return "The DataLoader setting stays: no other pipeline could be measured."
        return "The DataLoader setting stays: no other pipeline was statistically faster."


def _settle(search: Search, baseline: Trial, trial: Trial, measure: MeasureFn) -> None:
    """Measure both again (pooled) while ``trial`` is neither separated from ``baseline`` nor tied with it."""
    for _ in range(CONFIRM):
        lead, other = (trial, baseline) if trial.median >= baseline.median else (baseline, trial)
        if search.separated(lead, other) or search.tied(lead, other):
            return
        for t in (baseline, trial):
            t.measurements.append(measure(t.config, False))


def _verdict(search: Search, baseline: Trial, trial: Trial) -> tuple[bool, str]:
    """(recommended, text): the search's rule (:meth:`Search.separated`) in both directions."""
    ratio = trial.median / baseline.median if baseline.median else math.nan
    if search.separated(trial, baseline):
        return True, f"{ratio:.2f}x, faster (Mann-Whitney p={search.p_value(trial, baseline):.2g})"
    if search.separated(baseline, trial):
        return False, f"{ratio:.2f}x, slower (p={search.p_value(baseline, trial):.2g})"
    return False, f"{ratio:.2f}x, not a significant difference (p={search.p_value(trial, baseline):.2g})"


def compare_pipelines(search: Search, best: LoaderConfig, pipelines: tuple[str, ...]) -> Rivals:
    """Try ``best`` (the recommended DataLoader config) on each of ``pipelines``; never raises for a rival."""
    measure = search._measure  # the search's own measure: same plan, same dropped round
    baseline = search.trials.get(best) or search.recommended()
    baseline = Trial(baseline.config, list(baseline.measurements), objective=baseline.objective)
    out = Rivals(baseline)
    for name in pipelines:
        reason = registry.unavailable_reason(name)
        if reason is not None:
            out.rivals.append(Rival(name, skipped=reason, verdict=f"skipped: {reason}"))
            continue
        cfg = registry.nearest(best, name)
        rival = Rival(name, config=cfg)
        out.rivals.append(rival)
        try:
            trial = Trial(cfg, [measure(cfg, False)], objective=search.spec.objective)
            _settle(search, baseline, trial, measure)
        except CaseFailed as exc:
            rival.failed, rival.verdict = str(exc), f"failed: {exc}"
            continue
        except KeyboardInterrupt:  # keep the DataLoader answer and what the rivals measured so far
            rival.failed = rival.verdict = "interrupted"
            break
        rival.trial = trial
        rival.faster, rival.verdict = _verdict(search, baseline, trial)
    return out
