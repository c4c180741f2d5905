"""The plugin's command-line options: one group, ``loaderbench``, every option with a parse function that
makes a bad value a usage error and help text that states the default."""

from __future__ import annotations

import pytest

from loaderbench.engine.plan import Plan
from loaderbench.gate.job import DEFAULT_MAX_EXTRA
from loaderbench.options import choice, number
from loaderbench.pytest_plugin.history import history_directory
from loaderbench.pytest_plugin.session import threshold_option
from loaderbench.selection.tiers import DEVICES, TIERS
from loaderbench.testing.simulated_gpu import SIMULATED_GPU_NAME

#: The harness's defaults, which the options' defaults are.
_PLAN = Plan()


def add_options(parser: pytest.Parser) -> None:
    """Register every ``--loader-*`` option (and ``--benchmark``) in the one ``loaderbench`` group."""
    group = parser.getgroup("loaderbench", "loaderbench: DataLoader performance regression suite")
    group.addoption(
        "--benchmark",
        action="store_true",
        default=False,
        help="Run the DataLoader benchmark cases (and only them). Default: off, they are skipped.",
    )
    group.addoption(
        "--loader-tier",
        type=choice("--loader-tier", TIERS),
        default="smoke",
        help="How much of the settings space to cover: smoke|standard|full. Default: smoke.",
    )
    group.addoption(
        "--loader-device",
        type=choice("--loader-device", DEVICES),
        default="all",
        help="cpu|cuda|all. CUDA cases skip with a reason when no GPU is present. Default: all.",
    )
    group.addoption(
        "--loader-simulated-gpu",
        action="store_true",
        default=False,
        help=f"Run the CUDA cases (and loader_benchmark(..., device='cuda') tests) on the {SIMULATED_GPU_NAME}, a "
        "model of a copy engine, streams, events and _sleep in real time, to test the suite on a machine without a "
        "GPU. Never a fallback: its records say simulated_gpu, its case ids end in -simgpu and its baseline is "
        "keyed apart from any real GPU's. Default: off (CUDA cases skip without a GPU).",
    )
    group.addoption(
        "--loader-workloads",
        default=None,
        metavar="NAMES",
        help="Comma-separated workload names to keep (default: every workload of the tier).",
    )
    group.addoption(
        "--loader-config",
        default=None,
        metavar="ID",
        help="Run one explicit config id (e.g. w2-bs64-spawn-persist) on the tier's workloads "
        "instead of the tier's configs. Default: none.",
    )
    group.addoption(
        "--loader-scenarios",
        default=None,
        metavar="PATH",
        help="Workload scenario file (TOML). Default: fixtures/workloads.toml under the rootdir if it exists, "
        "else the suite's own, packaged with loaderbench.",
    )
    group.addoption(
        "--loader-rounds",
        type=number("--loader-rounds", int, fix="Use e.g. 5"),
        default=_PLAN.rounds,
        help=f"Timed steady-state rounds per case. Default: {_PLAN.rounds}.",
    )
    group.addoption(
        "--loader-round-seconds",
        type=number("--loader-round-seconds", float, fix="Use e.g. 0.25"),
        default=_PLAN.round_s,
        help=f"Target duration of one round in seconds (sizes the epoch). Default: {_PLAN.round_s:g}.",
    )
    group.addoption(
        "--loader-ranks",
        type=number("--loader-ranks", int, minimum=1, exclusive=False, fix="Use e.g. 2 (on CUDA: the GPU count)"),
        default=1,
        metavar="N",
        help="Run each case in N ranks started by torch.distributed.run (gloo on CPU, NCCL on CUDA, one rank per "
        "GPU), each over a DistributedSampler, in lockstep at a per-step all-reduce. Default: 1 (one process).",
    )
    group.addoption(
        "--loader-batch-timeout",
        type=number("--loader-batch-timeout", float, fix="Use e.g. 120"),
        default=_PLAN.batch_timeout_s,
        help="Seconds without a batch after which a case counts as hung: its workers are killed and the case "
        "fails with the stuck phase named. Default: 120.",
    )
    group.addoption(
        "--loader-report",
        default=None,
        metavar="DIR",
        help="Write report.md, results.json and PNG plots (plots need loaderbench[plot]) to DIR; report.md is "
        "also appended to $GITHUB_STEP_SUMMARY when that is set. Default: none.",
    )
    group.addoption(
        "--loader-baseline-dir",
        default=None,
        metavar="DIR",
        help="Where baselines live. Default: fixtures/baselines under the rootdir.",
    )
    group.addoption(
        "--loader-baseline-save",
        action="store_true",
        default=False,
        help="Record this machine's baseline from this run's cases (replacing their entries; other cases are "
        "kept). A case gates only once recorded in 3 sessions: see --loader-baseline-append. Default: off.",
    )
    group.addoption(
        "--loader-baseline-append",
        action="store_true",
        default=False,
        help="With --loader-baseline-save: add this run as one more recording session (the last 10 are kept) "
        "instead of replacing. Default: off.",
    )
    group.addoption(
        "--loader-baseline-prune",
        action="store_true",
        default=False,
        help="With --loader-baseline-save: drop stored cases that this run did not measure. Default: off.",
    )
    group.addoption(
        "--loader-require-baseline",
        action="store_true",
        default=False,
        help="Fail the run (exit 1) when no baseline matches this machine or a measured case has no matching "
        "baseline entry, instead of only saying so. For gating CI jobs. Default: off.",
    )
    group.addoption(
        "--loader-threshold",
        type=threshold_option,
        default=None,
        metavar="SPEC",
        help="Regression threshold: the tolerated change in the bad direction (10%%: up to 1.10x slower passes; "
        "at most 100%%, a 2x change). '10%%', per metric 'samples_per_s=5%%,ttfb_s=25%%', per case "
        "'CASE:METRIC=20%%' (CASE must be a case id of the run). Default: 10%% for throughput, feed rate and "
        "memory, 25%% for ttfb_s and epoch_stall_s.",
    )
    group.addoption(
        "--loader-compare-anyway",
        action="store_true",
        default=False,
        help="Compare against the closest baseline even when it was recorded on a different machine. Default: off.",
    )
    group.addoption(
        "--loader-max-extra",
        type=number("--loader-max-extra", int, exclusive=False, fix="Use e.g. 3, or 0 for none"),
        default=DEFAULT_MAX_EXTRA,
        help="Fresh processes the gate may start to confirm suspected regressions before it answers "
        f"'inconclusive' (a regression fails the run only once a fresh process confirms it). Default: "
        f"{DEFAULT_MAX_EXTRA}.",
    )
    group.addoption(
        "--loader-env-packages",
        default="",
        metavar="NAMES",
        help="Comma-separated distributions whose versions the environment records and every comparison "
        "names when they change (e.g. numpy,pillow). Default: none (torch is always recorded).",
    )
    group.addoption(
        "--loader-history",
        type=history_directory,
        default=None,
        metavar="DIR",
        help="Keep every run: append one line per measured case (each gated metric with its within-run interval, "
        "the environment, the git commit) to DIR/<hardware key>.jsonl at the end of the session, and in a gate run "
        "let each case's measured between-run drift widen its noise prior. With --loader-ab: the head arm's cases. "
        "Default: none.",
    )
    group.addoption(
        "--loader-history-fail",
        action="store_true",
        default=False,
        help="With --loader-history: after appending, look for change points in each case's series and fail the "
        "run (exit 1) when the newest runs opened a regression beyond the threshold (a step or a creep). "
        "Default: off.",
    )
    group.addoption(
        "--loader-ab",
        default=None,
        metavar="BASE",
        help="Interleaved A/B: compare this interpreter (the head) with BASE, a Python interpreter or a wrapper "
        'script that ends with exec python "$@", in fresh processes per block in ABBA order, with paired '
        "statistics; exits 1 on a regression. Runs no test items and records no baseline. Default: none.",
    )
    group.addoption(
        "--loader-ab-base-dir",
        default=None,
        metavar="DIR",
        help="With --loader-ab: the base arm's own copy of this directory (a checkout of the base commit); its "
        "children run there, so its tests, conftest and scenario file are the base's. `loaderbench ab "
        "--base-ref=REF` sets it to a worktree of REF. Default: both arms run here.",
    )
    group.addoption(
        "--loader-ab-pairs",
        type=number("--loader-ab-pairs", int, minimum=3, exclusive=False, fix="Use e.g. 16"),
        default=16,
        metavar="N",
        help="With --loader-ab: at most N pairs (blocks) per case; pairs are added only while a case is "
        "undecided, and a change is decided from 3 pairs on (at least 3). Default: 16.",
    )
    group.addoption(
        "--loader-ab-budget",
        type=number("--loader-ab-budget", float, fix="Give the seconds to spend, e.g. 900"),
        default=900.0,
        metavar="SECONDS",
        help="With --loader-ab: no new block starts that would end past this many seconds (3 blocks always "
        "run: a change is decided from 3 pairs on). Default: 900.",
    )
