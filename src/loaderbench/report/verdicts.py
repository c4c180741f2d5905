"""The gate's end-of-session text: the regressions table first, then the rest in brief.

Every number goes through :mod:`loaderbench.report.format` and every table
through :mod:`loaderbench.report.table`; the full evidence of each verdict is in
``extra_info['gate']`` and in ``--loader-report``'s files.
"""

from __future__ import annotations

from collections.abc import Sequence

from loaderbench.gate.model import Verdict
from loaderbench.gate.runner import Gate
from loaderbench.metrics import METRICS
from loaderbench.report.format import fmt_change
from loaderbench.report.table import Column, text_table


def summary_lines(gate: Gate) -> list[str]:
    """``loaderbench gate: STATUS``, then (when a baseline was compared) the regressions table, the
    counts, the improvements, the undecided cases and what to do about each."""
    lines = [f"loaderbench gate: {gate.status()}"]
    if gate.doc is None:
        return lines
    verdicts = gate.verdicts
    regressed = [v for v in verdicts if v.outcome == "regressed"]
    if regressed:
        lines.append(f"REGRESSIONS ({len(regressed)}):")
        lines.extend(verdict_table(regressed))
        blame = "; ".join(gate.changes) if gate.changes else "none (same software as the baseline)"
        lines.append(f"  environment changes since the baseline: {blame}")
    counts = {o: sum(v.outcome == o for v in verdicts) for o in ("improved", "unchanged", "inconclusive")}
    cases = len({v.case_id for v in verdicts})
    lines.append(
        f"{len(regressed)} regressed, {counts['improved']} improved, {counts['unchanged']} unchanged, "
        f"{counts['inconclusive']} inconclusive (metric verdicts over {cases} cases)"
    )
    improved = [v for v in verdicts if v.outcome == "improved"]
    if improved:
        lines.append("improved (not a failure; re-record the baseline to keep the gain):")
        lines.extend(verdict_table(improved))
    inconclusive = [v for v in verdicts if v.outcome == "inconclusive"]
    gating = gate.priors is not None
    few = sorted({v.case_id for v in inconclusive if not gating and v.baseline_sessions < gate.min_sessions})
    rest = [v for v in inconclusive if gating or v.baseline_sessions >= gate.min_sessions]
    if rest:
        lines.append("inconclusive (not a failure; the smallest change each can resolve, and why):")
        lines.extend(inconclusive_lines(rest))
    if few:
        lines.append(
            f"not gated, baseline from fewer than {gate.min_sessions} sessions ({len(few)}): "
            f"{', '.join(few)}; add sessions with --loader-baseline-save --loader-baseline-append"
        )
    if gate.new_cases:
        lines.append(
            f"not compared, no baseline entry ({len(gate.new_cases)}): {', '.join(gate.new_cases)}; "
            "add them with --loader-baseline-save"
        )
    lines.extend(f"note: {n}" for n in gate.notes)
    return lines


def inconclusive_lines(verdicts: Sequence[Verdict]) -> list[str]:
    """One line per case: each undecided metric with its change and the change it could resolve."""
    by_case: dict[str, list[Verdict]] = {}
    for v in verdicts:
        by_case.setdefault(v.case_id, []).append(v)
    out = []
    for cid, vs in by_case.items():
        parts = []
        for v in vs:
            limit = fmt_change(v.resolves)
            limit = f"resolves >={limit}" if limit[0].isdigit() else "noise unknown or too large to resolve"
            parts.append(f"{v.metric} {v.change} ({limit})")
        out.append(f"  {cid}: " + "; ".join(parts))
    return out


def verdict_table(verdicts: Sequence[Verdict]) -> list[str]:
    """case, metric, baseline, current, change, threshold and the evidence, one row per verdict."""
    columns = [Column(t) for t in ("case", "metric", "baseline", "current", "change", "threshold", "evidence")]
    rows = []
    for v in verdicts:
        m = METRICS[v.metric]
        rows.append(
            [
                v.case_id,
                v.metric,
                m.format_value(v.baseline),
                m.format_value(v.current),
                v.change,
                fmt_change(v.threshold),
                v.evidence,
            ]
        )
    return text_table(columns, rows, indent=2, gap=2)
