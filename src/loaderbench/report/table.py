"""The one table renderer: fixed-width text tables for the terminal, and GitHub Markdown tables.

A table is a sequence of :class:`Column` and rows of strings (format numbers
with :mod:`loaderbench.formatting` first).  Text columns fit their widest
cell (and are at least ``min_width`` wide) unless given a ``width``; cells
longer than ``max_width`` are cut with ``~``; a ``fill`` column takes what the
line ``width`` leaves.  Trailing blanks are stripped and every line is cut to
``width``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class Column:
    title: str
    align: Literal["l", "r"] = "l"
    width: int | None = None
    max_width: int | None = None
    fill: bool = False
    min_width: int = 0


def fit(text: str, width: int) -> str:
    """``text`` cut to ``width`` columns, ending in ``~`` when cut."""
    return text if len(text) <= width else text[: max(0, width - 1)] + "~"


def text_table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    *,
    indent: int = 0,
    width: int | None = None,
    gap: int = 1,
    header: bool = True,
) -> list[str]:
    """Aligned text lines: the titles (when ``header``), then one line per row."""
    table = [[c.title for c in columns], *rows] if header else [*rows]
    widths = []
    for i, col in enumerate(columns):
        w = col.width if col.width is not None else max([col.min_width, *(len(r[i]) for r in table)])
        if col.max_width is not None:
            w = min(w, col.max_width)
        widths.append(w)
    if width is not None:
        used = indent + sum(w + gap for w, c in zip(widths, columns, strict=True) if not c.fill)
        for i, col in enumerate(columns):
            if col.fill:
                widths[i] = max(8, width - used)
    out = []
    for row in table:
        cells = []
        for cell, col, w in zip(row, columns, widths, strict=True):
            text = fit(cell, w)
            cells.append(text.rjust(w) if col.align == "r" else text.ljust(w))
        line = (" " * indent + (" " * gap).join(cells)).rstrip()
        out.append(fit(line, width) if width is not None else line)
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(columns: Sequence[Column], rows: Sequence[Sequence[object]]) -> list[str]:
    """A GitHub-flavoured Markdown table (pipes escaped, newlines flattened)."""
    marks = ["---:" if c.align == "r" else "---" for c in columns]
    lines = ["| " + " | ".join(_cell(c.title) for c in columns) + " |", "|" + "|".join(marks) + "|"]
    lines.extend("| " + " | ".join(_cell(str(c)) for c in row) + " |" for row in rows)
    return lines
