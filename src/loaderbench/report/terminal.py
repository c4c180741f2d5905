"""The terminal report printed at the end of ``pytest --benchmark`` (and by ``loaderbench report``).

Per workload and device, a compact table sorted by throughput with the best
configuration marked ``*``: speed-up over the ``num_workers=0`` case, TTFB,
the next-epoch stall, peak memory, efficiency against the cost model's ideal,
flags for instability, and the gate's verdict when a baseline was compared.
CUDA groups show accelerator utilisation and H2D bandwidth over the measured
limit instead of efficiency and stall.  Every line fits ``width`` columns.

:func:`write_report_files` writes the same report as files (``report.md``,
``results.json``, PNG plots), for ``--loader-report=DIR`` and the CLI.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from loaderbench.measurement import MIN_STEADY_BATCHES, UNSTABLE_RELATIVE_IQR, Measurement
from loaderbench.report import advice

#: Row flags: (letter, what it means, what to do).
FLAGS: dict[str, tuple[str, str]] = {
    "U": (
        f"unstable: IQR/median of samples/s >= {UNSTABLE_RELATIVE_IQR:.0%}",
        "close other programs, raise --loader-rounds, or treat the case's verdicts as noisy",
    ),
    "F": (
        f"too few steady-state batches (< {MIN_STEADY_BATCHES})",
        "raise --loader-round-seconds so each round covers more batches",
    ),
    "O": (
        "more workers than CPUs in the affinity mask",
        "workers time-share cores, so GIL-bound work cannot scale past the CPU count",
    ),
    "N": ("a note from the harness or torch (listed below)", "read the note"),
}

#: Severity order of gate outcomes, worst first (the verdict column shows a case's worst metric).
_SEVERITY = ("regressed", "inconclusive", "improved", "unchanged")


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
        rank = _SEVERITY.index(v.outcome) if v.outcome in _SEVERITY else len(_SEVERITY)
        old = worst.get(v.case_id)
        if old is None or rank < (_SEVERITY.index(old.outcome) if old.outcome in _SEVERITY else len(_SEVERITY)):
            worst[v.case_id] = v
    return {
        cid: v.outcome if v.outcome == "unchanged" else f"{v.outcome}: {v.metric} {v.change}"
        for cid, v in worst.items()
    }


# --- formatting -----------------------------------------------------------------------------------


def fmt_number(value: float | None) -> str:
    """``872``, ``14.7k``, ``1.21M``; ``-`` when missing."""
    if value is None or math.isnan(value):
        return "-"
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{prefix}"
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def fmt_bytes(value: float | None) -> str:
    """SI bytes: ``221.6 MB``."""
    if value is None or math.isnan(value):
        return "-"
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.1f} {prefix}B"
    return f"{value:.0f} B"


fmt_time = advice.fmt_time


def fmt_percent(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.0%}" if value >= 0.1 else f"{value:.1%}"


def flags(m: Measurement) -> str:
    """The row's flag letters (see :data:`FLAGS`)."""
    out = ""
    if not math.isnan(m.relative_iqr) and m.relative_iqr >= UNSTABLE_RELATIVE_IQR:
        out += "U"
    if m.steady_batches < MIN_STEADY_BATCHES:
        out += "F"
    if m.config.num_workers > m.cpus:
        out += "O"
    if m.notes:
        out += "N"
    return out


def label(m: Measurement) -> str:
    return m.config.id + (f"-{m.consumer}" if m.consumer else "")


def extra_float(m: Measurement, key: str) -> float | None:
    """A CUDA (or other consumer) metric: the median of its rounds, else the case-level value."""
    if m.rounds.get(key):
        return m.median(key)
    value = m.extra.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def is_cuda_group(ms: Sequence[Measurement]) -> bool:
    return any(extra_float(m, "feed_samples_per_s") is not None for m in ms)


def groups(measurements: Iterable[Measurement]) -> dict[tuple[str, str], list[Measurement]]:
    """(workload, device) -> cases sorted by samples/s, fastest first (unmeasured last), in first-seen order."""
    out: dict[tuple[str, str], list[Measurement]] = {}
    for m in measurements:
        out.setdefault((m.workload, m.device), []).append(m)
    for ms in out.values():
        ms.sort(key=lambda m: (math.isnan(m.samples_per_s), -m.samples_per_s if not math.isnan(m.samples_per_s) else 0))
    return out


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


# --- the table ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Column:
    title: str
    width: int
    left: bool = False


def _row(cells: Sequence[str], columns: Sequence[_Column]) -> str:
    parts = [c.ljust(col.width) if col.left else c.rjust(col.width) for c, col in zip(cells, columns, strict=True)]
    return " ".join(parts).rstrip()


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "~"


