"""The gate's end-of-session text: the regressions table first, then the rest in brief.

Every number goes through :mod:`loaderbench.formatting` and every table
through :mod:`loaderbench.report.table`; the full evidence of each verdict is in
``extra_info['gate']`` and in ``--loader-report``'s files.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from loaderbench.formatting import fmt_change, fmt_ratio
from loaderbench.gate.job import Gate
from loaderbench.gate.model import Verdict
from loaderbench.metrics import METRICS
from loaderbench.report.table import Column, text_table


def summary_lines(gate: Gate) -> list[str]:
    """``loaderbench gate: STATUS``, then (when a baseline was compared) the regressions table, the
    counts, the improvements, the undecided cases and what to do about each."""
    lines = [f"loaderbench gate: {gate.status()}"]
    if gate.doc is None:
        return lines
    lines.extend(gate.lines)  # the run's common offset and the control case, one line each
    verdicts = gate.verdicts
    regressed = [v for v in verdicts if v.outcome == "regressed"]
    if regressed:
        lines.append(f"{regressions_heading(regressed)}:")
        lines.extend(verdict_table(regressed))
        blame = "; ".join(gate.changes) if gate.changes else "none (same software as the baseline)"
        lines.append(f"  environment changes since the baseline: {blame}")
    lines.extend(
        undecided_lines(
            verdicts, how="record more baseline sessions, or compare base and head in one job with --loader-ab"
        )
    )
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
        lines.append("inconclusive (not a failure; the smallest change each can resolve, why, and what to do):")
        lines.extend(inconclusive_lines(rest, max_extra=gate.max_extra, record=gate.record_command))
    if few:
        lines.append(
            f"not gated, baseline from fewer than {gate.min_sessions} sessions ({len(few)}): "
            f"{', '.join(few)}; add sessions with {gate.record_command} --loader-baseline-append"
        )
    if gate.new_cases:
        lines.append(
            f"not compared, no baseline entry ({len(gate.new_cases)}): {', '.join(gate.new_cases)}; "
            f"add them with {gate.record_command}"
        )
    lines.extend(f"note: {n}" for n in gate.notes)
    return lines


def regressions_heading(regressed: Sequence[Verdict]) -> str:
    """``REGRESSIONS: 1 case, 3 metrics``: counted as the run's last line counts them (cases), with the rows."""
    cases = len({v.case_id for v in regressed})
    return f"REGRESSIONS: {cases} case{'s' * (cases != 1)}, {len(regressed)} metric{'s' * (len(regressed) != 1)}"


def inconclusive_lines(
    verdicts: Sequence[Verdict], *, max_extra: int | None = None, record: str | None = None
) -> list[str]:
    """One line per undecided metric: its change, the change the gate could resolve (or ``cannot resolve`` and
    why) and the reason; then the next step (the stored gate's; the A/B's reason names its own), once for each
    group of metrics that share it rather than after every one."""
    groups: dict[str, list[str]] = {}
    for v in verdicts:
        step = next_step(v, max_extra=max_extra, record=record) if v.mode == "stored" else ""
        line = f"  {v.case_id}: {v.metric} {v.change} ({_resolvable(v)}); {v.reason.split('; next:')[0]}"
        groups.setdefault(step, []).append(line)
    out = []
    for step, lines in groups.items():
        out.extend(lines)
        if step:
            out.append(f"    next{f' (the {len(lines)} above)' if len(lines) > 1 else ''}: {step}")
    return out


def undecided_large(verdicts: Sequence[Verdict]) -> list[Verdict]:
    """The inconclusive verdicts whose observed change is worse than their threshold: the job could not
    decide them, but what it saw is a regression's size.  Never a quiet green."""
    return [
        v
        for v in verdicts
        if v.outcome == "inconclusive" and math.isfinite(v.slowdown) and v.slowdown - 1 > v.threshold
    ]


def undecided_lines(verdicts: Sequence[Verdict], *, how: str) -> list[str]:
    """The prominent block for :func:`undecided_large` (none when empty); ``how`` says what to do."""
    large = undecided_large(verdicts)
    if not large:
        return []
    return [
        f"UNDECIDED ({len(large)}): worse than the threshold as observed, but not decided (not a pass; {how}):",
        *verdict_table(large),
    ]


def _resolvable(v: Verdict) -> str:
    limit = fmt_change(v.resolves)
    if limit[0].isdigit():
        return f"resolves >={limit}"
    if v.mode == "ab":
        return "cannot resolve a change yet"
    if math.isinf(v.resolves) or math.isnan(v.resolves):
        return f"cannot resolve: the noise is unknown from {v.baseline_sessions} baseline session(s)"
    return f"cannot resolve: noise ±{v.noise:.1%} from {v.baseline_sessions} baseline session(s) is too large"


def next_step(v: Verdict, *, max_extra: int | None = None, record: str | None = None) -> str:
    """What to do about an inconclusive verdict; ``record`` is the command that records this run's baseline."""
    command = f"{record} --loader-baseline-append" if record else "--loader-baseline-save --loader-baseline-append"
    record = f"record more baseline sessions (`{command}`, one per run)"
    if math.isinf(v.resolves) or math.isnan(v.resolves):
        return record
    if v.resolves > v.threshold:
        return f"{record}, or compare base and head in one job (--loader-ab)"
    extra = f" (now {max_extra})" if max_extra is not None else ""
    return f"rerun; or measure more: raise --loader-max-extra{extra} or --loader-rounds"


def _ratio(v: Verdict) -> str:
    if v.pairs < 2:
        return fmt_ratio(v.ratio)
    return f"{fmt_ratio(v.ratio)} [{fmt_ratio(v.ci_low)}, {fmt_ratio(v.ci_high)}]"


STORED_COLUMNS = ("case", "metric", "baseline", "current", "change", "threshold", "evidence")
AB_COLUMNS = ("case", "metric", "base", "head", "head/base [95% CI]", "change", "threshold", "evidence")


def verdict_row(v: Verdict) -> list[str]:
    """One row of :func:`verdict_table` (the A/B's carry the ratio with its interval)."""
    m = METRICS[v.metric]
    ratio = [_ratio(v)] if v.mode == "ab" else []
    return [
        v.case_id,
        v.metric,
        m.format_value(v.baseline),
        m.format_value(v.current),
        *ratio,
        v.change,
        fmt_change(v.threshold),
        v.evidence,
    ]


def verdict_table(verdicts: Sequence[Verdict]) -> list[str]:
    """The one verdict table of the stored gate and the A/B: case, metric, the two values (the A/B's with
    head/base and its 95% interval), change, threshold and the evidence, one row per verdict."""
    if not verdicts:
        return []
    titles = AB_COLUMNS if verdicts[0].mode == "ab" else STORED_COLUMNS
    return text_table([Column(t) for t in titles], [verdict_row(v) for v in verdicts], indent=2, gap=2)
