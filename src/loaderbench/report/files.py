"""The report as files: ``results.json``, the PNG plots and ``report.md`` in one directory.

For ``--loader-report=DIR`` and ``loaderbench report``; ``report.md`` can also
be appended to a CI job summary (``$GITHUB_STEP_SUMMARY``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loaderbench.errors import ReportError, UsageError
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


def prepare_report_dir(directory: str | os.PathLike[str], *, option: str) -> Path:
    """Create ``directory`` now and check that a file can be written in it, so that a bad ``option`` is a usage
    error before anything is measured, not a traceback after."""
    out = Path(directory)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".loaderbench-write-check-"):
            pass
    except (OSError, ValueError) as exc:  # not a directory, no permission, read-only, a NUL in the name
        raise UsageError(
            f"{option}={os.fspath(directory)}: cannot create or write files in this directory "
            f"({exc.__class__.__name__}: {exc}). Pass a writable directory."
        ) from None
    return out


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
    Raises :class:`ReportError` when a file cannot be written.
    """
    try:
        return _write(directory, measurements, verdicts, context, plots, step_summary, title, sections, results)
    except OSError as exc:
        raise ReportError(
            f"the report was not written to {os.fspath(directory)}: {exc.__class__.__name__}: {exc}. "
            "The measurements and verdicts stand; give a writable directory next time."
        ) from None


def _write(
    directory: str | os.PathLike[str],
    measurements: Sequence[Measurement],
    verdicts: Mapping[str, str] | None,
    context: Mapping[str, Any] | None,
    plots: bool,
    step_summary: str | os.PathLike[str] | None,
    title: str,
    sections: Sequence[str],
    results: bool,
) -> ReportFiles:
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