def group_table(ms: Sequence[Measurement], *, width: int = 120, verdicts: Mapping[str, str] | None = None) -> list[str]:
    """One (workload, device) group: a header line, the column titles and one row per case."""
    cuda = is_cuda_group(ms)
    label_w = min(max(10, *(len(label(m)) for m in ms)), 40 if cuda else 32)
    cols = [_Column("", 1, left=True), _Column("config", label_w, left=True), _Column("samples/s", 9)]
    cols += [_Column("±iqr", 5), _Column("vs w0", 6)]
    cols += [_Column("AU", 5), _Column("h2d/lim", 7)] if cuda else [_Column("eff", 5)]
    cols += [_Column("ttfb", 7)] + ([] if cuda else [_Column("stall", 7)])
    cols += [_Column("mem", 8), _Column("warn", 4, left=True)]
    if verdicts is not None:
        used = sum(c.width + 1 for c in cols)
        cols.append(_Column("verdict", max(8, width - used), left=True))
    best = ms[0] if ms and not math.isnan(ms[0].samples_per_s) else None
    head = f"{ms[0].workload} on {ms[0].device}: {len(ms)} case(s)"
    if best is not None:
        s = speedup(best, ms)
        vs = f", {s:.2f}x the num_workers=0 case" if s is not None and best.config.num_workers else ""
        head += f"; best {label(best)} at {fmt_number(best.samples_per_s)} samples/s{vs}"
    lines = [_fit(head, width), _fit(_row([c.title for c in cols], cols), width)]
    for m in ms:
        s = speedup(m, ms)
        cells = [
            "*" if m is best else " ",
            _fit(label(m), label_w),
            fmt_number(m.samples_per_s),
            fmt_percent(m.relative_iqr),
            f"{s:.2f}x" if s is not None else "-",
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
            cells.append(_fit(text, cols[-1].width))
        lines.append(_fit(_row(cells, cols), width))
    return lines


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
    return advice.wrap(text, width, indent=0)


def short_note(note: str, limit: int = 160) -> str:
    """A long note (torch's warnings run to several sentences) cut after the sentence that passes 60 characters."""
    if len(note) <= limit:
        return note
    end = note.find(". ", 60)
    return note[: end + 1] if 0 < end < limit else note[: limit - 3] + "..."


def warnings_section(measurements: Sequence[Measurement], *, width: int = 120) -> list[str]:
    """Each flag once with its advice and how many cases carry it; each distinct note once with its cases."""
    lines: list[str] = []
    counts = {letter: [m.case_id for m in measurements if letter in flags(m)] for letter in FLAGS}
    for letter, (what, fix) in FLAGS.items():
        if counts[letter] and letter != "N":
            lines.extend(advice.wrap(f"{letter} ({len(counts[letter])} case(s)): {what}; {fix}.", width, indent=2))
    notes: dict[str, list[str]] = {}
    for m in measurements:
        for note in m.notes:
            notes.setdefault(note, []).append(m.case_id)
    for note, cases in notes.items():
        shown = ", ".join(cases[:4]) + (f" and {len(cases) - 4} more" if len(cases) > 4 else "")
        lines.extend(advice.wrap(f"N {short_note(note)} [{shown}]", width, indent=2))
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
    warned = warnings_section(measurements, width=width)
    if warned:
        lines.append("")
        lines.extend(warned)
    claims = advice.table(advice.evaluate(measurements), width=width, only_measured=True)
    if claims:
        lines.append("")
        lines.extend(claims)
    return lines


# --- files ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReportFiles:
    """What :func:`write_report_files` wrote, and why any plot was not drawn."""

    directory: Path
    markdown: Path
    results: Path | None
    plots: tuple[Path, ...]
    plot_notes: tuple[str, ...]
    step_summary: Path | None = None


def write_report_files(
    directory: str | os.PathLike[str],
    measurements: Sequence[Measurement],
    *,
    verdicts: Mapping[str, str] | None = None,
    context: Mapping[str, Any] | None = None,
    plots: bool = True,
    step_summary: str | os.PathLike[str] | None = None,
    title: str = "loaderbench report",
    sections: Sequence[str] = (),
    results: bool = True,
) -> ReportFiles:
    """Write ``results.json``, the PNG plots and ``report.md`` into ``directory``.

    ``step_summary`` (the plugin passes ``$GITHUB_STEP_SUMMARY``) gets ``report.md`` appended.
    ``sections`` are extra Markdown blocks (``loaderbench tune`` adds its recommendation).
    ``results=False`` leaves ``results.json`` alone (``loaderbench report`` regenerating from it).
    """
    from loaderbench.report import markdown
    from loaderbench.report import plots as plotting
    from loaderbench.store import results as results_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    results_path = None
    if results:
        results_path = results_file.write_results(
            out / "results.json", measurements, verdicts=verdicts, context=context
        )
    drawn: tuple[Path, ...] = ()
    notes: tuple[str, ...] = ()
    if plots:
        drawn_plots = plotting.write_plots(measurements, out)
        drawn, notes = drawn_plots.files, drawn_plots.notes
    else:
        notes = ("plots not drawn: turned off",)

    def render(embed: bool) -> str:
        return markdown.markdown_report(
            measurements,
            verdicts=verdicts,
            plots=drawn,
            plot_notes=notes,
            embed_plots=embed,
            title=title,
            sections=sections,
        )

    md = out / "report.md"
    md.write_text(render(True), encoding="utf-8")
    summary: Path | None = None
    if step_summary:
        # a job summary cannot show the PNGs by relative path, so it lists them instead
        summary = Path(step_summary)
        with summary.open("a", encoding="utf-8") as fh:
            fh.write(render(False))
    return ReportFiles(out, md, results_path, drawn, notes, summary)
