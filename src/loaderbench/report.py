"""The terminal report printed at the end of ``pytest --benchmark``."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from loaderbench.measurement import Measurement


def _si(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.1f}{prefix}{unit}"
    return f"{value:.0f}{unit}" if unit == "B" else f"{value:.3g}{unit}"


def _seconds(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value * 1e3:.0f}ms" if value < 10 else f"{value:.1f}s"


def terminal_report(measurements: Sequence[Measurement], *, width: int = 120) -> list[str]:
    """Per workload and device: a table sorted by samples/s, the best marked with ``*``."""
    if not measurements:
        return ["no benchmark case was measured"]
    lines: list[str] = [
        "samples/s: median of the rounds (±: IQR/median); vs w0: speed-up over the num_workers=0 case; "
        "eff: samples/s / the cost model's ideal;",
        "ttfb: iter() to first batch; stall: next epoch's iter() to first batch; mem: peak PSS of main + workers.",
    ]
    groups: dict[tuple[str, str], list[Measurement]] = {}
    for m in measurements:
        groups.setdefault((m.workload, m.device), []).append(m)
    header = (
        f"  {'config':<40} {'samples/s':>10} {'±':>5} {'vs w0':>6} {'eff':>5} "
        f"{'ttfb':>7} {'stall':>7} {'mem':>8}  notes"
    )
    for (workload, device), ms in groups.items():
        ms = sorted(ms, key=lambda m: -m.samples_per_s if not math.isnan(m.samples_per_s) else math.inf)
        w0 = [m.samples_per_s for m in ms if m.config.num_workers == 0 and not m.consumer]
        ref = w0[0] if w0 else None
        lines.append("")
        lines.append(f"{workload} on {device}")
        lines.append(header[:width])
        for i, m in enumerate(ms):
            info = m.extra_info()
            eff = info.get("efficiency")
            speed = f"{m.samples_per_s / ref:.2f}x" if ref else "-"
            label = (m.config.id + (f"-{m.consumer}" if m.consumer else ""))[:39]
            mark = "*" if i == 0 else " "
            notes = f"{len(m.warnings)} warning(s)" if m.warnings else ""
            row = (
                f"{mark} {label:<40} {m.samples_per_s:>10.1f} {m.relative_iqr:>5.1%} {speed:>6} "
                f"{(f'{eff:.0%}' if eff else '-'):>5} {_seconds(info.get('ttfb_s')):>7} "
                f"{_seconds(info.get('epoch_stall_s')):>7} {_si(m.peak_memory_bytes, 'B'):>8}  {notes}"
            )
            lines.append(row[:width])
    warned = [m for m in measurements if m.warnings]
    if warned:
        lines.append("")
        lines.append("warnings:")
        lines.extend(_wrap(f"{m.case_id}: {w}", width) for m in warned for w in m.warnings)
    return lines


def _wrap(text: str, width: int) -> str:
    return text if len(text) <= width - 2 else text[: width - 5] + "..."


def best_per_workload(measurements: Iterable[Measurement]) -> dict[str, Measurement]:
    best: dict[str, Measurement] = {}
    for m in measurements:
        key = f"{m.workload}-{m.device}"
        if key not in best or m.samples_per_s > best[key].samples_per_s:
            best[key] = m
    return best
