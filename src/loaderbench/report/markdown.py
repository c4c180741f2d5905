"""``report.md``: the run as Markdown, fit for a CI job summary (``$GITHUB_STEP_SUMMARY``) or a PR comment.

Order: the headline (best configuration per workload), the gate's verdicts,
the advice claims this run could check, the plots, every case per workload in
a collapsed ``<details>`` block, and the flags and notes.  GitHub renders
``<details>`` in job summaries, so the page stays short.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from loaderbench.measurement import Measurement
from loaderbench.report import advice
from loaderbench.report import terminal as tr


def cell(text: object) -> str:
    """A table cell: pipes escaped, newlines flattened."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(header: Sequence[str], rows: Sequence[Sequence[object]], *, align: str = "") -> list[str]:
    """A GitHub-flavoured Markdown table; ``align`` has one letter per column, ``l`` or ``r`` (default l)."""
    marks = ["---:" if (align[i : i + 1] == "r") else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "|".join(marks) + "|"]
    lines.extend("| " + " | ".join(cell(c) for c in row) + " |" for row in rows)
    return lines


def _code(text: str) -> str:
    return f"`{text}`"


def headline(measurements: Sequence[Measurement], verdicts: Mapping[str, str] | None) -> list[str]:
    rows = []
    for ms in tr.groups(measurements).values():
        best = ms[0]
        if math.isnan(best.samples_per_s):
            rows.append([best.workload, best.device, "not measured", "-", "-", "-", "-"])
            continue
        s = tr.speedup(best, ms)
        row = [
            best.workload,
            best.device,
            _code(tr.label(best)),
            tr.fmt_number(best.samples_per_s),
            f"{s:.2f}x" if s is not None else "-",
            tr.fmt_time(best.phases.get("ttfb_s")),
            tr.fmt_bytes(best.peak_memory_bytes),
        ]
        if verdicts is not None:
            row.append(_worst_in_group(ms, verdicts))
        rows.append(row)
    header = ["workload", "device", "fastest config", "samples/s", "vs num_workers=0", "TTFB", "peak memory"]
    if verdicts is not None:
        header.append("gate (worst case in group)")
    return table(header, rows, align="lllrrrrl")


def _worst_in_group(ms: Sequence[Measurement], verdicts: Mapping[str, str]) -> str:
    texts = [verdicts[m.case_id] for m in ms if m.case_id in verdicts]
    for outcome in ("regressed", "inconclusive", "improved", "unchanged"):
        hits = [t for t in texts if t.startswith(outcome)]
        if hits:
            return f"{len(hits)} {outcome}" if outcome != "regressed" else f"**{len(hits)} regressed**"
    return "not compared"


def verdict_section(measurements: Sequence[Measurement], verdicts: Mapping[str, str]) -> list[str]:
    counts: dict[str, int] = {}
    for m in measurements:
        outcome = verdicts.get(m.case_id, "not compared").split(":")[0]
        counts[outcome] = counts.get(outcome, 0) + 1
    order = ("regressed", "inconclusive", "improved", "unchanged", "not compared")
    ranked = sorted(counts.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order), kv[0]))
    lines = ["## Gate", "", ", ".join(f"{n} {o}" for o, n in ranked) + ".", ""]
    flagged = [m for m in measurements if verdicts.get(m.case_id, "").startswith(("regressed", "inconclusive"))]
    if flagged:
        lines += table(["case", "verdict"], [[_code(m.case_id), verdicts[m.case_id]] for m in flagged])
        lines.append("")
    return lines


def advice_section(results: Sequence[advice.ClaimResult]) -> list[str]:
    rows = [[r.claim, f"**{r.verdict}**" if r.measured else r.verdict, r.evidence] for r in results]
    return ["## Advice claims on this machine", "", *table(["claim", "verdict", "measured"], rows), ""]


def plots_section(plots: Sequence[Path], notes: Sequence[str], *, embed: bool) -> list[str]:
    lines = ["## Plots", ""]
    for p in plots:
        title = p.stem.replace("_", " ")
        lines.append(f"![{title}]({p.name})" if embed else f"- {_code(p.name)}: {title}")
    if plots and not embed:
        lines.append("")
        lines.append("The PNG files are in the report directory (upload it as a CI artifact to see them).")
    lines.extend(f"- {n}" for n in notes)
    return [*lines, ""]


