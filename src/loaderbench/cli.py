"""The ``loaderbench`` console script.

* ``loaderbench tune MODULE:FACTORY``: find the fastest DataLoader settings for
  your dataset on this machine (see :mod:`loaderbench.tune.search`), print them as a
  copy-pasteable snippet with the bottleneck and the speed-up over the defaults
  and the common heuristics, and optionally write the report files.
* ``loaderbench report RESULTS.json``: print the report again and regenerate
  ``report.md`` and the plots from a saved ``results.json`` (or a
  pytest-benchmark ``--benchmark-json`` file) without re-running anything.

Exit codes: 0 on success; 2 for bad input (a clear message naming the value
and the fix, no traceback); 1 when the dataset could not be measured at all.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from loaderbench.errors import CaseFailed, LoaderbenchError
from loaderbench.report import terminal as tr
from loaderbench.report.advice import fmt_rate, fmt_time, mann_whitney_greater, wrap
from loaderbench.tune.search import Progress, Trial, TuneResult, TuneSpec, heuristics, ordered, tune

PROG = "loaderbench"


def _number(
    option: str, kind: Callable[[str], Any], *, minimum: float, fix: str, exclusive: bool = False
) -> Callable[[str], Any]:
    """An argparse type: a finite number >= minimum (> minimum when exclusive), else a message naming the value."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{option}={text} is not a number. {fix}.") from None
        if not math.isfinite(value) or value < minimum or (exclusive and value == minimum):
            bound = f"> {minimum:g}" if exclusive else f">= {minimum:g}"
            raise argparse.ArgumentTypeError(f"{option}={text} must be {bound}. {fix}.")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="DataLoader tuning and reports (loaderbench).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{tune,report}")

    t = sub.add_parser(
        "tune",
        help="find the fastest DataLoader settings for your dataset",
        description="Measure your dataset's DataLoader settings adaptively and recommend the fastest.",
    )
    t.add_argument("factory", metavar="MODULE:FACTORY", help="an importable function returning your Dataset")
    t.add_argument("--collate", metavar="MODULE:FUNCTION", default=None, help="your collate_fn (default: torch's)")
    t.add_argument(
        "--batch-size",
        type=_number("--batch-size", int, minimum=1, fix="Use your training batch size"),
        default=32,
        help="batch size to tune for (kept fixed; default: 32)",
    )
    t.add_argument(
        "--budget",
        type=_number("--budget", float, minimum=0, exclusive=True, fix="Give the seconds to spend, e.g. --budget 60"),
        default=60.0,
        metavar="SECONDS",
        help="time to spend measuring (default: 60)",
    )
    t.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="tune for CPU throughput or GPU feed rate")
    t.add_argument(
        "--step-ms",
        type=_number("--step-ms", float, minimum=0, fix="Give your training step time in milliseconds, or 0"),
        default=0.0,
        help="simulated training step per batch in ms (GPU compute with --device cuda; default: 0)",
    )
    t.add_argument(
        "--max-workers",
        type=_number("--max-workers", int, minimum=1, fix="Use e.g. 16"),
        default=None,
        help="largest num_workers to try (default: max(8, 2 x affinity CPUs))",
    )
    t.add_argument(
        "--rounds",
        type=_number("--rounds", int, minimum=2, fix="Use e.g. 5"),
        default=5,
        help="timed rounds per measurement (default: 5)",
    )
    t.add_argument(
        "--round-seconds",
        type=_number("--round-seconds", float, minimum=0.001, fix="Use e.g. 0.1"),
        default=0.1,
        help="target length of one round in seconds (default: 0.1)",
    )
    t.add_argument("--report", metavar="DIR", default=None, help="also write report.md, results.json and plots here")
    t.add_argument("--app-dir", metavar="DIR", default=".", help="prepended to sys.path for the import (default: .)")
    t.add_argument("--no-progress", action="store_true", help="no progress line on stderr")

    r = sub.add_parser(
        "report",
        help="regenerate the report and plots from a results.json",
        description="Print the report and write report.md and plots from saved results, without re-running.",
    )
    r.add_argument("results", metavar="RESULTS.json", help="results.json, or a pytest-benchmark --benchmark-json file")
    r.add_argument("--out", metavar="DIR", default=None, help="where to write report.md and plots (default: beside it)")
    r.add_argument("--no-plots", action="store_true", help="do not draw plots")
    r.add_argument(
        "--width",
        type=_number("--width", int, minimum=80, fix="Use e.g. 120"),
        default=120,
        help="terminal report width (default: 120)",
    )
    return parser


# --- progress ---------------------------------------------------------------------------------------------


