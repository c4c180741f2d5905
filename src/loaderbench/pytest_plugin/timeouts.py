"""pytest-timeout and benchmark cases: a timeout that fits the case's plan, and one paragraph when it fires.

A global pytest-timeout setting (``--timeout``, ``$PYTEST_TIMEOUT``, ``timeout`` in the ini file) is sized for unit
tests and would stop a benchmark case in the middle of its measurement.  :func:`fit` gives every benchmark item
that has no ``timeout`` marker of its own one that fits its plan (:func:`case_timeout`), which pytest-timeout
prefers to its global setting; only where pytest-timeout is loaded, a global timeout is set and smaller, and the
harness's own watchdog (``--loader-batch-timeout``) is on: it is what stops a hung case, with a paragraph naming
the phase, and the fitted timeout leaves it room to do so first.  The fresh-process confirmations and noise
sessions run at the session's end, outside any test's timer.

When a test's own ``timeout`` marker fires anyway (pytest-timeout's ``signal`` method raises ``Failed`` in the main
thread), the harness's ``finally`` blocks stop the DataLoader workers, and :func:`explain` makes the report one
paragraph naming the case and the phase it was in (:func:`without_stack_dump` drops pytest-timeout's dump of the
other threads, the harness's own, from its captured output).  Its ``thread`` method ends the whole process with
``os._exit``, which nothing can turn into a paragraph.
"""

from __future__ import annotations

import math
import os
import re

import pytest

from loaderbench.engine.case import Case
from loaderbench.engine.explain import case_failure
from loaderbench.engine.plan import Plan
from loaderbench.engine.watchdog import KILL_GRACE_S
from loaderbench.errors import CaseFailed, FailureKind, interruption
from loaderbench.pytest_names import CASE_FIXTURE

#: pytest-timeout's name in the plugin manager (its entry point).
PLUGIN = "timeout"
#: How pytest-timeout's failure message begins (``Timeout (>3.0s) from pytest-timeout.``).
_FAILURE_PREFIX = "Timeout (>"
#: pytest-timeout's dump of the other threads' stacks, between two ``+++ Timeout +++`` lines.
_STACK_DUMP = re.compile(r"^\++ Timeout \++\n.*^\++ Timeout \++\n?", re.MULTILINE | re.DOTALL)
#: Seconds for what precedes the first round: the interpreter of each spawned worker, torch's import there, the
#: sizing pilot and the dataset's build; per extra rank, torch.distributed.run starting one more process.
STARTUP_S = 60.0
PER_RANK_S = 30.0
#: The node ids of the items :func:`fit` gave a timeout.
_FITTED = pytest.StashKey[set[str]]()


def case_timeout(plan: Plan, ranks: int = 1) -> float:
    """Seconds a case of ``plan`` in ``ranks`` ranks gets before pytest-timeout may stop it (whole seconds,
    generous, not a bound): start-up, its rounds twice over (the timed ones, the untimed memory round, the rest
    of the epoch and the next epoch's start), room for the watchdog to notice a hung step
    (``batch_timeout_s``), kill it and interrupt the main process, and two worker shutdowns."""
    rounds = 2 * (plan.rounds + 2) * plan.round_s
    watchdog = 2 * plan.batch_timeout_s + KILL_GRACE_S
    return float(math.ceil(STARTUP_S + PER_RANK_S * (ranks - 1) + rounds + watchdog + 2 * plan.shutdown_timeout_s))


def global_timeout(config: pytest.Config) -> float | None:
    """pytest-timeout's global timeout, read as it reads it: ``--timeout``, else ``$PYTEST_TIMEOUT``, else the ini
    file's ``timeout``; None when none is set (or 0, which it takes as none)."""
    value = config.getoption("timeout", None)
    if value is None:
        value = os.environ.get("PYTEST_TIMEOUT") or None
    if value is None:
        value = config.getini("timeout") or None
    try:
        seconds = float(value) if value is not None else 0.0
    except (TypeError, ValueError):
        return None  # pytest-timeout itself reports a bad value
    return seconds if seconds > 0 else None


def fitted(config: pytest.Config, plan: Plan, ranks: int) -> tuple[float, float] | None:
    """``(global timeout, fitted timeout)`` when benchmark cases need the fitted one; else None."""
    if not config.pluginmanager.hasplugin(PLUGIN) or not math.isfinite(plan.batch_timeout_s):
        return None
    current = global_timeout(config)
    wanted = case_timeout(plan, ranks)
    return (current, wanted) if current is not None and current < wanted else None


