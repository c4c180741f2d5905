"""The terminal report printed at the end of ``pytest --benchmark`` (and by ``loaderbench report``).

Per workload and device, a compact table sorted by throughput with the best
configuration marked ``*``: speed-up over the ``num_workers=0`` case, TTFB,
the next-epoch stall, peak memory, efficiency against the cost model's ideal,
flags for instability, and the gate's verdict when a baseline was compared.
CUDA groups show accelerator utilisation and H2D bandwidth over the measured
limit instead of efficiency and stall.  Then, when cases ran through more
than one pipeline, the "which pipeline" tables; then the flags and notes, and
the advice claims the run could check.  Every line fits ``width`` columns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from loaderbench.formatting import flags, fmt_bytes, fmt_number, fmt_percent, fmt_ratio, fmt_time, short_note, wrap
from loaderbench.measurement import FLAGS, Measurement
from loaderbench.report import advice, pipelines
from loaderbench.report.cases import (
    best,
    efficiency,
    extra_float,
    flagged_cases,
    groups,
    h2d_of_limit,
    is_cuda_group,
    label,
    noted_cases,
    severity,
    speedup,
)
from loaderbench.report.table import Column, fit, text_table

# isort: split


class VerdictLike(Protocol):
    """What :func:`verdict_texts` reads from a gate verdict (``loaderbench.gate.model.Verdict`` fits)."""

    @property
    def case_id(self) -> str: ...
    @property
    def metric(self) -> str: ...
    @property
    def outcome(self) -> str: ...
    @property
    def change(self) -> str: ...


def verdict_texts(verdicts: Iterable[VerdictLike]) -> dict[str, str]:
    """case_id -> short verdict text for the report's column: the case's worst metric verdict,
    e.g. ``regressed: samples_per_s 1.23x slower`` or ``unchanged``."""
    worst: dict[str, VerdictLike] = {}
    for v in verdicts:
        old = worst.get(v.case_id)
        if old is None or severity(v.outcome) < severity(old.outcome):
            worst[v.case_id] = v
    return {
        cid: v.outcome if v.outcome == "unchanged" else f"{v.outcome}: {v.metric} {v.change}"
        for cid, v in worst.items()
    }


def group_table(ms: Sequence[Measurement], *, width: int = 120, verdicts: Mapping[str, str] | None = None) -> list[str]:
    """One (workload, device) group: a header line, the column titles and one row per case."""
    cuda = is_cuda_group(ms)
    label_w = min(max(10, *(len(label(m)) for m in ms)), 40 if cuda else 32)
    cols = [Column("", width=1), Column("config", width=label_w), Column("samples/s", "r", width=9)]
    cols += [Column("±iqr", "r", width=5), Column("vs w0", "r", width=6)]
    cols += [Column("AU", "r", width=5), Column("h2d/lim", "r", width=7)] if cuda else [Column("eff", "r", width=5)]
    cols += [Column("ttfb", "r", width=7)] + ([] if cuda else [Column("stall", "r", width=7)])
    cols += [Column("mem", "r", width=8), Column("warn", width=4)]
    if verdicts is not None:
        cols.append(Column("verdict", fill=True))
    top = best(ms)
    head = f"{ms[0].family} on {ms[0].device}: {len(ms)} case(s)"
    if top is not None:
        s = speedup(top, ms)
        vs = f", {s:.2f}x the num_workers=0 case" if s is not None and top.config.num_workers else ""
        head += f"; best {label(top)} at {fmt_number(top.samples_per_s)} samples/s{vs}"
    rows = []
    for m in ms:
        cells = [
            "*" if m is top else " ",
            label(m),
            fmt_number(m.samples_per_s),
            fmt_percent(m.relative_iqr),
            fmt_ratio(speedup(m, ms)),
        ]
        if cuda:
            cells += [fmt_percent(extra_float(m, "accelerator_utilization")), fmt_percent(h2d_of_limit(m))]
        else:
            cells.append(fmt_percent(efficiency(m)))
        cells.append(fmt_time(m.phases.get("ttfb_s")))
        if not cuda:
            cells.append(fmt_time(m.phases.get("epoch_stall_s")))
        cells += [fmt_bytes(m.peak_memory_bytes), flags(m)]
        if verdicts is not None:
            text = verdicts.get(m.case_id, "not compared")
            if text.startswith("regressed"):
                text = "REGRESSED" + text[len("regressed") :]
            cells.append(text)
        rows.append(cells)
    return [fit(head, width), *text_table(cols, rows, width=width)]


def legend(*, cuda: bool, verdicts: bool, width: int = 120) -> list[str]:
    text = (
        "samples/s: median of the rounds; ±iqr: IQR/median; vs w0: speed-up over the num_workers=0 case; "
        + ("AU: accelerator utilisation; h2d/lim: H2D bytes/s over the measured pinned limit; " if cuda else "")
        + "eff: samples/s over the cost model's ideal; ttfb: iter() to first batch; stall: next epoch's iter() "
        "to first batch; mem: peak memory of main + workers (SI bytes); warn: flags explained below; "
        "* marks the fastest"
        + ("; verdict: the gate's worst metric verdict against the baseline" if verdicts else "")
        + "."
    )
    return wrap(text, width, indent=0)


def warnings_section(measurements: Sequence[Measurement], *, width: int = 120) -> list[str]:
    """Each flag once with its advice and how many cases carry it; each distinct note once with its cases."""
    lines: list[str] = []
    for letter, cases in flagged_cases(measurements).items():
        flag = FLAGS[letter]
        lines.extend(wrap(f"{letter} ({len(cases)} case(s)): {flag.what}; {flag.fix}.", width, indent=2))
    for note, cases in noted_cases(measurements).items():
        shown = ", ".join(cases[:4]) + (f" and {len(cases) - 4} more" if len(cases) > 4 else "")
        lines.extend(wrap(f"N {short_note(note)} [{shown}]", width, indent=2))
    return ["warnings (the warn column):", *lines] if lines else []


def terminal_report(
    measurements: Sequence[Measurement], *, width: int = 120, verdicts: Mapping[str, str] | None = None
) -> list[str]:
    """The whole terminal report: per (workload, device) a table, then flags and notes, then the
    advice claims that this run could check.  ``verdicts`` maps case_id to the gate's short verdict."""
    if not measurements:
        return ["no benchmark case was measured"]
    width = max(80, width)
    grouped = groups(measurements)
    lines = legend(cuda=any(is_cuda_group(g) for g in grouped.values()), verdicts=verdicts is not None, width=width)
    for ms in grouped.values():
        lines.append("")
        lines.extend(group_table(ms, width=width, verdicts=verdicts))
    compared = pipelines.terminal_section(measurements, width=width)
    if compared:
        lines.append("")
        lines.extend(compared)
    warned = warnings_section(measurements, width=width)
    if warned:
        lines.append("")
        lines.extend(warned)
    claims = advice.table(advice.evaluate(measurements), width=width, only_measured=True)
    if claims:
        lines.append("")
        lines.extend(claims)
    return lines
