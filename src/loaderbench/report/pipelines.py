"""The "which pipeline" table: per workload and device, the best setting of each pipeline side by side.

For every (workload, device) group that was measured through more than one
pipeline (``LoaderConfig.pipeline``), one row per pipeline: its fastest
setting, samples/s (median of the rounds), the speed against DataLoader's
best, CPU time per sample summed over the main process and every worker
(``extra['cpu_s_per_sample']``, read before the first and after the last timed
round), and peak memory (PSS over the main process and its workers).  The
fastest pipeline comes first.  A difference of a few percent is within the
noise of one run: compare the gate's verdicts or ``loaderbench tune`` before
switching pipelines.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from loaderbench.config_rules import PIPELINES
from loaderbench.formatting import flags, fmt_bytes, fmt_number, fmt_ratio, wrap
from loaderbench.measurement import Measurement
from loaderbench.report.cases import best, extra_float, groups, label
from loaderbench.report.table import Column, fit, markdown_table, text_table

#: The columns: title and alignment.
COLUMNS = (
    ("pipeline", "l"),
    ("best setting", "l"),
    ("samples/s", "r"),
    ("vs dataloader", "r"),
    ("CPU time/sample", "r"),
    ("peak memory", "r"),
    ("flags", "l"),
)


def best_per_pipeline(ms: Sequence[Measurement]) -> list[Measurement]:
    """The fastest measured case of each pipeline in one group, fastest pipeline first."""
    out: dict[str, Measurement] = {}
    for m in ms:
        if math.isnan(m.samples_per_s):
            continue
        old = out.get(m.config.pipeline)
        if old is None or m.samples_per_s > old.samples_per_s:
            out[m.config.pipeline] = m
    return sorted(out.values(), key=lambda m: -m.samples_per_s)


def compared_groups(measurements: Sequence[Measurement]) -> dict[tuple[str, str], list[Measurement]]:
    """The (workload, device) groups measured through at least two pipelines, each with its best per pipeline."""
    out = {}
    for key, ms in groups(measurements).items():
        tops = best_per_pipeline(ms)
        if len(tops) >= 2:
            out[key] = tops
    return out


def cpu_per_sample(m: Measurement) -> float | None:
    """CPU seconds per sample over every process of the case (None when not measured)."""
    return extra_float(m, "cpu_s_per_sample")


def fmt_cpu(seconds: float | None) -> str:
    """CPU time per sample to three significant digits: ``8.05ms``, ``95.3us``."""
    if seconds is None or math.isnan(seconds):
        return "-"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g}ms"
    return f"{seconds * 1e6:.3g}us"


def rows(tops: Sequence[Measurement]) -> list[list[str]]:
    """One row per pipeline (see :data:`COLUMNS`)."""
    ref = next((m for m in tops if m.config.pipeline == "dataloader"), None)
    out = []
    for m in tops:
        ratio = m.samples_per_s / ref.samples_per_s if ref is not None and ref.samples_per_s > 0 else None
        out.append(
            [
                m.config.pipeline,
                label(m),
                fmt_number(m.samples_per_s),
                fmt_ratio(ratio),
                fmt_cpu(cpu_per_sample(m)),
                fmt_bytes(m.peak_memory_bytes),
                flags(m),
            ]
        )
    return out


def verdict(tops: Sequence[Measurement]) -> str:
    """One sentence: which pipeline was fastest, and by how much over DataLoader's best."""
    top = best(tops)
    if top is None:
        return "nothing was measured"
    ref = next((m for m in tops if m.config.pipeline == "dataloader"), None)
    text = f"fastest: {top.config.pipeline} as {label(top)}"
    if ref is not None and ref is not top and ref.samples_per_s > 0:
        text += f", {top.samples_per_s / ref.samples_per_s:.2f}x DataLoader's best ({label(ref)})"
    return text


def markdown_section(measurements: Sequence[Measurement]) -> list[str]:
    """``## Which pipeline``: a table per compared group; nothing when every case ran one pipeline."""
    compared = compared_groups(measurements)
    if not compared:
        return []
    names = sorted({m.config.pipeline for tops in compared.values() for m in tops}, key=list(PIPELINES).index)
    lines = [
        "## Which pipeline",
        "",
        "Pipelines: " + "; ".join(f"`{p}`: {PIPELINES[p]}" for p in names) + ".",
        "",
        "The best setting of each pipeline per workload. CPU time is user + system time of the main process and "
        "every worker over the timed rounds, per sample; memory is the peak PSS of all of them. A few percent "
        "apart is within one run's noise: let the gate or `loaderbench tune` decide.",
        "",
    ]
    columns = [Column(title, "r" if align == "r" else "l") for title, align in COLUMNS]
    for (workload, device), tops in compared.items():
        lines += [f"**{workload} on {device}**: {verdict(tops)}.", ""]
        lines += [*markdown_table(columns, rows(tops)), ""]
    return lines


def terminal_section(measurements: Sequence[Measurement], *, width: int = 120) -> list[str]:
    """The same tables for the terminal; nothing when every case ran one pipeline."""
    compared = compared_groups(measurements)
    if not compared:
        return []
    lines = wrap(
        "which pipeline: the best setting of each pipeline per workload; cpu/sample: user + system time of "
        "main + workers over the timed rounds, per sample; mem: peak PSS of main + workers.",
        width,
        indent=0,
    )
    columns = [
        Column("pipeline", width=12),
        Column("best setting", max_width=34),
        Column("samples/s", "r", width=9),
        Column("vs DL", "r", width=6),
        Column("cpu/sample", "r", width=10),
        Column("mem", "r", width=8),
        Column("warn", width=4),
    ]
    for (workload, device), tops in compared.items():
        lines += ["", fit(f"{workload} on {device}: {verdict(tops)}", width)]
        lines += text_table(columns, rows(tops), width=width)
    return lines
