"""Order a benchmark session so that every CUDA measurement runs after every CPU case.

Once CUDA is initialised in the pytest process, DataLoader workers it forks are unsafe and slow
(pytorch#68383), so the suite's CUDA cases and the users' ``loader_benchmark(..., device="cuda")`` tests run
last.  A user's test is known to measure on CUDA when it is marked ``@pytest.mark.loaderbench(device="cuda")``,
is parametrized with a ``"cuda"`` value, or passes ``device="cuda"`` literally; one that was not recognised and
still asks for CUDA before a CPU case fails with what to do (:func:`cuda_order_problem`), instead of
initialising CUDA there.
"""

from __future__ import annotations

import inspect
import re

import pytest

from loaderbench.engine.case import Case
from loaderbench.pytest_names import CASE_FIXTURE, FIXTURE


def cuda_last(config: pytest.Config, items: list[pytest.Item]) -> list[pytest.Item]:
    """``items`` with every CUDA one moved after every CPU one (a stable sort), remembered for the check."""
    ordered = sorted(items, key=lambda i: device_of(i) == "cuda")
    config.stash[_CUDA_ITEMS_KEY] = {i.nodeid for i in ordered if device_of(i) == "cuda"}
    config.stash[_LAST_CPU_KEY] = max((n for n, i in enumerate(ordered) if device_of(i) != "cuda"), default=-1)
    return ordered


_CUDA_ITEMS_KEY = pytest.StashKey[set[str]]()
_LAST_CPU_KEY = pytest.StashKey[int]()
_CUDA_LITERAL = re.compile(r"""device\s*=\s*["']cuda["']""")


def device_of(item: pytest.Item) -> str:
    """``cuda`` for a suite's CUDA case, and for a ``loader_benchmark`` test that is marked
    ``@pytest.mark.loaderbench(device="cuda")``, is parametrized with a ``"cuda"`` value, or passes
    ``device="cuda"`` literally in its source; else ``cpu``."""
    callspec = getattr(item, "callspec", None)
    case = callspec.params.get(CASE_FIXTURE) if callspec else None
    if isinstance(case, Case):
        return case.device
    if FIXTURE not in getattr(item, "fixturenames", ()):
        return "cpu"
    for mark in item.iter_markers("loaderbench"):
        if mark.kwargs.get("device") in ("cpu", "cuda"):
            return str(mark.kwargs["device"])
    if callspec is not None and "cuda" in [v for v in callspec.params.values() if isinstance(v, str)]:
        return "cuda"
    function = getattr(item, "function", None)
    try:
        source = inspect.getsource(function) if function is not None else ""
    except (OSError, TypeError):
        source = ""
    return "cuda" if _CUDA_LITERAL.search(source) else "cpu"


def cuda_order_problem(item: pytest.Item) -> str:
    """Why ``item`` may not measure on CUDA now (empty when it may): it was not ordered after the session's
    CPU cases, and a CPU case still runs after it."""
    config = item.config
    cuda_items = config.stash.get(_CUDA_ITEMS_KEY, set())
    if item.nodeid in cuda_items or item.session.items.index(item) > config.stash.get(_LAST_CPU_KEY, -1):
        return ""
    return (
        f"device='cuda' in {item.nodeid}, which runs before CPU cases of this session: CUDA initialised in this "
        "process would make their fork-started workers unsafe (pytorch#68383). Mark the test "
        "@pytest.mark.loaderbench(device='cuda') so it runs after them."
    )
