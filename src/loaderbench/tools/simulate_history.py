"""A simulated history, clearly labelled so: ``python -m loaderbench.tools.simulate_history DIR``.

It writes what ``--loader-history=DIR`` would have kept over ``--nights`` nightly runs of the smoke tier on the
machine of a real baseline (default: the 2-core AMD EPYC CI-class VM's, ``fixtures/baselines/``): each case's
level and within-run interval are those of the baseline's newest recording, and each night's value moves by
the workload's measured between-process noise (``loaderbench/data/noise.toml``) plus a common offset per night (the
file's ``[offset]``: the machine's drift between recordings).  Nothing here was measured night by night: the
runs are named ``simulated-night-NN`` and every commit is a made-up hash.

Events, so that the page has something to show (each at a fixed night of a 42-night history, scaled for
others):

* night 8: Pillow 11.0.0 -> 12.0.0 in the environment, with no effect (an annotation without a change point);
* night 12: a commit makes the ``file`` workload 12% faster (an improvement);
* night 22: torch 2.13.0 -> 2.14.1, and the ``io`` cases with 2 workers lose 14% of their throughput;
* night 28: a commit makes the ``transfer`` cases with workers use 15% more memory;
* nights 30-34: ``skewed-cpu-w2-bs4`` creeps 2% slower every night (10% in all; no night-to-night step
  passes a 10% threshold);
* night 37: a commit makes the ``cpu`` cases with workers 12% slower (recent: ``--loader-history-fail``
  fails the job on it).

The history is appended through :func:`loaderbench.history.store.append`, as the plugin appends, so it is
the real format.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from loaderbench.data import NOISE
from loaderbench.gate.priors import load_priors
from loaderbench.history import store
from loaderbench.history.record import Figure, RunRecord, compact, figures
from loaderbench.store import document
from loaderbench.store.environment import Environment

BASELINE = Path(__file__).resolve().parents[3] / "fixtures" / "baselines" / "x86_64-2cpu-24gib-cpu-9573dfdfea2d.json"
NIGHTS = 42
START = datetime(2026, 10, 22, 2, 0, tzinfo=UTC)


def _event_factor(case: str, workload: str, metric: str, night: int, nights: int) -> float:
    """How the simulated events move ``metric`` of ``case`` on ``night`` (1: not at all)."""

    def at(n: int) -> int:
        return round(n * nights / NIGHTS)

    factor = 1.0
    if workload == "file" and metric == "samples_per_s" and night >= at(12):
        factor *= 1.12
    if workload == "io" and "-w2-" in case + "-" and metric == "samples_per_s" and night >= at(22):
        factor *= 0.86
    if workload == "transfer" and "-w0-" not in case + "-" and metric == "peak_memory_bytes" and night >= at(28):
        factor *= 1.15
    if workload == "cpu" and "-w0-" not in case + "-" and metric == "samples_per_s" and night >= at(37):
        factor *= 0.88
    if case == "skewed-cpu-w2-bs4" and metric == "samples_per_s" and night >= at(30):
        factor *= 0.98 ** min(5, night - at(30) + 1)
    return factor


def _environment(base: Environment, night: int, nights: int) -> Environment:
    packages = dict(base.packages)
    packages["Pillow"] = "12.0.0" if night >= round(8 * nights / NIGHTS) else "11.0.0"
    commit = hashlib.sha1(f"simulated-{night}".encode()).hexdigest()[:12]
    torch = "2.14.1+cpu" if night >= round(22 * nights / NIGHTS) else "2.13.0+cpu"
    return dataclasses.replace(base, torch=torch, packages=packages, git_commit=commit, distributions=None)


def simulate(
    directory: Path,
    *,
    nights: int = NIGHTS,
    seed: int = 1,
    baseline: Path = BASELINE,
    cases: Sequence[str] | None = None,
) -> Path:
    """Append ``nights`` simulated nightly runs to ``directory``; returns the history file's path."""
    doc = document.read(baseline)
    priors = load_priors(NOISE)
    rng = np.random.default_rng(seed)
    entries = [e for cid, e in sorted(doc.cases.items()) if cases is None or cid in cases]
    levels = {e.case_id: figures(e.runs[-1:]) for e in entries}
    base_env = compact(doc.environment)
    path = store.path_for(directory, doc.fingerprint)
    for night in range(nights):
        moment = START + timedelta(days=night, minutes=int(rng.integers(0, 40)))
        env = _environment(base_env, night, nights)
        offset = {
            name: rng.normal(0.0, (priors.offset(name) or priors.get("", name)).sigma) for name in _metrics(levels)
        }
        records = []
        for e in entries:
            metrics = {}
            for name, fig in levels[e.case_id].items():
                sigma = priors.get(e.workload, name).sigma
                move = math.exp(rng.normal(0.0, sigma) + offset[name])
                value = fig.value * move * _event_factor(e.case_id, e.workload, name, night, nights)
                metrics[name] = Figure(
                    value, min(value, value * fig.lo / fig.value), max(value, value * fig.hi / fig.value)
                )
            records.append(
                RunRecord(
                    run=f"simulated-night-{night + 1:02d}",
                    time=moment.isoformat(timespec="seconds"),
                    commit=env.git_commit,
                    environment=env,
                    case=e.case_id,
                    workload=e.workload,
                    device=e.device,
                    simulated=False,
                    metrics=metrics,
                    config=dict(e.config),
                    memory_kind=e.runs[-1].memory_kind,
                )
            )
        path = store.append(directory, doc.fingerprint, records)
    return path


def _metrics(levels: dict[str, dict[str, Figure]]) -> list[str]:
    return sorted({name for figs in levels.values() for name in figs})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loaderbench.tools.simulate_history", description=__doc__)
    parser.add_argument("directory", type=Path, help="the history directory to append to")
    parser.add_argument("--nights", type=int, default=NIGHTS, help=f"nightly runs (default: {NIGHTS})")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--baseline", type=Path, default=BASELINE, help="the baseline whose machine and levels to use")
    args = parser.parse_args(argv)
    path = simulate(args.directory, nights=args.nights, seed=args.seed, baseline=args.baseline)
    print(f"appended {args.nights} simulated nightly runs to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
