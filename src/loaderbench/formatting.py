"""Every number, unit and flag the reports print, formatted in one place, and the text wrapping.

Bytes are SI (``221.6 MB``), as the JSON contract's ``*_bytes`` fields are;
rates are per second (``3.41k/s``); times carry no space before the unit;
:func:`wrap` never splits a number from its unit.  A missing or NaN value
prints ``-``.
"""

from __future__ import annotations

import math
import os
import re
import textwrap
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for the annotation only: this module imports nothing of loaderbench when it runs
    from loaderbench.measurement import Measurement


def fmt_number(value: float | None) -> str:
    """``872``, ``14.7k``, ``1.21M``."""
    if value is None or math.isnan(value):
        return "-"
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{prefix}"
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def fmt_rate(value: float | None) -> str:
    """``872/s``, ``3.41k/s``, ``1.2M/s``."""
    if value is None or math.isnan(value):
        return "-"
    for factor, prefix in ((1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{prefix}/s"
    return f"{value:.3g}/s"


def fmt_bytes(value: float | None) -> str:
    """SI bytes: ``221.6 MB``."""
    if value is None or math.isnan(value):
        return "-"
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.1f} {prefix}B"
    return f"{value:.0f} B"


def fmt_time(value: float | None) -> str:
    """``16ms``, ``1.3s``, ``0.40ms``."""
    if value is None or math.isnan(value):
        return "-"
    if value >= 10:
        return f"{value:.0f}s"
    if value >= 1:
        return f"{value:.1f}s"
    if value >= 0.001:
        return f"{value * 1e3:.0f}ms"
    return f"{value * 1e3:.2f}ms"


def fmt_percent(value: float | None) -> str:
    """``12%``, ``3.4%``."""
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.0%}" if value >= 0.1 else f"{value:.1%}"


def fmt_ratio(value: float | None) -> str:
    """A speed-up or ratio: ``3.85x``."""
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.2f}x"


def fmt_unit(value: float | None, unit: str) -> str:
    """A value in a metric's unit (``samples/s``, ``s``, ``bytes``, ``B/s``, ``1``)."""
    if value is None or math.isnan(value):
        return "n/a"
    if unit == "bytes":
        return fmt_bytes(value)
    if unit == "B/s":
        return fmt_bytes(value) + "/s"
    if unit == "s":
        return fmt_time(value)
    if unit == "samples/s":
        return fmt_rate(value)
    if unit == "1":
        return f"{value:.3f}"
    return f"{value:.4g} {unit}"


def fmt_change(fraction: float) -> str:
    """A resolvable or tolerated change: ``12%``; past 1000% it is ``cannot resolve`` (noise this large
    makes the figure meaningless)."""
    if math.isnan(fraction) or math.isinf(fraction) or fraction > 10:
        return "cannot resolve"
    return f"{fraction:.0%}"


def flags(m: Measurement) -> str:
    """A case's flag letters (``UFON``, see :data:`loaderbench.measurement.FLAGS`); empty when it passes all."""
    return "".join(f.letter for f in m.flags)


def short_note(note: str, limit: int = 160) -> str:
    """A long note (torch's warnings run to several sentences) cut after the sentence that passes 60 characters."""
    if len(note) <= limit:
        return note
    end = note.find(". ", 60)
    return note[: end + 1] if 0 < end < limit else note[: limit - 3] + "..."


#: A number followed by a bytes unit (``356.4 MB``, ``11.9 GB/s``): wrapped as one word.
_NUMBER_UNIT = re.compile(r"(?<=\d) (?=[kMGT]?B(?:/s)?\b)")
#: Stands in for the space inside a number-unit pair while wrapping (not whitespace to textwrap).
_GLUE = "\x00"


def wrap(text: str, width: int, *, indent: int) -> list[str]:
    """Word-wrap ``text`` to ``width`` columns with a hanging ``indent`` (at least 20 columns of text);
    a number and its bytes unit stay on one line."""
    room = max(20, width - indent)
    glued = _NUMBER_UNIT.sub(_GLUE, text)
    lines = textwrap.wrap(glued, room, break_long_words=False, break_on_hyphens=False)
    return [" " * indent + line.replace(_GLUE, " ") for line in lines]


def terminal_width(detected: int | None = None) -> int:
    """The report width: ``$COLUMNS`` when set (at least 80); else the detected terminal width, but at
    least 120, since a CI log is not 80 columns wide."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return max(80, int(columns))
    return max(int(detected or 120), 120)
