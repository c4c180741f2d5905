"""The advice claims: popular DataLoader tuning advice, checked against this machine's measurements.

Each claim is evaluated from a list of :class:`Measurement` (whatever the run
measured: the ``full`` tier's advice scenarios, or the smoke tier's ``io``
cases as a fallback) and gets a verdict with the numbers behind it:

* ``holds``: every comparison the run holds agrees with the claim;
* ``does not hold``: none does;
* ``depends``: some do and some do not, and the verdict says on what;
* ``not measured``: the run holds no case that can test the claim, and says which would.

A throughput comparison counts as "faster" only when the median ratio is above
:data:`FASTER` *and* a one-sided Mann-Whitney U test on the raw per-round samples gives
p <= :data:`ALPHA` (:func:`loaderbench.stats.clearly_greater`, the rule ``loaderbench tune``
uses): with fewer than three rounds a side the test cannot get there, and nothing is called faster.
One-off timings (TTFB, the epoch stall) have one value per case, so they are
compared by ratio alone, with the rule stated in the evidence.

The claims find their workloads by the names in ``loaderbench/data/workloads.toml``
(``advice-*`` first, then ``io``/``cpu`` as fallbacks).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from loaderbench import stats
from loaderbench.formatting import fmt_bytes, fmt_rate, fmt_ratio, fmt_time, wrap
from loaderbench.measurement import Measurement
from loaderbench.report.cases import families
from loaderbench.report.table import Column, text_table

#: A median ratio at least this large (and significant) counts as faster.
FASTER = 1.10
#: Significance level of the one-sided Mann-Whitney U test on per-round samples/s.
ALPHA = 0.05
#: A one-off timing at least this many times another counts as costlier.
COSTLIER = 1.5

HOLDS, DOES_NOT_HOLD, DEPENDS, NOT_MEASURED = "holds", "does not hold", "depends", "not measured"

SLEEP_WORKLOADS = ("advice-sleep-3x32x32", "io", "io-lognormal", "iterable-io")
CPU_WORKLOADS = ("cpu", "iterable-cpu")
SMALL_TENSOR_WORKLOADS = ("advice-tensor-10000x10",)


@dataclass(frozen=True, slots=True)
class ClaimResult:
    """One claim's verdict, the measured numbers, and the cases they come from."""

    key: str
    claim: str
    verdict: str
    evidence: str
    cases: tuple[str, ...] = ()

    @property
    def measured(self) -> bool:
        return self.verdict != NOT_MEASURED


# --- statistics -------------------------------------------------------------------------------


def rate(m: Measurement) -> float:
    return m.samples_per_s


