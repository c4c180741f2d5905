"""The A/B's text: the progress line per child, the end-of-run summary (the regressions table first) and
the Markdown section of ``report.md``.

Every number goes through :mod:`loaderbench.formatting`; the verdict tables are the stored gate's
(:mod:`loaderbench.report.verdicts`), one renderer for both modes.
Ratios are ``head / base``; the change column reads from the head's
side (``2.01x slower``: the head is slower).
"""

from __future__ import annotations

import dataclasses

from loaderbench.ab.paired import ABVerdict
from loaderbench.ab.schedule import ABResult, Step
from loaderbench.formatting import fmt_time
from loaderbench.measurement import Measurement
from loaderbench.report.table import Column, markdown_table
from loaderbench.report.verdicts import (
    AB_COLUMNS,
    inconclusive_lines,
    regressions_heading,
    undecided_lines,
    verdict_row,
    verdict_table,
)

#: The consumer suffix that tells a base measurement from the head's in the report's tables and plots.
BASE_LABEL = "base"


def progress_line(step: Step) -> str:
    """``loaderbench ab: block 2/8 (B A), head, 3 case(s) left, 12s elapsed``."""
    order = "A B" if step.block % 2 == 1 else "B A"
    elapsed = f"{fmt_time(step.elapsed_s)} elapsed" if step.elapsed_s >= 0.1 else "starting"
    return (
        f"loaderbench ab: block {step.block}/{step.blocks} ({order}), {step.arm}, {step.cases} case(s) left, {elapsed}"
    )


def difference(result: ABResult) -> str:
    """The environment difference between the arms, in one line."""
    found = result.changes()
    if found:
        return "; ".join(found)
    missing = [n for n in ("base", "head") if result.environments.get(n) is None]
    if missing:
        return f"unknown: the {' and '.join(missing)} arm recorded no environment"
    return "none recorded (same versions, commit and variables): the arms differ only in their executables"


def summary_lines(result: ABResult) -> list[str]:
    """The regressions table first (with the arms' environment difference), then the counts, the
    improvements, the undecided cases with what each can resolve, the failures and the notes."""
    lines = [
        f"loaderbench ab: base {result.executables.get('base')} vs head {result.executables.get('head')}: "
        f"{len(result.pairs)} case(s), {result.blocks} block(s) in ABBA order, {fmt_time(result.elapsed_s)}; "
        f"stopped: {result.stopped}"
    ]
    regressed = result.regressions
    if regressed:
        lines.append(f"{regressions_heading(regressed)}: the head is worse than the base")
        lines.extend(verdict_table(regressed))
        lines.append(f"  environment, base -> head: {difference(result)}")
    counts = {o: sum(v.outcome == o for v in result.verdicts) for o in ("improved", "unchanged", "inconclusive")}
    lines.append(
        f"{len(regressed)} regressed, {counts['improved']} improved, {counts['unchanged']} unchanged, "
        f"{counts['inconclusive']} inconclusive (metric verdicts over {len(result.pairs)} cases)"
    )
    if not regressed:
        lines.append(f"environment, base -> head: {difference(result)}")
    improved = [v for v in result.verdicts if v.outcome == "improved"]
    if improved:
        lines.append("improved (not a failure):")
        lines.extend(verdict_table(improved))
    lines.extend(
        undecided_lines(
            result.verdicts,
            how=f"stopped: {result.stopped}; raise --loader-ab-pairs or --loader-ab-budget, or use a quieter machine",
        )
    )
    inconclusive = [v for v in result.verdicts if v.outcome == "inconclusive"]
    if inconclusive:
        lines.append("inconclusive (not a failure; the smallest change each can resolve, and why):")
        lines.extend(inconclusive_lines(inconclusive))
    for f in result.failures:
        lines.append(f"FAILED in the {f.arm} arm (block {f.block}): {f.message}")
    for case_id, why in result.not_compared.items():
        lines.append(f"not compared: {case_id}: {why}")
    lines.extend(f"note: {n}" for n in result.notes)
    return lines


def markdown_section(result: ABResult) -> str:
    """``## A/B: base vs head`` with every verdict, for ``report.md``."""
    columns = [Column(t) for t in (*AB_COLUMNS[:6], "verdict", "why")]
    rows = [[*verdict_row(v)[:6], v.outcome, v.reason] for v in result.verdicts]
    lines = [
        "## A/B: base vs head",
        "",
        f"- base: `{result.executables.get('base')}`; head: `{result.executables.get('head')}`",
        f"- environment, base -> head: {difference(result)}",
        f"- {result.blocks} block(s) in ABBA order, {fmt_time(result.elapsed_s)}; stopped: {result.stopped}",
        f"- {len(result.regressions)} regressed, "
        + ", ".join(
            f"{sum(v.outcome == o for v in result.verdicts)} {o}" for o in ("improved", "unchanged", "inconclusive")
        ),
        "",
        *markdown_table(columns, rows),
    ]
    for f in result.failures:
        lines.append(f"\n**FAILED** in the {f.arm} arm (block {f.block}): {f.message}")
    return "\n".join(lines) + "\n"


def verdict_texts(result: ABResult) -> dict[str, str]:
    """case_id -> the report's verdict column: the case's worst verdict for head rows, ``base arm`` for base rows."""
    rank = {"regressed": 0, "inconclusive": 1, "improved": 2, "unchanged": 3}
    worst: dict[str, ABVerdict] = {}
    for v in result.verdicts:
        if v.case_id not in worst or rank[v.outcome] < rank[worst[v.case_id].outcome]:
            worst[v.case_id] = v
    out = {
        c: v.outcome if v.outcome == "unchanged" else f"{v.outcome}: {v.metric} {v.change}" for c, v in worst.items()
    }
    for m in representatives(result, "base"):
        out[m.case_id] = "base arm"
    return out


def representatives(result: ABResult, arm: str) -> list[Measurement]:
    """One measurement per case and arm for the report's tables and plots: the run with the median
    samples/s of that arm's runs; base runs carry the consumer suffix ``base``."""
    out = []
    for pairs in result.pairs.values():
        runs = sorted((p[0] if arm == "base" else p[1] for p in pairs), key=lambda m: m.samples_per_s)
        m = runs[(len(runs) - 1) // 2]
        if arm == "base":
            m = dataclasses.replace(m, consumer=f"{m.consumer}-{BASE_LABEL}" if m.consumer else BASE_LABEL)
        out.append(m)
    return out
