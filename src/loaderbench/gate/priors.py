"""Noise priors: each workload's between-process noise, known before a baseline has any sessions.

A baseline recorded once cannot measure its own session-to-session noise, so
the gate starts from a prior: the standard deviation of log values between
processes that the self-check measured on this machine class for each workload
and metric (``python -m loaderbench.tools.spread --priors-out``), shipped as data
in ``loaderbench/data/noise.toml`` (or a rootdir's ``fixtures/noise.toml``), with the degrees of
freedom it was measured with.
The gate pools it with what the baseline's own sessions show (the prior counts
as that many extra degrees of freedom), so one session already gates large
regressions and more sessions narrow the noise where the case is quieter or
noisier than its workload's prior.  Workloads without a prior use the file's
``[default]`` table, which is deliberately wide.  ``between_hosts`` is the
extra noise between hosts of one class, added when today's host is not one the
baseline was recorded on.

File format::

    [default]
    samples_per_s = { sigma = 0.10, dof = 10 }
    between_hosts = 0.03

    [workload.io]
    samples_per_s = { sigma = 0.025, dof = 20 }

    [offset]          # between-period noise of a run's common offset (drift between recordings)
    samples_per_s = { sigma = 0.03, dof = 4 }

    [oversubscribed]  # sigma multiplier for configs with more loading processes than CPUs
    samples_per_s = 2.0
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scipy import stats as sps

from loaderbench import jsondoc
from loaderbench.errors import UsageError
from loaderbench.metrics import METRICS

#: The level of the F-test that lets a quieter measured figure (a history's drift) narrow a stored prior.
NARROW_ALPHA = 0.05
#: Used when there is no priors file at all: wide, and worth few degrees of freedom.
FALLBACK_SIGMA = 0.10
FALLBACK_DOF = 10.0
FALLBACK_BETWEEN_HOSTS = 0.03
#: The degrees of freedom the ``[default]`` prior is worth at most for a workload without its own (every
#: user test): a recording of a user's test measures its own noise in a few fresh processes, and a few
#: sessions of its own outweigh the default.
DEFAULT_WEIGHT = 6.0


@dataclass(frozen=True, slots=True)
class Prior:
    """A workload's between-process noise for one metric (sd of log values) and the degrees of freedom it
    was measured with; ``between_hosts`` is the extra sd between hosts of one class."""

    sigma: float
    dof: float
    between_hosts: float = 0.0


@dataclass(frozen=True, slots=True)
class NoisePriors:
    """Priors by workload and metric, with a default for workloads the file does not name."""

    default: Mapping[str, Prior] = field(default_factory=dict)
    workloads: Mapping[str, Mapping[str, Prior]] = field(default_factory=dict)
    source: str = "built-in fallback"
    #: Between-period noise of a run's common offset, per metric (``[offset]``).
    offsets: Mapping[str, Prior] = field(default_factory=dict)
    #: Multiplier of a prior's sigma for over-subscribed configs (more loading processes than CPUs).
    oversubscribed: Mapping[str, float] = field(default_factory=dict)

    def get(self, workload: str, metric: str, *, oversubscribed: bool = False) -> Prior:
        """The prior for ``metric`` of ``workload``: the workload's own, else the default's at a weight of
        :data:`DEFAULT_WEIGHT` degrees of freedom (a user's own sessions outweigh it after a few), else the
        metric its noise follows (TTFB follows throughput), else the wide fallback.  ``oversubscribed``
        widens it by the file's ``[oversubscribed]`` factor for the metric."""
        found = self._find(workload, metric)
        factor = self.oversubscribed.get(metric, 1.0) if oversubscribed else 1.0
        return Prior(found.sigma * factor, found.dof, found.between_hosts) if factor != 1.0 else found

    def _find(self, workload: str, metric: str) -> Prior:
        seen: set[str] = set()
        name: str | None = metric
        while name is not None and name not in seen:
            seen.add(name)
            own = self.workloads.get(workload, {}).get(name)
            if own is not None:
                return own
            fallback = self.default.get(name)
            if fallback is not None:
                return Prior(fallback.sigma, min(fallback.dof, DEFAULT_WEIGHT), fallback.between_hosts)
            name = METRICS[name].noise_from if name in METRICS else None
        floor = METRICS[metric].process_noise if metric in METRICS else 0.0
        return Prior(max(FALLBACK_SIGMA, floor), DEFAULT_WEIGHT, FALLBACK_BETWEEN_HOSTS)

    def has_own(self, workload: str) -> bool:
        """Whether ``workload`` has a prior of its own (the suite's workloads; a user's tests do not)."""
        return bool(self.workloads.get(workload))

    def offset(self, metric: str) -> Prior | None:
        """The between-period noise of a run's common offset for ``metric`` (``[offset]``), if the file has it."""
        return self.offsets.get(metric) or self.offsets.get("samples_per_s")


def pooled(stored: Prior, measured: Prior) -> Prior:
    """``stored`` (the priors file's figure) and ``measured`` (e.g. a history's between-run spread of the case),
    pooled conservatively: a noisier measured figure always widens the prior (``sigma`` is the larger, worth
    the larger of the two dof: a wider gate errs toward inconclusive, never toward a false alarm); a quieter one
    narrows it only when an F-test of the two variances says it is quieter at :data:`NARROW_ALPHA` with the
    dof it has, and then the two are pooled by their dof (as the gate pools a baseline's sessions with a
    prior); otherwise the stored prior stands.  ``between_hosts`` stays the stored one."""
    if measured.sigma >= stored.sigma:
        return Prior(measured.sigma, max(measured.dof, stored.dof), stored.between_hosts)
    if measured.dof < 1 or stored.sigma <= 0:
        return stored
    p = float(sps.f.cdf((measured.sigma / stored.sigma) ** 2, measured.dof, stored.dof))
    if p > NARROW_ALPHA:
        return stored
    dof = measured.dof + stored.dof
    sigma2 = (measured.dof * measured.sigma**2 + stored.dof * stored.sigma**2) / dof
    return Prior(math.sqrt(sigma2), dof, stored.between_hosts)


def load_priors(path: Path) -> NoisePriors:
    """Read ``path``; a missing file gives the wide fallback (with ``source`` saying so)."""
    if not path.exists():
        return NoisePriors(source=f"built-in fallback ({path} not found)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"noise_priors={str(path)!r}: cannot be read ({exc}). Fix or delete the file.") from None
    default_hosts = _number(data.get("default", {}).get("between_hosts", FALLBACK_BETWEEN_HOSTS), path, "between_hosts")
    default = _table(data.get("default", {}), path, "default", default_hosts)
    workloads = {}
    for name, table in _mapping(data.get("workload", {}), path, "workload").items():
        hosts = _number(_mapping(table, path, name).get("between_hosts", default_hosts), path, f"{name}.between_hosts")
        workloads[str(name)] = _table(table, path, f"workload.{name}", hosts)
    offsets = _table(data.get("offset", {}), path, "offset", 0.0)
    over = {
        str(k): _number(v, path, f"oversubscribed.{k}")
        for k, v in _mapping(data.get("oversubscribed", {}), path, "oversubscribed").items()
    }
    return NoisePriors(default, workloads, str(path), offsets, over)


def _table(table: Any, path: Path, where: str, between_hosts: float) -> dict[str, Prior]:
    out = {}
    for metric, value in _mapping(table, path, where).items():
        if metric == "between_hosts":
            continue
        if metric not in METRICS:
            raise UsageError(
                f"noise_priors={str(path)!r}: [{where}] names {metric!r}, which is not a gated metric. "
                f"Use one of {', '.join(METRICS)}."
            )
        entry = _mapping(value, path, f"{where}.{metric}")
        sigma = _number(entry.get("sigma"), path, f"{where}.{metric}.sigma")
        dof = _number(entry.get("dof"), path, f"{where}.{metric}.dof")
        if sigma <= 0 or dof < 1:
            raise UsageError(f"noise_priors={str(path)!r}: {where}.{metric} needs sigma > 0 and dof >= 1.")
        out[metric] = Prior(sigma, dof, between_hosts)
    return out


def _mapping(value: Any, path: Path, where: str) -> Mapping[str, Any]:
    try:
        return jsondoc.mapping(value, f"[{where}]")
    except TypeError:
        raise UsageError(f"noise_priors={str(path)!r}: [{where}] is not a table. Fix the file.") from None


def _number(value: Any, path: Path, where: str) -> float:
    try:
        return jsondoc.number(value, where, minimum=0.0)
    except TypeError:
        raise UsageError(f"noise_priors={str(path)!r}: {where} is not a non-negative number. Fix the file.") from None