def group_section(ms: Sequence[Measurement], verdicts: Mapping[str, str] | None) -> list[str]:
    cuda = tr.is_cuda_group(ms)
    header = ["", "config", "samples/s", "±iqr", "vs w0"]
    header += ["AU", "H2D / limit"] if cuda else ["efficiency"]
    header += ["TTFB", "next-epoch stall", "peak memory", "flags"]
    if verdicts is not None:
        header.append("verdict")
    rows = []
    for i, m in enumerate(ms):
        s = tr.speedup(m, ms)
        row: list[object] = [
            "**best**" if i == 0 and not math.isnan(m.samples_per_s) else "",
            _code(tr.label(m)),
            tr.fmt_number(m.samples_per_s),
            tr.fmt_percent(m.relative_iqr),
            f"{s:.2f}x" if s is not None else "-",
        ]
        if cuda:
            row += [tr.fmt_percent(tr.extra_float(m, "accelerator_utilization")), tr.fmt_percent(tr.h2d_of_limit(m))]
        else:
            row.append(tr.fmt_percent(tr.efficiency(m)))
        row += [
            tr.fmt_time(m.phases.get("ttfb_s")),
            tr.fmt_time(m.phases.get("epoch_stall_s")),
            tr.fmt_bytes(m.peak_memory_bytes),
            tr.flags(m),
        ]
        if verdicts is not None:
            row.append(verdicts.get(m.case_id, "not compared"))
        rows.append(row)
    summary = f"{ms[0].workload} on {ms[0].device} ({len(ms)} cases)"
    align = "llrrr" + ("rr" if cuda else "r") + "rrrl" + "l"
    return ["<details>", f"<summary>{summary}</summary>", "", *table(header, rows, align=align), "", "</details>", ""]


def flags_section(measurements: Sequence[Measurement]) -> list[str]:
    lines = []
    for letter, (what, fix) in tr.FLAGS.items():
        n = sum(letter in tr.flags(m) for m in measurements)
        if n and letter != "N":
            lines.append(f"- **{letter}** ({n} cases): {what}; {fix}.")
    notes: dict[str, list[str]] = {}
    for m in measurements:
        for note in m.notes:
            notes.setdefault(note, []).append(m.case_id)
    for note, cases in notes.items():
        shown = ", ".join(_code(c) for c in cases[:6]) + (f" and {len(cases) - 6} more" if len(cases) > 6 else "")
        lines.append(f"- **N** {tr.short_note(note, 300)} ({shown})")
    return ["## Flags and notes", "", *lines, ""] if lines else []


def markdown_report(
    measurements: Sequence[Measurement],
    *,
    verdicts: Mapping[str, str] | None = None,
    plots: Sequence[Path] = (),
    plot_notes: Sequence[str] = (),
    embed_plots: bool = True,
    title: str = "loaderbench report",
    sections: Sequence[str] = (),
) -> str:
    """The whole report as Markdown.  ``sections`` are extra blocks placed after the headline."""
    lines = [f"# {title}", ""]
    if not measurements:
        return "\n".join([*lines, "No benchmark case was measured.", ""])
    devices = sorted({m.device for m in measurements})
    workloads = {m.workload for m in measurements}
    cpus = measurements[0].cpus
    lines += [
        f"{len(measurements)} cases on {len(workloads)} workloads ({', '.join(devices)}), "
        f"{cpus} CPUs in the affinity mask. Throughput is the median of the timed rounds; "
        "memory is the peak over the main process and its workers, in SI bytes.",
        "",
    ]
    lines += ["## Fastest configuration per workload", "", *headline(measurements, verdicts), ""]
    for block in sections:
        lines += [block.rstrip(), ""]
    if verdicts is not None:
        lines += verdict_section(measurements, verdicts)
    claims = [r for r in advice.evaluate(measurements) if r.measured]
    if claims:
        lines += advice_section(claims)
    lines += plots_section(plots, plot_notes, embed=embed_plots)
    lines += ["## All cases", ""]
    for ms in tr.groups(measurements).values():
        lines += group_section(ms, verdicts)
    lines += flags_section(measurements)
    return "\n".join(lines).rstrip() + "\n"
