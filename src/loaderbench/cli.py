"""The ``loaderbench`` console script: argparse and dispatch.

* ``loaderbench tune MODULE:FACTORY``: find the fastest DataLoader settings for
  your dataset on this machine (see :mod:`loaderbench.tune`), print them as a
  copy-pasteable snippet with the bottleneck and the speed-up over the defaults
  and the common heuristics, and optionally write the report files.
* ``loaderbench report RESULTS.json``: print the report again and regenerate
  ``report.md`` and the plots from a saved ``results.json`` (or a
  pytest-benchmark ``--benchmark-json`` file) without re-running anything.
* ``loaderbench ab BASE HEAD [-- PYTEST_ARGS]``: the interleaved A/B of two
  interpreters in one job; ``loaderbench ab --base-ref REF [HEAD]`` makes the base
  arm from a git revision of your repository (see :mod:`loaderbench.ab.command`).
* ``loaderbench history DIR --out SITE``: the history kept with ``--loader-history``
  as a self-contained static page (graphs over time, change points, open
  regressions; :mod:`loaderbench.history.page`), and ``--markdown FILE`` its
  summary for ``$GITHUB_STEP_SUMMARY`` (:mod:`loaderbench.history.summary`).

Exit codes: 0 on success; 2 for bad input (a clear message naming the value
and the fix, no traceback); 1 when the dataset could not be measured at all.
``loaderbench ab`` passes the exit status of its pytest through (1: a
regression; 4: a usage error found there).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from loaderbench.ab.command import run_base_ref, run_command
from loaderbench.cuda.spec import cuda_available
from loaderbench.errors import CaseFailed, LoaderbenchError, UsageError
from loaderbench.formatting import terminal_width
from loaderbench.gate.thresholds import Thresholds, parse_thresholds
from loaderbench.history import overview, store
from loaderbench.history.page import write_page
from loaderbench.history.summary import markdown
from loaderbench.metrics import METRICS
from loaderbench.options import choice, number
from loaderbench.report.files import ReportFiles, prepare_report_dir, write_report_files
from loaderbench.report.terminal import terminal_report
from loaderbench.store.results import read_results
from loaderbench.tune.pipelines import parse_pipelines
from loaderbench.tune.progress import ProgressBar
from loaderbench.tune.render import render_tune, tune_context, tune_markdown
from loaderbench.tune.run import load_callable, tune
from loaderbench.tune.search import TuneSpec

PROG = "loaderbench"
DEVICES = ("cpu", "cuda")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="DataLoader tuning and reports (loaderbench).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{tune,report,ab,history}")

    t = sub.add_parser(
        "tune",
        help="find the fastest DataLoader settings for your dataset",
        description="Measure your dataset's DataLoader settings adaptively and recommend the fastest.",
    )
    t.add_argument("factory", metavar="MODULE:FACTORY", help="an importable function returning your Dataset")
    t.add_argument("--collate", metavar="MODULE:FUNCTION", default=None, help="your collate_fn (default: torch's)")
    t.add_argument(
        "--batch-size",
        type=number("--batch-size", int, minimum=1, exclusive=False, fix="Use your training batch size"),
        default=32,
        help="batch size to tune for (kept fixed; default: 32)",
    )
    t.add_argument(
        "--budget",
        type=number("--budget", float, minimum=0, fix="Give the seconds to spend, e.g. --budget 60"),
        default=60.0,
        metavar="SECONDS",
        help="time to spend measuring (default: 60)",
    )
    t.add_argument(
        "--device",
        type=choice("--device", DEVICES),
        default="cpu",
        metavar="{" + ",".join(DEVICES) + "}",
        help="tune for CPU throughput or GPU feed rate (default: cpu)",
    )
    t.add_argument(
        "--step-ms",
        type=number(
            "--step-ms", float, minimum=0, exclusive=False, fix="Give your training step time in milliseconds, or 0"
        ),
        default=0.0,
        help="simulated training step per batch in ms (GPU compute with --device cuda; default: 0)",
    )
    t.add_argument(
        "--max-workers",
        type=number("--max-workers", int, minimum=1, exclusive=False, fix="Use e.g. 16"),
        default=None,
        help="largest num_workers to try (default: max(64, 4 x affinity CPUs); the search stops "
        "earlier, where scaling stops)",
    )
    t.add_argument(
        "--ranks",
        type=number("--ranks", int, minimum=1, exclusive=False, fix="Use your ranks per node, e.g. 8"),
        default=1,
        help="data-parallel ranks sharing this machine (torchrun --nproc-per-node): measure every setting in that "
        "many ranks and answer workers per rank (default: 1)",
    )
    t.add_argument(
        "--rounds",
        type=number("--rounds", int, minimum=2, exclusive=False, fix="Use e.g. 5"),
        default=5,
        help="timed rounds per measurement (default: 5)",
    )
    t.add_argument(
        "--round-seconds",
        type=number("--round-seconds", float, minimum=0.001, exclusive=False, fix="Use e.g. 0.1"),
        default=0.1,
        help="target length of one round in seconds (default: 0.1)",
    )
    t.add_argument(
        "--pipelines",
        metavar="NAMES",
        default="",
        help="after the DataLoader search, try its best setting on these other pipelines (comma-separated: "
        "nodesthread, nodesprocess, stateful, spdl; or all = every installed one) and recommend one only when it "
        "is statistically faster; measured after --budget, which they add to (default: none)",
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
        type=number("--width", int, minimum=80, exclusive=False, fix="Use e.g. 120"),
        default=120,
        help="terminal report width (default: 120)",
    )

    a = sub.add_parser(
        "ab",
        help="compare two interpreters' DataLoader performance in one job (interleaved A/B)",
        description="Run HEAD -m pytest --benchmark --loader-ab=BASE PYTEST_ARGS: the benchmark cases in fresh "
        "processes of both interpreters, interleaved in ABBA order, decided with paired statistics. "
        "Exit status: pytest's (1 on a regression).",
    )
    a.add_argument(
        "--base-ref",
        metavar="REF",
        help="make the base arm from this git revision of the repository you run in (a worktree and an environment "
        "with your project installed from it, torch and loaderbench from HEAD's; removed afterwards); then give "
        "at most HEAD (default: this interpreter)",
    )
    a.add_argument(
        "base", metavar="BASE", nargs="?", help='the base interpreter, or a wrapper that ends with exec python "$@"'
    )
    a.add_argument("head", metavar="HEAD", nargs="?", help="the head interpreter (the one under test), or a wrapper")
    a.add_argument(
        "pytest_args",
        nargs=argparse.REMAINDER,
        metavar="-- PYTEST_ARGS",
        help="passed to pytest, e.g. -- --loader-tier=smoke --loader-report=ab-report",
    )

    h = sub.add_parser(
        "history",
        help="the history as a static page and a Markdown summary (change points, open regressions)",
        description="Read the history kept with --loader-history, find the change points of every case's series, "
        "and write a self-contained page (--out) and/or a Markdown summary (--markdown). Without either, print "
        "the summary.",
    )
    h.add_argument("directory", metavar="DIR", help="the --loader-history directory, or one of its .jsonl files")
    h.add_argument("--out", metavar="SITE", default=None, help="write the page to SITE/index.html (opens from disk)")
    h.add_argument(
        "--markdown",
        metavar="FILE",
        default=None,
        help='append the Markdown summary to FILE (e.g. "$GITHUB_STEP_SUMMARY"); - for stdout',
    )
    h.add_argument("--title", default="loaderbench history", help="the page's title (default: loaderbench history)")
    h.add_argument(
        "--metrics",
        metavar="NAMES",
        type=_metric_names,
        default=(),
        help="comma-separated gated metrics to show (default: every one the history has)",
    )
    h.add_argument(
        "--threshold",
        metavar="SPEC",
        type=_thresholds,
        default=None,
        help="the gate's thresholds, as --loader-threshold takes them (10%%, samples_per_s=5%%, CASE:METRIC=20%%): "
        "which open regressions are beyond them (default: each metric's own)",
    )
    return parser


def _metric_names(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"Could not parse value: --metrics={text!r}: {', '.join(unknown) or 'no metric'} is not a gated metric. "
            f"Use some of {', '.join(METRICS)}."
        )
    return names


def _thresholds(text: str) -> Thresholds:
    try:
        return parse_thresholds(text, option="--threshold")
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# --- commands ----------------------------------------------------------------------------------------------


def cmd_tune(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    app_dir = str(Path(args.app_dir).resolve())
    if app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    # the command line's own checks first, so their messages name its flags
    if args.device == "cuda":
        ok, why = cuda_available()
        if not ok:
            raise UsageError(f"--device=cuda: {why}. Run on a machine with a CUDA GPU, or use --device cpu.")
    if args.collate:
        load_callable(args.collate, option="--collate")
    pipelines = parse_pipelines(args.pipelines) if args.pipelines else ()
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
        ranks=args.ranks,
    )
    if args.report:
        prepare_report_dir(args.report, option="--report")
    bar = None if args.no_progress else ProgressBar(err)
    try:
        result = tune(spec, progress=bar, pipelines=pipelines)
    finally:
        if bar is not None:
            bar.close()
    for line in render_tune(result, width=terminal_width()):
        out.write(line + "\n")
    if args.report:
        files = write_report_files(
            args.report,
            result.measurements,
            context=tune_context(result),
            title=f"loaderbench tune: {spec.factory}",
            sections=[tune_markdown(result)],
        )
        _said_files(files, out)
    return 0


def cmd_report(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    source = Path(args.results)
    res = read_results(source)
    verdicts = dict(res.verdicts) or None
    for line in terminal_report(res.measurements, width=args.width, verdicts=verdicts):
        out.write(line + "\n")
    directory = prepare_report_dir(args.out, option="--out") if args.out else source.parent
    tuned = res.context.get("tune")
    sections = [tuned["summary_markdown"]] if isinstance(tuned, dict) and tuned.get("summary_markdown") else []
    files = write_report_files(
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


def cmd_history(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    history = store.read(Path(args.directory))
    view = overview.build(history, thresholds=args.threshold, metrics=args.metrics)
    if not view.series:
        raise UsageError(
            f"--metrics={','.join(args.metrics)!r}: the history at {args.directory!r} has none of these metrics. "
            "Leave --metrics out to show every one it has."
        )
    if args.out:
        page = write_page(view, Path(args.out), title=args.title)
        out.write(f"wrote {page}: {len(view.series)} graphs, {len(view.regressions)} open regression(s)\n")
    text = markdown(view, title=args.title)
    if args.markdown == "-" or (not args.out and not args.markdown):
        out.write(text)
    elif args.markdown:
        try:
            with open(args.markdown, "a", encoding="utf-8") as f:
                f.write(text)
        except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
            why = exc.strerror if isinstance(exc, OSError) else str(exc)
            raise UsageError(
                f"--markdown={args.markdown!r}: cannot append to it ({why}). Pass a writable file, or -."
            ) from None
        out.write(f"appended the summary to {args.markdown}\n")
    return 0


def _said_files(files: ReportFiles, out: TextIO) -> None:
    out.write(f"\nwrote {files.markdown}")
    if files.results is not None:
        out.write(f", {files.results}")
    out.write(f" and {len(files.plots)} plot(s) to {files.directory}\n")
    for note in files.plot_notes:
        out.write(f"  {note}\n")


def cmd_ab(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    given = [a for a in (args.base, args.head) if a is not None]
    stray = [a for a in given if a.endswith(".py") or "::" in a]
    if stray:
        parser.error(
            f"ab: {stray[0]} looks like a pytest argument, not an interpreter: put pytest's arguments after --."
        )
    if args.base_ref is not None:
        if len(given) > 1:
            parser.error(
                f"ab --base-ref={args.base_ref}: give at most HEAD (the base is made from the ref), not {given}."
            )
        return run_base_ref(args.base_ref, given[0] if given else sys.executable, args.pytest_args)
    if len(given) != 2:
        parser.error("ab: give BASE and HEAD (two interpreters), or --base-ref=REF [HEAD]")
    return run_command(args.base, args.head, args.pytest_args)


def _split_pytest_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """``ab ... -- PYTEST_ARGS``: the part argparse parses and the pytest arguments after the first ``--``
    (argparse would hand the first of them to an optional positional)."""
    if argv[:1] == ["ab"] and "--" in argv:
        cut = argv.index("--")
        return argv[:cut], argv[cut + 1 :]
    return argv, []


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    own, passed = _split_pytest_args(list(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(own)
    if args.command == "ab":
        args.pytest_args = [*args.pytest_args, *passed]
    out, err = sys.stdout, sys.stderr
    try:
        if args.command == "tune":
            return cmd_tune(args, out, err)
        if args.command == "ab":
            return cmd_ab(args, parser)
        if args.command == "history":
            return cmd_history(args, out, err)
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
