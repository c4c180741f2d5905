"""What the reports compare with what: cases grouped by workload and device, each case's reference.

A group is one (workload, device) pair, sorted by samples/s with the fastest
first.  A case's speed-up is over its group's ``num_workers=0`` case with the
same consumer; its efficiency is over the cost model's ideal; a CUDA case's
H2D bandwidth is over the measured pinned-copy limit.  Gate outcomes rank by
:data:`SEVERITY`, worst first.  The flags and notes of a run are collected
here too, so the terminal and Markdown reports list the same ones.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence

from loaderbench.measurement import FLAGS, Measurement

#: Gate outcomes, worst first: a group or case shows its worst.
SEVERITY = ("regressed", "inconclusive", "improved", "unchanged")


def severity(outcome: str) -> int:
    """The rank of a gate outcome in :data:`SEVERITY` (unknown outcomes rank last)."""
    return SEVERITY.index(outcome) if outcome in SEVERITY else len(SEVERITY)


def label(m: Measurement) -> str:
    """A case's name inside its group: the config id, and the CUDA consumer's id if any."""
    return m.config.id + (f"-{m.consumer}" if m.consumer else "")


def extra_float(m: Measurement, key: str) -> float | None:
    """A CUDA (or other consumer) metric: the median of its rounds, else the case-level value."""
    if m.rounds.get(key):
        return m.median(key)
    value = m.extra.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def is_cuda_group(ms: Sequence[Measurement]) -> bool:
    return any(extra_float(m, "feed_samples_per_s") is not None for m in ms)


def families(measurements: Iterable[Measurement]) -> list[Measurement]:
    """The measurements with their report grouping settled: a group (a user's test function) holds its
    parametrized configs while each config appears in it once per device and consumer; a group where two
    cases share one (the test is parametrized over datasets too) falls back to each case's own workload,
    since its cases are not configs of one dataset."""
    ms = list(measurements)
    seen: dict[str, set[tuple[str, str, str]]] = {}
    clash: set[str] = set()
    for m in ms:
        if m.group:
            key = (m.device, m.consumer, m.config.id)
            if key in seen.setdefault(m.group, set()):
                clash.add(m.group)
            seen[m.group].add(key)
    return [dataclasses.replace(m, group="") if m.group in clash else m for m in ms]


def groups(measurements: Iterable[Measurement]) -> dict[tuple[str, str], list[Measurement]]:
    """(family, device) -> cases sorted by samples/s, fastest first (unmeasured last), in first-seen order;
    the family is the workload, or a user's test function (:func:`families`)."""
    out: dict[tuple[str, str], list[Measurement]] = {}
    for m in families(measurements):
        out.setdefault((m.family, m.device), []).append(m)
    for ms in out.values():
        ms.sort(key=lambda m: (math.isnan(m.samples_per_s), -m.samples_per_s if not math.isnan(m.samples_per_s) else 0))
    return out


def best(ms: Sequence[Measurement]) -> Measurement | None:
    """The fastest case of a sorted group (see :func:`groups`); None when nothing was measured."""
    return ms[0] if ms and not math.isnan(ms[0].samples_per_s) else None


def reference(m: Measurement, group: Sequence[Measurement]) -> Measurement | None:
    """The ``num_workers=0`` case that ``m`` is compared with: same consumer, closest to the defaults."""
    zero = [x for x in group if x.config.num_workers == 0 and x.consumer == m.consumer]
    zero.sort(key=lambda x: (len(x.config.id), x.config.id))
    return zero[0] if zero else None


def speedup(m: Measurement, group: Sequence[Measurement]) -> float | None:
    ref = reference(m, group)
    if ref is None or math.isnan(ref.samples_per_s) or ref.samples_per_s <= 0 or math.isnan(m.samples_per_s):
        return None
    return m.samples_per_s / ref.samples_per_s


def efficiency(m: Measurement) -> float | None:
    if not m.ideal_samples_per_s or math.isnan(m.samples_per_s):
        return None
    return m.samples_per_s / m.ideal_samples_per_s


def h2d_of_limit(m: Measurement) -> float | None:
    h2d, limit = extra_float(m, "h2d_bytes_per_s"), extra_float(m, "h2d_limit_bytes_per_s")
    return h2d / limit if h2d is not None and limit else None


def flagged_cases(measurements: Iterable[Measurement]) -> dict[str, list[str]]:
    """Flag letter -> the case ids that carry it, for every flag but ``N`` (notes are listed by
    :func:`noted_cases`); flags no case carries are left out, the rest are in :data:`FLAGS` order."""
    out: dict[str, list[str]] = {}
    for m in measurements:
        for flag in m.flags:
            if flag.letter != "N":
                out.setdefault(flag.letter, []).append(m.case_id)
    return {letter: out[letter] for letter in FLAGS if letter in out}


def noted_cases(measurements: Iterable[Measurement]) -> dict[str, list[str]]:
    """Each distinct note -> the case ids that carry it, in first-seen order."""
    out: dict[str, list[str]] = {}
    for m in measurements:
        for note in m.notes:
            out.setdefault(note, []).append(m.case_id)
    return out