def faster(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether samples ``a`` are faster than ``b``: :func:`loaderbench.stats.clearly_greater` by more than
    ``FASTER - 1`` at ``ALPHA`` (the rule ``loaderbench tune`` separates configs by)."""
    return stats.clearly_greater(a, b, by=FASTER - 1, alpha=ALPHA)


def _samples(m: Measurement, metric: str = "samples_per_s") -> tuple[float, ...]:
    return tuple(m.rounds.get(metric, ()))


# --- finding the cases --------------------------------------------------------------------------


def _plain(ms: Iterable[Measurement], workload: str) -> list[Measurement]:
    """DataLoader CPU cases of ``workload`` with the platform's default start method and non-persistent
    workers."""
    return [
        m
        for m in ms
        if m.workload == workload
        and m.device == "cpu"
        and m.config.pipeline == "dataloader"
        and not m.consumer
        and m.config.start_method in (None, "fork")
        and not m.config.persistent_workers
        and not math.isnan(m.samples_per_s)
    ]


def _by_workers(ms: Iterable[Measurement]) -> dict[int, Measurement]:
    """One case per worker count: the one closest to the defaults (shortest config id)."""
    out: dict[int, Measurement] = {}
    for m in sorted(ms, key=lambda m: (len(m.config.id), m.config.id)):
        out.setdefault(m.config.num_workers, m)
    return dict(sorted(out.items()))


def _pick(
    ms: Sequence[Measurement], names: Sequence[str], *, min_points: int = 2
) -> tuple[str, dict[int, Measurement]]:
    for name in names:
        points = _by_workers(_plain(ms, name))
        if len(points) >= min_points:
            return name, points
    return "", {}


def _pairs(ms: Sequence[Measurement], field: str, a: object, b: object) -> list[tuple[Measurement, Measurement]]:
    """Pairs (x, y) of cases that differ only in LoaderConfig ``field``: x has value ``a``, y has ``b``."""
    index = {(m.family, m.device, m.consumer, m.config): m for m in ms}
    out = []
    for m in ms:
        if getattr(m.config, field) != a:
            continue
        try:
            other = m.config.replace(**{field: b})
        except ValueError:
            continue
        twin = index.get((m.family, m.device, m.consumer, other))
        if twin is not None:
            out.append((m, twin))
    return out


def _label(m: Measurement) -> str:
    return f"{m.family} {m.config.id}" + (f" {m.consumer}" if m.consumer else "")


def _verdict(results: Sequence[bool]) -> str:
    if not results:
        return NOT_MEASURED
    if all(results):
        return HOLDS
    if not any(results):
        return DOES_NOT_HOLD
    return DEPENDS


# --- the claims ----------------------------------------------------------------------------------


def more_workers_faster(ms: Sequence[Measurement]) -> ClaimResult:
    claim = "more workers is faster (sleep-bound dataset)"
    name, points = _pick(ms, SLEEP_WORKLOADS)
    if not points:
        return ClaimResult(
            "more_workers", claim, NOT_MEASURED, "needs a sleep-bound workload at two or more worker counts"
        )
    counts = list(points)
    # the peak: the first worker count that no larger count beats
    peak = next(n for n in counts if not any(faster(_samples(points[m]), _samples(points[n])) for m in counts if m > n))
    base = rate(points[counts[0]])
    numbers = ", ".join(f"w{n} {fmt_rate(rate(m))} ({fmt_ratio(rate(m) / base)})" for n, m in points.items())
    verdict_text = ""
    if peak == counts[0]:
        verdict = DOES_NOT_HOLD
    elif peak == counts[-1]:
        verdict = HOLDS
    else:
        verdict = DEPENDS
        verdict_text = f"; faster up to {peak} workers, not beyond (this machine has {points[peak].cpus} CPUs)"
    return ClaimResult(
        "more_workers",
        claim,
        verdict,
        f"{name}: {numbers}{verdict_text}",
        tuple(m.case_id for m in points.values()),
    )


def oversubscription(ms: Sequence[Measurement]) -> ClaimResult:
    claim = "16 workers on a small machine over-subscribes it"
    cpus = ms[0].cpus if ms else 0
    if ms and cpus >= 16:
        return ClaimResult(
            "oversubscribe", claim, NOT_MEASURED, f"this machine has {cpus} CPUs, so 16 workers do not over-subscribe"
        )
    parts: list[str] = []
    results: list[bool] = []
    cases: list[str] = []
    kinds: list[tuple[str, bool]] = []
    for kind, names in (("sleep-bound", SLEEP_WORKLOADS), ("GIL-bound", CPU_WORKLOADS)):
        name, points = _pick(ms, names)
        over = [n for n in points if n > cpus]
        under = [n for n in points if 0 < n <= cpus]
        if not over or not under:
            continue
        hi, lo = max(over), max(under, key=lambda n: rate(points[n]))
        m_hi, m_lo = points[hi], points[lo]
        holds = not faster(_samples(m_hi), _samples(m_lo))
        results.append(holds)
        kinds.append((kind, holds))
        mem = ""
        if m_hi.peak_memory_bytes and m_lo.peak_memory_bytes:
            mem = f", memory {fmt_bytes(m_lo.peak_memory_bytes)} -> {fmt_bytes(m_hi.peak_memory_bytes)}"
        parts.append(
            f"{name} ({kind}): w{lo} {fmt_rate(rate(m_lo))} vs w{hi} {fmt_rate(rate(m_hi))} "
            f"({fmt_ratio(rate(m_hi) / rate(m_lo))}){mem}"
        )
        cases += [m_lo.case_id, m_hi.case_id]
    if not results:
        return ClaimResult(
            "oversubscribe",
            claim,
            NOT_MEASURED,
            f"needs a workload at more workers than this machine's {cpus or '?'} CPUs and at most that many",
        )
    verdict = _verdict(results)
    tail = ""
    if verdict == DEPENDS:
        held = [k for k, h in kinds if h]
        tail = f"; holds for {', '.join(held)} work only"
    return ClaimResult("oversubscribe", claim, verdict, f"{cpus} CPUs; " + "; ".join(parts) + tail, tuple(cases))


def workers_small_tensor(ms: Sequence[Measurement]) -> ClaimResult:
    claim = "workers do not help a small in-memory TensorDataset"
    name, points = _pick(ms, SMALL_TENSOR_WORKLOADS)
    if 0 not in points or len(points) < 2:
        loose = {}
        for candidate in SMALL_TENSOR_WORKLOADS:  # the advice scenario pins memory with workers: take any config
            loose = _by_workers(m for m in ms if m.workload == candidate and m.device == "cpu" and not m.consumer)
            name = candidate
            if 0 in loose and len(loose) >= 2:
                break
        points = loose
    if 0 not in points or len(points) < 2:
        return ClaimResult(
            "small_tensor", claim, NOT_MEASURED, "needs advice-tensor-10000x10 at 0 and >= 1 workers (full tier)"
        )
    base = points[0]
    helped = [faster(_samples(m), _samples(base)) for n, m in points.items() if n > 0]
    numbers = ", ".join(f"w{n} {fmt_rate(rate(m))} ({fmt_ratio(rate(m) / rate(base))})" for n, m in points.items())
    return ClaimResult(
        "small_tensor",
        claim,
        HOLDS if not any(helped) else DOES_NOT_HOLD,
        f"{name}: {numbers}",
        tuple(m.case_id for m in points.values()),
    )


def pin_memory_h2d(ms: Sequence[Measurement]) -> ClaimResult:
    claim = "pin_memory speeds up host-to-device copies"
    pairs = [(p, u) for p, u in _pairs(ms, "pin_memory", True, False) if p.device == "cuda"]
    if not pairs:
        return ClaimResult(
            "pin_memory",
            claim,
            NOT_MEASURED,
            "needs CUDA cases with pin_memory on and off (pytest --benchmark --loader-device=cuda on a GPU); "
            "without an accelerator torch pins nothing",
        )
    parts, results, cases = [], [], []
    copy_faster_feed_not = False
    for pinned, plain in pairs:
        copy = "h2d_copy_bytes_per_s" if _samples(pinned, "h2d_copy_bytes_per_s") else "h2d_bytes_per_s"
        a, b = _samples(pinned, copy), _samples(plain, copy)
        if not a or not b:
            continue
        copy_ok = faster(a, b)
        feed_a, feed_b = _samples(pinned, "feed_samples_per_s"), _samples(plain, "feed_samples_per_s")
        feed_ok = bool(feed_a and feed_b) and stats.median(feed_a) >= stats.median(feed_b) / FASTER
        results.append(copy_ok)
        copy_faster_feed_not |= copy_ok and not feed_ok
        feed = ""
        if feed_a and feed_b:
            feed = f", feed {fmt_rate(stats.median(feed_b))} -> {fmt_rate(stats.median(feed_a))}"
        parts.append(
            f"{_label(plain)}: copy {fmt_bytes(stats.median(b))}/s -> {fmt_bytes(stats.median(a))}/s "
            f"({fmt_ratio(stats.median(a) / stats.median(b))}){feed}"
        )
        cases += [plain.case_id, pinned.case_id]
    verdict = _verdict(results)
    if verdict == HOLDS and copy_faster_feed_not:
        verdict = DEPENDS
        parts.append("copies are faster but the feed rate is not: pinning costs host time")
    return ClaimResult("pin_memory", claim, verdict, "; ".join(parts) or "no H2D numbers recorded", tuple(cases))


def _ttfb(m: Measurement) -> float:
    return m.phases.get("ttfb_s", math.nan)


def spawn_startup(ms: Sequence[Measurement]) -> ClaimResult:
    claim = "spawn start-up costs more than fork"
    pairs = _pairs(ms, "multiprocessing_context", "spawn", None) + _pairs(
        ms, "multiprocessing_context", "spawn", "fork"
    )
    pairs = [(s, f) for s, f in pairs if f.config.start_method == "fork" and not math.isnan(_ttfb(s) + _ttfb(f))]
    if not pairs:
        return ClaimResult("spawn", claim, NOT_MEASURED, "needs the same case with spawn and with fork workers")
    parts, results = [], []
    for s, f in pairs:
        results.append(_ttfb(s) >= COSTLIER * _ttfb(f))
        parts.append(
            f"{_label(f)}: time to first batch fork {fmt_time(_ttfb(f))}, spawn {fmt_time(_ttfb(s))} "
            f"({_ttfb(s) / max(_ttfb(f), 1e-9):.1f}x)"
        )
    return ClaimResult(
        "spawn",
        claim,
        _verdict(results),
        "; ".join(parts) + f" (holds where spawn's TTFB >= {COSTLIER:g}x fork's)",
        tuple(c for pair in pairs for c in (pair[1].case_id, pair[0].case_id)),
    )


def _stall(m: Measurement) -> float:
    return m.phases.get("epoch_stall_s", math.nan)


def persistent_stall(ms: Sequence[Measurement]) -> ClaimResult:
    claim = "persistent_workers removes the epoch start stall"
    pairs = [(p, n) for p, n in _pairs(ms, "persistent_workers", True, False) if not math.isnan(_stall(p) + _stall(n))]
    if not pairs:
        return ClaimResult("persistent", claim, NOT_MEASURED, "needs the same case with persistent_workers on and off")
    parts, results, methods = [], [], []
    for p, n in pairs:
        ok = _stall(p) <= _stall(n) / 2
        results.append(ok)
        methods.append((n.config.start_method or "fork", ok))
        parts.append(
            f"{_label(n)}: next-epoch stall {fmt_time(_stall(n))} -> {fmt_time(_stall(p))} "
            f"({_stall(n) / max(_stall(p), 1e-9):.1f}x less)"
        )
    verdict = _verdict(results)
    tail = " (holds where the stall at least halves)"
    if verdict == DEPENDS:
        held = sorted({m for m, ok in methods if ok})
        tail = f"; it halves the stall only with {', '.join(held)} workers" + tail
    return ClaimResult(
        "persistent",
        claim,
        verdict,
        "; ".join(parts) + tail,
        tuple(c for pair in pairs for c in (pair[1].case_id, pair[0].case_id)),
    )


CLAIMS = (more_workers_faster, oversubscription, workers_small_tensor, pin_memory_h2d, spawn_startup, persistent_stall)


def evaluate(measurements: Sequence[Measurement]) -> tuple[ClaimResult, ...]:
    """Every claim's verdict from what was measured (``not measured`` where nothing can test it)."""
    ms = families(measurements)  # a user's test function pairs its configs, as a workload does
    return tuple(claim(ms) for claim in CLAIMS)


def table(results: Sequence[ClaimResult], *, width: int = 120, only_measured: bool = False) -> list[str]:
    """The verdict table for the terminal: claim, verdict, then the numbers wrapped beneath."""
    rows = [r for r in results if r.measured or not only_measured]
    if not rows:
        return []
    lines = ["advice claims, checked on this machine:"]
    heads = text_table(
        [Column("claim"), Column("verdict")], [[r.claim, r.verdict] for r in rows], indent=2, gap=2, header=False
    )
    for head, r in zip(heads, rows, strict=True):
        lines.append(head)
        lines.extend(wrap(r.evidence, width, indent=6))
    return lines
