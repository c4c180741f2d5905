"""The history as Markdown, fit for a CI job summary (``$GITHUB_STEP_SUMMARY``): the open regressions first,
then every case's latest level and newest change point per metric.

``loaderbench history DIR --markdown FILE`` writes it (``-`` for stdout; ``--markdown "$GITHUB_STEP_SUMMARY"``
appends to the job summary, which GitHub expects to be appended to).  The rows of the regressions table are
the same cells the page shows (:func:`regression_cells`).
"""

from __future__ import annotations

from collections.abc import Sequence

from loaderbench.history.changepoints import ChangePoint
from loaderbench.history.overview import Overview, Regression, Series
from loaderbench.report.table import Column, markdown_table

#: The regressions table's columns (the page uses them too).
REGRESSION_COLUMNS = (
    Column("case"),
    Column("metric"),
    Column("change", "r"),
    Column("95% CI", "r"),
    Column("before -> now"),
    Column("threshold"),
    Column("since"),
    Column("commits"),
    Column("environment changes"),
    Column("p", "r"),
)
#: The summary lists at most this many regressions (the page lists them all).
MAX_ROWS = 50


def signed(fraction: float) -> str:
    """A relative change with its sign: ``-12.3%``, ``+4.0%``."""
    return "n/a" if fraction != fraction else f"{fraction:+.1%}"


def change_label(series: Series, cp: ChangePoint) -> str:
    """A change point's size as the page labels it: ``-12.3% (1.14x slower)``."""
    return f"{signed(cp.change)} ({series.metric.describe_change(series.metric.slowdown(cp.before, cp.after))})"


def short_commit(commit: str | None) -> str:
    return (commit or "unknown")[:12]


def regression_cells(r: Regression) -> list[str]:
    """One open regression as the table's cells (see :data:`REGRESSION_COLUMNS`)."""
    cp, metric = r.change_point, r.series.metric
    when = r.first.time[:16].replace("T", " ")
    return [
        r.series.case,
        metric.name,
        change_label(r.series, cp),
        f"{signed(cp.change_lo)} .. {signed(cp.change_hi)}",
        f"{metric.format_value(cp.before)} -> {metric.format_value(cp.after)}",
        f"{'beyond' if r.beyond_threshold else 'within'} {r.threshold:.0%}"
        + (": fails the job" if r.fails_job else ""),
        f"{when} ({r.runs_since} run{'s' if r.runs_since != 1 else ''})",
        f"{short_commit(r.last_before.commit)}..{short_commit(r.first.commit)}",
        "; ".join(r.environment_changes) or "none",
        f"{cp.p_value:.1g}",
    ]


def header_lines(overview: Overview, *, title: str) -> list[str]:
    hw = overview.hardware
    gpus = ", ".join(hw.gpus) or "no GPU"
    cases = len({s.case for s in overview.series})
    return [
        f"# {title}",
        "",
        f"{hw.cpu_model}, {hw.affinity_cpus} CPUs, {gpus} (`{hw.key}`): {overview.runs} runs of {cases} cases, "
        f"{overview.first_time[:10]} to {overview.last_time[:10]}.",
    ]


def regression_lines(regressions: Sequence[Regression], *, limit: int = MAX_ROWS) -> list[str]:
    if not regressions:
        return ["No open regression: no case's newest change point made it worse."]
    beyond = sum(r.beyond_threshold for r in regressions)
    lines = [
        f"{len(regressions)} open regression(s), {beyond} beyond the gate's threshold: the newest change point of "
        "each case and metric that made it worse, newest first.",
        "",
        *markdown_table(REGRESSION_COLUMNS, [regression_cells(r) for r in regressions[:limit]]),
    ]
    if len(regressions) > limit:
        lines += ["", f"... and {len(regressions) - limit} more (the page lists them all)."]
    return lines


def latest_lines(overview: Overview) -> list[str]:
    """Per case and metric: the newest run's value, the runs, and the newest change point."""
    rows = []
    for s in overview.series:
        newest = s.points[-1] if s.points else None
        cp = s.change_points[-1] if s.change_points else None
        rows.append(
            [
                s.case,
                s.metric.name,
                s.metric.format_value(newest.value) if newest else "n/a",
                str(len(s.points)),
                f"{change_label(s, cp)} at {s.points[cp.index].time[:10]}" if cp else "none",
            ]
        )
    columns = [Column("case"), Column("metric"), Column("newest"), Column("runs", "r"), Column("newest change point")]
    return markdown_table(columns, rows)


def markdown(overview: Overview, *, title: str = "loaderbench history") -> str:
    """The summary as one Markdown document."""
    lines = [
        *header_lines(overview, title=title),
        "",
        "## Open regressions",
        "",
        *regression_lines(overview.regressions),
    ]
    if overview.notes:
        lines += ["", "Notes:", "", *(f"- {n}" for n in overview.notes)]
    lines += ["", "<details><summary>Every case</summary>", "", *latest_lines(overview), "", "</details>", ""]
    return "\n".join(lines)
