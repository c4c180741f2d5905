"""What ``loaderbench tune`` prints and writes: a :class:`~loaderbench.tune.run.TuneResult` as text.

:func:`render_tune` is the terminal answer (the snippet to paste, the
bottleneck, the speed-up over the defaults and the heuristics, every trial);
:func:`tune_markdown` the same recommendation as a ``report.md`` section and
:func:`tune_context` the ``results.json`` context.  Whether two configs differ
is asked of the search (:meth:`~loaderbench.tune.search.Search.separated`),
never decided here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from loaderbench.formatting import fmt_bytes, fmt_percent, fmt_rate, fmt_time, wrap
from loaderbench.report.pipelines import fmt_cpu
from loaderbench.report.table import Column, markdown_table, text_table
from loaderbench.tune.pipelines import cpu_s_per_sample
from loaderbench.tune.ranks import core_note
from loaderbench.tune.run import TuneResult
from loaderbench.tune.search import Trial, ordered

#: One comparison: (what, config id, its trial or None, the speed-up text).
Comparison = tuple[str, str, Trial | None, str]


def _split(path: str) -> tuple[str, str]:
    module, _, attr = path.partition(":")
    return module, attr


def snippet(result: TuneResult) -> list[str]:
    """The recommended DataLoader call, as Python to paste."""
    spec, cfg = result.spec, result.recommended
    module, attr = _split(spec.factory)
    lines = ["import torch.utils.data", f"from {module} import {attr}"]
    if spec.collate:
        cmod, cattr = _split(spec.collate)
        lines.append(f"from {cmod} import {cattr}")
    best = result.trial(cfg)
    w0 = result.trial(result.defaults)
    comment = ""
    if best is not None and w0 is not None and cfg.num_workers:
        comment = f"  # {fmt_rate(best.median)} here vs {fmt_rate(w0.median)} with num_workers=0"
    lines += ["", "loader = torch.utils.data.DataLoader(", f"    {attr}(),", f"    batch_size={cfg.batch_size},"]
    lines.append(f"    num_workers={cfg.num_workers},{comment}")
    if cfg.num_workers and cfg.prefetch_factor is not None:
        lines.append(f"    prefetch_factor={cfg.prefetch_factor},  # batches each worker loads ahead (default 2)")
    if cfg.persistent_workers:
        gain = result.persistence_gain()
        note = ""
        if gain is not None:
            without, with_, measured = gain
            note = (
                f"  # next-epoch stall {fmt_time(without)} -> {fmt_time(with_)}"
                if measured
                else f"  # next-epoch stall {fmt_time(with_)}; restarting workers costs >= {fmt_time(without)}"
            )
        lines.append(f"    persistent_workers=True,{note}")
    if cfg.multiprocessing_context:
        lines.append(f'    multiprocessing_context="{cfg.multiprocessing_context}",  # CUDA: never fork a CUDA parent')
    if cfg.pin_memory:
        lines.append("    pin_memory=True,")
    if not cfg.in_order:
        lines.append("    in_order=False,  # batches may arrive out of order; drop this line if order matters")
    if spec.collate:
        lines.append(f"    collate_fn={_split(spec.collate)[1]},")
    lines.append(")")
    return lines


def comparisons(result: TuneResult) -> list[Comparison]:
    """(what, config id, trial, speed-up text) for the defaults and each heuristic."""
    search = result.search
    best = result.trial(result.recommended) or search.recommended()
    out: list[Comparison] = []
    points = [("the DataLoader defaults (num_workers=0)", result.defaults)]
    points += [(f"{name} = {n}", cfg) for name, n, cfg in search.heuristic_configs()]
    for what, cfg in points:
        trial = result.trial(cfg)
        if trial is None:
            reason = search.failures.get(cfg)
            out.append((what, cfg.id, None, "failed: " + reason[:60] if reason else "not measured (budget)"))
            continue
        ratio = best.median / trial.median
        if trial.config == best.config:
            text = "is the recommendation"
        elif search.separated(best, trial):
            text = f"{ratio:.2f}x faster (Mann-Whitney p={search.p_value(best, trial):.2g})"
        else:
            text = f"{ratio:.2f}x: not a significant difference (p={search.p_value(best, trial):.2g})"
        out.append((what, cfg.id, trial, text))
    return out


def fastest_note(result: TuneResult) -> list[str]:
    """Why the recommendation is not the fastest config measured, when it is not."""
    search, spec = result.search, result.spec
    top = search.top()
    rec = result.trial(result.recommended)
    if rec is None or top.config in (rec.config, rec.config.replace(persistent_workers=False)):
        return []
    ratio = top.median / rec.median
    p = search.p_value(top, rec)
    if search.tied(top, rec):
        why = f"is within {spec.tie:.0%} of this cheaper setting ({ratio:.3f}x)"
    elif not search.separated(top, rec):
        why = (
            f"cannot be told apart from this cheaper setting by its rounds ({ratio:.2f}x, Mann-Whitney "
            f"p={p:.2g} > {spec.alpha:g}); a larger --budget can decide"
        )
    else:  # the persistent variant of a config tied with the fastest: it trades a little rate for the stall
        why = f"is {ratio:.2f}x faster (p={p:.2g}); persistent workers are kept for the next-epoch stall they remove"
    return ["", f"{top.config.id} measured fastest ({fmt_rate(top.median)}), but {why}."]


def ranks_lines(result: TuneResult) -> list[str]:
    """With ``--ranks``: the answer is per rank, and how ranks x workers sit on the cores."""
    ranks = result.spec.ranks
    if ranks == 1:
        return []
    return [
        "",
        f"Per rank, in each of {ranks} ranks (torchrun --nproc-per-node={ranks}), each DataLoader over a "
        "DistributedSampler (call sampler.set_epoch(epoch) every epoch); measured as the job's samples/s, all ranks "
        "stepping together.",
        core_note(ranks, result.recommended.num_workers),
    ]


def render_tune(result: TuneResult, *, width: int = 120) -> list[str]:
    spec, search = result.spec, result.search
    metric = "GPU feed samples/s" if spec.device == "cuda" else "samples/s"
    lines = [
        f"loaderbench tune {spec.factory}: batch_size={spec.batch_size}, device={spec.device}"
        + (f", {spec.ranks} ranks" if spec.ranks > 1 else "")
        + (f", step {spec.step_ms:g} ms" if spec.step_ms else "")
        + f"; {len(search.trials)} configurations, "
        f"{sum(len(t.measurements) for t in search.trials.values())} measurements in {result.elapsed_s:.1f} s "
        f"(budget {spec.budget_s:g} s)",
        f"stopped: {search.stop_reason}",
        "",
        "Recommended DataLoader settings:",
        "",
        *("    " + line if line else "" for line in snippet(result)),
        *(w for line in fastest_note(result) for w in (wrap(line, width, indent=0) or [""])),
        *(w for line in ranks_lines(result) for w in (wrap(line, width, indent=0) or [""])),
        "",
        f"Bottleneck: {result.bottleneck.kind}",
    ]
    for ev in result.bottleneck.evidence:
        lines.extend(wrap(f"- {ev}", width, indent=2))
    lines += ["", f"Speed-up of the recommendation ({metric}):"]
    rows = [
        [f"vs {what}", cid, fmt_rate(trial.median) if trial else "-", text]
        for what, cid, trial, text in comparisons(result)
    ]
    columns = [Column("compared with"), Column("config"), Column("per s", "r", width=9), Column("speed-up")]
    lines += text_table(columns, rows, indent=2, gap=2, header=False)
    lines += ["", "Every configuration measured (fastest first):"]
    lines += trials_table(list(search.trials.values()), result, width=width)
    for cfg, why in search.failures.items():
        lines.extend(wrap(f"{cfg.id}: failed: {why}", width, indent=4))
    return lines + rivals_lines(result, width=width)


def _rival_rows(result: TuneResult, *, code: str = "") -> list[list[str]]:
    """(pipeline, config, samples/s, CPU per sample, verdict) for the DataLoader setting and each rival."""
    if result.rivals is None:
        return []
    base = result.rivals.baseline
    rows = [
        [
            "dataloader",
            f"{code}{base.config.id}{code}",
            fmt_rate(base.median),
            fmt_cpu(cpu_s_per_sample(base)),
            "the search's setting",
        ]
    ]
    for r in result.rivals.rivals:
        cid = f"{code}{r.config.id}{code}" if r.config is not None else "-"
        rate = fmt_rate(r.trial.median) if r.trial is not None else "-"
        rows.append([r.pipeline, cid, rate, fmt_cpu(cpu_s_per_sample(r.trial)), r.verdict])
    return rows


RIVAL_COLUMNS = [
    Column("pipeline"),
    Column("config"),
    Column("per s", "r", width=9),
    Column("cpu/sample", "r"),
    Column("vs the DataLoader setting"),
]


def rivals_lines(result: TuneResult, *, width: int) -> list[str]:
    """With ``--pipelines``: the DataLoader setting on each other pipeline, and the verdict."""
    if result.rivals is None:
        return []
    lines = ["", "Other pipelines (the recommended setting on each):"]
    lines += text_table(RIVAL_COLUMNS, _rival_rows(result), indent=2, width=width)
    return [*lines, "", *wrap(result.rivals.summary, width, indent=0)]


def trials_table(trials: Sequence[Trial], result: TuneResult, *, width: int) -> list[str]:
    """One line per trial, fastest first; ``->`` marks the recommendation."""
    columns = [
        Column("", width=2),
        Column("config", width=max(10, *(len(t.config.id) for t in trials))),
        Column("per s", "r", width=9),
        Column("±iqr", "r", width=6),
        Column("rounds", "r", width=6),
        Column("ttfb", "r", width=8),
        Column("stall", "r", width=8),
        Column("mem", "r", width=9),
    ]
    rows = [
        [
            "->" if t.config == result.recommended else "",
            t.config.id,
            fmt_rate(t.median),
            fmt_percent(t.relative_iqr),
            str(len(t.samples)),
            fmt_time(t.phase("ttfb_s")),
            fmt_time(t.phase("epoch_stall_s")),
            fmt_bytes(t.peak_memory_bytes),
        ]
        for t in ordered(trials)
    ]
    return text_table(columns, rows, indent=2, width=width)


def tune_markdown(result: TuneResult) -> str:
    """The tune summary as a Markdown section (for report.md)."""
    spec = result.spec
    columns = [
        Column("compared with"),
        Column("config"),
        Column("per s", "r"),
        Column("speed-up of the recommendation"),
    ]
    rows = [
        [what, f"`{cid}`", fmt_rate(trial.median) if trial else "-", text]
        for what, cid, trial, text in comparisons(result)
    ]
    lines = [
        f"## Recommendation for `{spec.factory}`",
        "",
        f"batch_size={spec.batch_size}, device={spec.device}; stopped: {result.search.stop_reason}",
        "",
        "```python",
        *snippet(result),
        "```",
        *ranks_lines(result),
        "",
        f"**Bottleneck: {result.bottleneck.kind}**",
        "",
        *(f"- {ev}" for ev in result.bottleneck.evidence),
        "",
        *markdown_table(columns, rows),
    ]
    if result.rivals is not None:
        lines += ["", "### Other pipelines", "", *markdown_table(RIVAL_COLUMNS, _rival_rows(result, code="`")), ""]
        lines.append(f"**{result.rivals.summary}**")
    return "\n".join(lines)


def tune_context(result: TuneResult) -> dict[str, Any]:
    """The ``results.json`` context of a tune run (``loaderbench report`` reprints the summary from it)."""
    spec = result.spec
    return {
        "tune": {
            "factory": spec.factory,
            "collate": spec.collate,
            "batch_size": spec.batch_size,
            "device": spec.device,
            "step_ms": spec.step_ms,
            "ranks": spec.ranks,
            "budget_s": spec.budget_s,
            "elapsed_s": result.elapsed_s,
            "recommended_config_id": result.recommended.id,
            "recommended_kwargs": result.recommended.describe_kwargs(),
            "bottleneck": result.bottleneck.kind,
            "evidence": list(result.bottleneck.evidence),
            "stop_reason": result.search.stop_reason,
            "worker_cap": spec.worker_cap,
            "cap_note": result.search.cap_note,
            "failures": {cfg.id: why for cfg, why in result.search.failures.items()},
            "pipelines": None if result.rivals is None else rivals_context(result),
            "summary_markdown": tune_markdown(result),
        }
    }


def rivals_context(result: TuneResult) -> dict[str, Any]:
    """``--pipelines`` in the ``results.json`` context: each pipeline's config, rate and verdict."""
    assert result.rivals is not None
    win = result.rivals.winner
    return {
        "recommended_pipeline": win.pipeline if win is not None else "dataloader",
        "summary": result.rivals.summary,
        "rivals": [
            {
                "pipeline": r.pipeline,
                "config_id": r.config.id if r.config is not None else None,
                "samples_per_s": r.trial.median if r.trial is not None else None,
                "cpu_s_per_sample": cpu_s_per_sample(r.trial),
                "skipped": r.skipped or None,
                "failed": r.failed or None,
                "faster": r.faster,
                "verdict": r.verdict,
            }
            for r in result.rivals.rivals
        ],
    }
