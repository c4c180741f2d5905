"""pytest-xdist and benchmark cases: never measured in parallel, never recorded from a worker.

Benchmark cases must be measured one at a time, alone on the machine.  Under pytest-xdist (``-n N``, ``-n auto``,
``--dist``/``--tx``, from the command line or ``addopts``) they would run beside each other on the workers, each
measuring the others' load, and each worker would record a baseline of its own.  pytest-benchmark silently
disables its benchmarks under xdist; loaderbench refuses loudly instead (a usage error, exit 4, before any worker
starts), since a benchmark job that quietly measured nothing, or measured noise, would still read green in CI.

xdist is optional at run time and never imported: its options are read from ``config.option`` with defaults, and
its workers are known by ``config.workerinput``.  Its own ``pytest_cmdline_main`` (``tryfirst``) has by then turned
``-n auto`` into a number and set ``dist``/``tx``; the plugin's ``pytest_configure`` runs after it, and before
xdist's (``trylast``) creates the session that starts the workers.
"""

from __future__ import annotations

from typing import Any

import pytest


def measuring_options(config: pytest.Config) -> list[str]:
    """The options of this run that measure benchmark cases or write what they measured (empty when none)."""
    opt = config.option
    given = []
    if getattr(opt, "benchmark", False):
        given.append("--benchmark")
    if getattr(opt, "loader_ab", None) is not None:
        given.append(f"--loader-ab={opt.loader_ab}")
    if getattr(opt, "loader_baseline_save", False):
        given.append("--loader-baseline-save")
    return given


def xdist_setting(config: pytest.Config) -> str:
    """How xdist would distribute this run's tests, as ``option=value`` (``-n=2``, ``-n=auto (2 workers)``,
    ``--dist=load --tx=popen``); empty when it would not (no xdist, ``-n 0``, ``-p no:xdist``)."""
    if not config.pluginmanager.hasplugin("xdist"):
        return ""
    workers = config.getoption("numprocesses", None)
    dist = config.getoption("dist", "no")
    tx: list[str] = list(config.getoption("tx", None) or [])
    if not workers and (dist == "no" or not tx):
        return ""
    if workers:
        given: Any = getattr(config.known_args_namespace, "numprocesses", None)  # "auto" before xdist resolved it
        shown = f"-n={given}" if given in (None, workers) else f"-n={given} ({workers} workers)"
        return shown if dist in ("no", "load") else f"{shown} --dist={dist}"
    return f"--dist={dist} --tx={','.join(tx)}"


def refusal(config: pytest.Config) -> str:
    """Why this run may not go on (empty when it may): it measures benchmark cases and pytest-xdist would
    distribute them (in the controller), or this process is an xdist worker and was asked to measure."""
    measuring = measuring_options(config)
    if not measuring or config.getoption("collectonly", False):
        return ""  # a collect-only run measures nothing, and xdist does not distribute it
    options = " ".join(measuring)
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        worker = workerinput.get("workerid", "?") if isinstance(workerinput, dict) else "?"
        return (
            f"{options} in the pytest-xdist worker {worker}: a worker never measures benchmark cases nor writes "
            "a baseline, since its cases would run beside the other workers' and each worker would record a "
            "baseline of its own. Run the benchmark job without xdist: add `-n 0` (it overrides an -n in "
            "addopts), or `-p no:xdist` where addopts has no -n."
        )
    setting = xdist_setting(config)
    if not setting:
        return ""
    return (
        f"{setting} (pytest-xdist) with {options}: benchmark cases must be measured one at a time, alone on the "
        "machine, and pytest-xdist would run them beside each other on its workers (each measuring the others' "
        "load) and record a baseline from each worker. Run the benchmark job without xdist: add `-n 0` (it "
        "overrides an -n in addopts), or `-p no:xdist` where addopts has no -n; `pytest -n ...` without "
        "--benchmark keeps running the unit tests in parallel."
    )