class ProgressLine:
    """A one-line progress bar with the current best, redrawn in place on a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.drawn = False

    def __call__(self, p: Progress) -> None:
        frac = min(1.0, p.elapsed_s / p.budget_s) if p.budget_s else 1.0
        bar = "#" * round(20 * frac) + "." * (20 - round(20 * frac))
        speed = f" ({p.best_rate / p.defaults_rate:.2f}x defaults)" if p.defaults_rate > 0 else ""
        line = (
            f"[{bar}] {p.elapsed_s:4.0f}/{p.budget_s:g}s {p.phase:<18} {p.tried:>2} tried | "
            f"{p.last} {fmt_rate(p.last_rate)} | best {p.best} {fmt_rate(p.best_rate)}{speed}"
        )
        if self.tty:
            self.stream.write("\r" + line[:150].ljust(150))
            self.drawn = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


# --- tune output -----------------------------------------------------------------------------------------


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


def comparisons(result: TuneResult) -> list[tuple[str, str, Trial | None, str]]:
    """(what, config id, trial, speed-up text) for the defaults and each heuristic."""
    best = result.trial(result.recommended) or result.search.recommended()
    out: list[tuple[str, str, Trial | None, str]] = []
    points = [("the DataLoader defaults (num_workers=0)", result.defaults)]
    for name, n in heuristics().items():
        cfg = result.defaults.replace(num_workers=n)
        if result.spec.device == "cuda":
            cfg = cfg.replace(multiprocessing_context="spawn")
        points.append((f"{name} = {n}", cfg))
    for what, cfg in points:
        trial = result.trial(cfg)
        if trial is None:
            reason = result.search.failures.get(cfg)
            out.append((what, cfg.id, None, "failed: " + reason[:60] if reason else "not measured (budget)"))
            continue
        p = mann_whitney_greater(best.samples, trial.samples) if trial is not best else 1.0
        ratio = best.median / trial.median
        if trial.config == best.config:
            text = "is the recommendation"
        elif ratio >= 1 + result.spec.tie and p <= result.spec.alpha:
            text = f"{ratio:.2f}x faster (Mann-Whitney p={p:.2g})"
        else:
            text = f"{ratio:.2f}x: not a significant difference (p={p:.2g})"
        out.append((what, cfg.id, trial, text))
    return out


def fastest_note(result: TuneResult) -> list[str]:
    """Why the recommendation is not the fastest config measured, when it is not."""
    top = result.search.top()
    rec = result.trial(result.recommended)
    if rec is None or top.config in (rec.config, rec.config.replace(persistent_workers=False)):
        return []
    p = mann_whitney_greater(top.samples, rec.samples)
    ratio = top.median / rec.median
    if ratio < 1 + result.spec.tie:
        why = f"is within {result.spec.tie:.0%} of this cheaper setting ({ratio:.3f}x)"
    else:
        why = (
            f"cannot be told apart from this cheaper setting by its rounds ({ratio:.2f}x, Mann-Whitney "
            f"p={p:.2g} > {result.spec.alpha:g}); a larger --budget can decide"
        )
    return ["", f"{top.config.id} measured fastest ({fmt_rate(top.median)}), but {why}."]


def render_tune(result: TuneResult, *, width: int = 120) -> list[str]:
    spec, search = result.spec, result.search
    metric = "GPU feed samples/s" if spec.device == "cuda" else "samples/s"
    lines = [
        f"loaderbench tune {spec.factory}: batch_size={spec.batch_size}, device={spec.device}"
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
        "",
        f"Bottleneck: {result.bottleneck.kind}",
    ]
    for ev in result.bottleneck.evidence:
        lines.extend(wrap(f"- {ev}", width, indent=2))
    lines += ["", f"Speed-up of the recommendation ({metric}):"]
    rows = comparisons(result)
    what_w = max(len(r[0]) for r in rows)
    id_w = max(len(r[1]) for r in rows)
    for what, cid, trial, text in rows:
        rate = fmt_rate(trial.median) if trial else "-"
        lines.append(f"  vs {what:<{what_w}}  {cid:<{id_w}}  {rate:>9}  {text}")
    lines += ["", "Every configuration measured (fastest first):"]
    lines += trials_table(list(search.trials.values()), result, width=width)
    for cfg, why in search.failures.items():
        lines.extend(wrap(f"{cfg.id}: failed: {why}", width, indent=4))
    return lines


def trials_table(trials: Sequence[Trial], result: TuneResult, *, width: int) -> list[str]:
    rows = ordered(trials)
    id_w = max(10, *(len(t.config.id) for t in rows))
    lines = [f"    {'config':<{id_w}} {'per s':>9} {'±iqr':>6} {'rounds':>6} {'ttfb':>8} {'stall':>8} {'mem':>9}"]
    for t in rows:
        mark = "->" if t.config == result.recommended else "  "
        lines.append(
            f"  {mark}{t.config.id:<{id_w}} {fmt_rate(t.median):>9} {tr.fmt_percent(t.relative_iqr):>6} "
            f"{len(t.samples):>6} {fmt_time(t.phase('ttfb_s')):>8} {fmt_time(t.phase('epoch_stall_s')):>8} "
            f"{tr.fmt_bytes(t.peak_memory_bytes):>9}"[:width]
        )
    return lines


def tune_markdown(result: TuneResult) -> str:
    """The tune summary as a Markdown section (for report.md)."""
    spec = result.spec
    lines = [
        f"## Recommendation for `{spec.factory}`",
        "",
        f"batch_size={spec.batch_size}, device={spec.device}; stopped: {result.search.stop_reason}",
        "",
        "```python",
        *snippet(result),
        "```",
        "",
        f"**Bottleneck: {result.bottleneck.kind}**",
        "",
        *(f"- {ev}" for ev in result.bottleneck.evidence),
        "",
        "| compared with | config | per s | speed-up of the recommendation |",
        "|---|---|---:|---|",
    ]
    for what, cid, trial, text in comparisons(result):
        lines.append(f"| {what} | `{cid}` | {fmt_rate(trial.median) if trial else '-'} | {text} |")
    return "\n".join(lines)


def tune_context(result: TuneResult) -> dict[str, Any]:
    spec = result.spec
    return {
        "tune": {
            "factory": spec.factory,
            "collate": spec.collate,
            "batch_size": spec.batch_size,
            "device": spec.device,
            "step_ms": spec.step_ms,
            "budget_s": spec.budget_s,
            "elapsed_s": result.elapsed_s,
            "recommended_config_id": result.recommended.id,
            "recommended_kwargs": result.recommended.describe_kwargs(),
            "bottleneck": result.bottleneck.kind,
            "evidence": list(result.bottleneck.evidence),
            "stop_reason": result.search.stop_reason,
            "failures": {cfg.id: why for cfg, why in result.search.failures.items()},
            "summary_markdown": tune_markdown(result),
        }
    }


# --- commands ----------------------------------------------------------------------------------------------


def cmd_tune(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    app_dir = str(Path(args.app_dir).resolve())
    if app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    spec = TuneSpec(
        factory=args.factory,
        collate=args.collate,
        batch_size=args.batch_size,
        device=args.device,
        step_ms=args.step_ms,
        budget_s=args.budget,
        max_workers=args.max_workers,
        rounds=args.rounds,
        round_s=args.round_seconds,
    )
    bar = None if args.no_progress else ProgressLine(err)
    try:
        result = tune(spec, progress=bar)
    finally:
        if bar is not None:
            bar.close()
    width = _width()
    for line in render_tune(result, width=width):
        out.write(line + "\n")
    if args.report:
        files = tr.write_report_files(
            args.report,
            result.measurements,
            context=tune_context(result),
            title=f"loaderbench tune: {spec.factory}",
            sections=[tune_markdown(result)],
        )
        _said_files(files, out)
    return 0


def cmd_report(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from loaderbench.store.results import read_results

    source = Path(args.results)
    res = read_results(source)
    verdicts = dict(res.verdicts) or None
    for line in tr.terminal_report(res.measurements, width=args.width, verdicts=verdicts):
        out.write(line + "\n")
    directory = Path(args.out) if args.out else source.parent
    tuned = res.context.get("tune")
    sections = [tuned["summary_markdown"]] if isinstance(tuned, dict) and tuned.get("summary_markdown") else []
    files = tr.write_report_files(
        directory,
        res.measurements,
        verdicts=verdicts,
        context=res.context,
        plots=not args.no_plots,
        sections=sections,
        results=(directory / "results.json").resolve() != source.resolve(),
    )
    _said_files(files, out)
    return 0


def _said_files(files: tr.ReportFiles, out: TextIO) -> None:
    out.write(f"\nwrote {files.markdown}")
    if files.results is not None:
        out.write(f", {files.results}")
    out.write(f" and {len(files.plots)} plot(s) to {files.directory}\n")
    for note in files.plot_notes:
        out.write(f"  {note}\n")


def _width() -> int:
    try:
        return max(80, min(200, int(os.environ.get("COLUMNS", "120"))))
    except ValueError:
        return 120


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    out, err = sys.stdout, sys.stderr
    try:
        if args.command == "tune":
            return cmd_tune(args, out, err)
        return cmd_report(args, out, err)
    except CaseFailed as exc:
        err.write(f"{PROG} {args.command}: the dataset could not be measured: {exc}\n")
        return 1
    except KeyboardInterrupt:
        err.write(f"\n{PROG} {args.command}: interrupted\n")
        return 130
    except BrokenPipeError:  # `loaderbench report ... | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except LoaderbenchError as exc:
        err.write(f"{PROG} {args.command}: error: {exc}\n")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