def fit(config: pytest.Config, items: list[pytest.Item], plan: Plan, ranks: int) -> None:
    """Give each of the benchmark ``items`` without a ``timeout`` marker of its own the timeout that fits
    ``plan`` (in the case's ranks, else ``ranks``), where :func:`fitted` says it needs one."""
    for item in items:
        if item.get_closest_marker("timeout") is not None:
            continue
        callspec = getattr(item, "callspec", None)
        case = callspec.params.get(CASE_FIXTURE) if callspec is not None else None
        need = fitted(config, plan, case.config.ranks if isinstance(case, Case) else ranks)
        if need is not None:
            item.add_marker(pytest.mark.timeout(need[1]))
            config.stash.setdefault(_FITTED, set()).add(item.nodeid)


def header(config: pytest.Config, plan: Plan, ranks: int) -> list[str]:
    """A header line saying that the benchmark cases' timeout was raised (none when it was not)."""
    need = fitted(config, plan, ranks)
    if need is None:
        return []
    return [
        f"loaderbench: pytest-timeout's timeout={need[0]:g} s is raised to {need[1]:g} s for benchmark cases without "
        f"a timeout marker of their own, to fit --loader-rounds={plan.rounds}, "
        f"--loader-round-seconds={plan.round_s:g} and --loader-batch-timeout={plan.batch_timeout_s:g}"
    ]


def is_timeout(excinfo: pytest.ExceptionInfo[BaseException]) -> bool:
    """Whether ``excinfo`` is pytest-timeout's failure (its ``signal`` method)."""
    return isinstance(excinfo.value, pytest.fail.Exception) and str(excinfo.value.msg).startswith(_FAILURE_PREFIX)


def explain(item: pytest.Item, excinfo: pytest.ExceptionInfo[BaseException], plan: Plan) -> CaseFailed:
    """The one paragraph for a benchmark item that pytest-timeout stopped: the case, the phase, what to do."""
    marker = item.get_closest_marker("timeout")
    fitted_here = item.nodeid in item.config.stash.get(_FITTED, set())
    seconds = _seconds(marker.args[0] if marker.args else marker.kwargs.get("timeout")) if marker else None
    if marker is None:
        seconds = global_timeout(item.config)
    where = interruption(excinfo.value)
    case, phase = where if where is not None else (item.nodeid, "")
    limit = f"{seconds:g} s" if seconds is not None else "its timeout"
    if where is None:
        fault = f"pytest-timeout stopped it after {limit}, outside the harness's measurement (in the test's own code)"
    else:
        fault = f"pytest-timeout stopped it after {limit} while {phase}; the harness stopped its DataLoader workers"
    plan_text = (
        f"--loader-rounds={plan.rounds}, --loader-round-seconds={plan.round_s:g} and "
        f"--loader-batch-timeout={plan.batch_timeout_s:g}"
    )
    if fitted_here:
        remedy = (
            f"its batches come far slower than its plan ({plan_text}) expects, past the timeout loaderbench fitted "
            "to it: find what makes them slow, or raise --loader-batch-timeout (the fitted timeout grows with it)"
        )
    elif marker is not None:
        remedy = (
            f"raise the test's timeout marker to fit the plan (at least {case_timeout(plan):g} s at {plan_text}), "
            "or drop it: loaderbench gives benchmark cases a timeout that fits their plan, and "
            "--loader-batch-timeout stops a hung case with the phase named"
        )
    else:
        remedy = (
            "raise pytest-timeout's timeout for the benchmark job (--timeout=0 turns it off), or give "
            "--loader-batch-timeout a finite value, so that loaderbench fits the cases a timeout of their own"
        )
    return case_failure(FailureKind.PYTEST_TIMEOUT, case, fault, remedy, phase=phase)


def _seconds(value: object) -> float | None:
    try:
        return float(str(value))
    except (TypeError, ValueError):
        return None


def without_stack_dump(sections: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """A report's captured-output ``sections`` without pytest-timeout's dump of the other threads' stacks (the
    harness's watchdog, memory sampler and queue feeders: noise beside a paragraph that names the phase)."""
    kept = [(title, _STACK_DUMP.sub("", text)) for title, text in sections]
    return [(title, text) for title, text in kept if text.strip()]
