"""``report.md``: the run as Markdown, fit for a CI job summary (``$GITHUB_STEP_SUMMARY``) or a PR comment.

Order: the headline (best configuration per workload), the "which pipeline"
tables (when cases ran through more than one pipeline), the gate's verdicts,
the advice claims this run could check, the plots, every case per workload in
a collapsed ``<details>`` block, and the flags and notes.  GitHub renders
``<details>`` in job summaries, so the page stays short.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from loaderbench.formatting import flags, fmt_bytes, fmt_number, fmt_percent, fmt_ratio, fmt_time, short_note
from loaderbench.measurement import FLAGS, Measurement
from loaderbench.report import advice, pipelines
from loaderbench.report.cases import (
    SEVERITY,
    best,
    efficiency,
    extra_float,
    families,
    flagged_cases,
    groups,
    h2d_of_limit,
    is_cuda_group,
    label,
    noted_cases,
    speedup,
)
from loaderbench.report.table import Column, markdown_table


def _code(text: str) -> str:
    return f"`{text}`"


def _columns(titles: str, align: str) -> list[Column]:
    """Columns from ``|``-separated titles and one ``l``/``r`` letter each."""
    return [Column(t, "r" if a == "r" else "l") for t, a in zip(titles.split("|"), align, strict=True)]


def headline(measurements: Sequence[Measurement], verdicts: Mapping[str, str] | None) -> list[str]:
    rows = []
    for ms in groups(measurements).values():
        top = best(ms)
        if top is None:
            rows.append([ms[0].family, ms[0].device, "not measured", "-", "-", "-", "-"])
            continue
        row = [
            top.family,
            top.device,
            _code(label(top)),
            fmt_number(top.samples_per_s),
            fmt_ratio(speedup(top, ms)),
            fmt_time(top.phases.get("ttfb_s")),
            fmt_bytes(top.peak_memory_bytes),
        ]
        if verdicts is not None:
            row.append(_worst_in_group(ms, verdicts))
        rows.append(row)
    titles, align = "workload|device|fastest config|samples/s|vs num_workers=0|TTFB|peak memory", "lllrrrr"
    if verdicts is not None:
        titles, align = titles + "|gate (worst case in group)", align + "l"
    return markdown_table(_columns(titles, align), rows)


def _worst_in_group(ms: Sequence[Measurement], verdicts: Mapping[str, str]) -> str:
    texts = [verdicts[m.case_id] for m in ms if m.case_id in verdicts]
    for outcome in SEVERITY:
        hits = [t for t in texts if t.startswith(outcome)]
        if hits:
            return f"{len(hits)} {outcome}" if outcome != "regressed" else f"**{len(hits)} regressed**"
    return "not compared"


def verdict_section(measurements: Sequence[Measurement], verdicts: Mapping[str, str]) -> list[str]:
    counts: dict[str, int] = {}
    for m in measurements:
        outcome = verdicts.get(m.case_id, "not compared").split(":")[0]
        counts[outcome] = counts.get(outcome, 0) + 1
    order = (*SEVERITY, "not compared")
    ranked = sorted(counts.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order), kv[0]))
    lines = ["## Gate", "", ", ".join(f"{n} {o}" for o, n in ranked) + ".", ""]
    bad = [m for m in measurements if verdicts.get(m.case_id, "").startswith(("regressed", "inconclusive"))]
    if bad:
        rows = [[_code(m.case_id), verdicts[m.case_id]] for m in bad]
        lines += markdown_table([Column("case"), Column("verdict")], rows)
        lines.append("")
    return lines


def advice_section(results: Sequence[advice.ClaimResult]) -> list[str]:
    rows = [[r.claim, f"**{r.verdict}**" if r.measured else r.verdict, r.evidence] for r in results]
    table = markdown_table([Column("claim"), Column("verdict"), Column("measured")], rows)
    return ["## Advice claims on this machine", "", *table, ""]


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
    cuda = is_cuda_group(ms)
    titles = "|config|samples/s|±iqr|vs w0|" + ("AU|H2D / limit" if cuda else "efficiency")
    titles += "|TTFB|next-epoch stall|peak memory|flags"
    align = "llrrr" + ("rr" if cuda else "r") + "rrrl"
    if verdicts is not None:
        titles += "|verdict"
        align += "l"
    top = best(ms)
    rows = []
    for m in ms:
        row = [
            "**best**" if m is top else "",
            _code(label(m)),
            fmt_number(m.samples_per_s),
            fmt_percent(m.relative_iqr),
            fmt_ratio(speedup(m, ms)),
        ]
        if cuda:
            row += [fmt_percent(extra_float(m, "accelerator_utilization")), fmt_percent(h2d_of_limit(m))]
        else:
            row.append(fmt_percent(efficiency(m)))
        row += [
            fmt_time(m.phases.get("ttfb_s")),
            fmt_time(m.phases.get("epoch_stall_s")),
            fmt_bytes(m.peak_memory_bytes),
            flags(m),
        ]
        if verdicts is not None:
            row.append(verdicts.get(m.case_id, "not compared"))
        rows.append(row)
    summary = f"{ms[0].family} on {ms[0].device} ({len(ms)} cases)"
    table = markdown_table(_columns(titles, align), rows)
    return ["<details>", f"<summary>{summary}</summary>", "", *table, "", "</details>", ""]


def flags_section(measurements: Sequence[Measurement]) -> list[str]:
    lines = []
    for letter, cases in flagged_cases(measurements).items():
        lines.append(f"- **{letter}** ({len(cases)} cases): {FLAGS[letter].what}; {FLAGS[letter].fix}.")
    for note, cases in noted_cases(measurements).items():
        shown = ", ".join(_code(c) for c in cases[:6]) + (f" and {len(cases) - 6} more" if len(cases) > 6 else "")
        lines.append(f"- **N** {short_note(note, 300)} ({shown})")
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
    workloads = {m.family for m in families(measurements)}
    cpus = measurements[0].cpus
    lines += [
        f"{len(measurements)} cases on {len(workloads)} workloads ({', '.join(devices)}), "
        f"{cpus} CPUs in the affinity mask. Throughput is the median of the timed rounds; "
        "memory is the peak over the main process and its workers, in SI bytes.",
        "",
    ]
    lines += ["## Fastest configuration per workload", "", *headline(measurements, verdicts), ""]
    lines += pipelines.markdown_section(measurements)
    for block in sections:
        lines += [block.rstrip(), ""]
    if verdicts is not None:
        lines += verdict_section(measurements, verdicts)
    claims = [r for r in advice.evaluate(measurements) if r.measured]
    if claims:
        lines += advice_section(claims)
    lines += plots_section(plots, plot_notes, embed=embed_plots)
    lines += ["## All cases", ""]
    for ms in groups(measurements).values():
        lines += group_section(ms, verdicts)
    lines += flags_section(measurements)
    return "\n".join(lines).rstrip() + "\n"
