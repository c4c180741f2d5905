"""Per-rank measurements -> the job's one :class:`~loaderbench.measurement.Measurement`.

The ranks step in lockstep (:mod:`~loaderbench.ranks.sync`), so each round's rate is the same on every rank and
the job's rate is their sum: round ``i`` of the job's ``samples_per_s`` (and every other ``*_per_s`` series) is
the sum over ranks of round ``i``; other per-round series keep the worst rank's value (the most waiting, the
lowest accelerator utilisation).  A phase is the slowest rank's (the job waits for it).  Peak memory is the sum
over ranks of each rank's peak (the rank and its workers, see :mod:`~loaderbench.engine.memory`), an upper
bound where the ranks peak at different moments.

``extra`` (so ``extra_info``) gains ``ranks``, per-rank lists (``rank_samples_per_s``, ``rank_ttfb_s``,
``rank_data_wait_s``, ``rank_step_s``, ``rank_collective_wait_s``, ``rank_peak_memory_bytes``, and on CUDA
``rank_feed_samples_per_s`` and ``rank_accelerator_utilization``) and ``slowest_rank``: the rank that waited
least at the collective, since the others were waiting for it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from loaderbench import stats
from loaderbench.measurement import Measurement
from loaderbench.ranks.sync import SYNC_METRICS

#: Case-level consumer metrics (the CUDA consumer's) also listed per rank.
PER_RANK_EXTRAS = ("feed_samples_per_s", "accelerator_utilization", "h2d_bytes_per_s", "data_wait_mean_s")


def _per_round(name: str, series: list[tuple[float, ...]]) -> tuple[float, ...]:
    n = min(len(s) for s in series)
    if name.endswith("_per_s"):
        return tuple(math.fsum(s[i] for s in series) for i in range(n))
    worst = min if name == "accelerator_utilization" else max
    return tuple(worst(s[i] for s in series) for i in range(n))


def _median(m: Measurement, name: str) -> float | None:
    values = m.rounds.get(name, ())
    return stats.median(values) if values else None


def slowest_rank(per_rank: Sequence[Measurement]) -> int:
    """The rank the others waited for: the least time at the collective (ties: the most data wait); without
    the sync metrics, the lowest samples/s."""

    def key(r: int) -> tuple[float, float]:
        m = per_rank[r]
        wait = _median(m, "collective_wait_s")
        if wait is None:
            return (m.samples_per_s, 0.0)
        return (wait, -(_median(m, "data_wait_s") or 0.0))

    return min(range(len(per_rank)), key=key)


def _notes(per_rank: Sequence[Measurement]) -> tuple[str, ...]:
    out: list[str] = []
    for r, m in enumerate(per_rank):
        for note in m.notes:
            if all(note in other.notes for other in per_rank):
                if note not in out:
                    out.append(note)
            else:
                out.append(f"rank {r}: {note}")
    return tuple(out)


def combine(per_rank: Sequence[Measurement], *, ideal_samples_per_s: float | None = None) -> Measurement:
    """The job's measurement from its ranks' (index = rank).  ``ideal_samples_per_s`` is the cost model's for
    the whole job (all ranks' workers on the shared CPUs)."""
    if not per_rank:
        raise ValueError("combine() needs at least one rank's measurement")
    first = per_rank[0]
    ranks = len(per_rank)
    names = [n for n in first.rounds if all(n in m.rounds for m in per_rank) and n not in SYNC_METRICS]
    rounds = {n: _per_round(n, [tuple(m.rounds[n]) for m in per_rank]) for n in names}
    phases = {
        name: max(m.phases[name] for m in per_rank) for name in first.phases if all(name in m.phases for m in per_rank)
    }
    memories = [m.peak_memory_bytes for m in per_rank]
    extra: dict[str, Any] = dict(first.extra)
    extra.update(
        ranks=ranks,
        slowest_rank=slowest_rank(per_rank),
        rank_samples_per_s=[m.samples_per_s for m in per_rank],
        rank_ttfb_s=[m.phases.get("ttfb_s") for m in per_rank],
        rank_peak_memory_bytes=memories,
        **{f"rank_{name}": [_median(m, name) for m in per_rank] for name in SYNC_METRICS},
    )
    for name in PER_RANK_EXTRAS:
        if name in first.extra:
            extra[f"rank_{name}"] = [m.extra.get(name) for m in per_rank]
    cpu: list[Any] = [m.extra.get("cpu_s_per_sample") for m in per_rank]
    weights = [m.steady_batches for m in per_rank]
    if all(isinstance(c, (int, float)) for c in cpu) and sum(weights) > 0:
        # every rank's CPU time over every rank's samples (rank 0's alone was the job's figure before)
        extra["cpu_s_per_sample"] = sum(c * w for c, w in zip(cpu, weights, strict=True)) / sum(weights)
        extra["rank_cpu_s_per_sample"] = cpu
    else:
        extra.pop("cpu_s_per_sample", None)
    return dataclasses.replace(
        first,
        rounds=rounds,
        phases=phases,
        steady_batches=min(m.steady_batches for m in per_rank),
        peak_memory_bytes=None if any(b is None for b in memories) else sum(b for b in memories if b is not None),
        ideal_samples_per_s=ideal_samples_per_s,
        notes=_notes(per_rank),
        extra=extra,
    )
