"""The report as files: ``results.json``, the PNG plots and ``report.md`` in one directory.

For ``--loader-report=DIR`` and ``loaderbench report``; ``report.md`` can also
be appended to a CI job summary (``$GITHUB_STEP_SUMMARY``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loaderbench.measurement import Measurement
from loaderbench.report import markdown
from loaderbench.report import plots as plotting  # not `plots`: write_report_files has a `plots` argument
from loaderbench.store import results as results_file


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
