"""Fixtures of the plugin's pytester tests: a short plan to run the inner pytest with, and a user's repository.

* ``run_fast(p, *args, rounds=3, round_s=0.03)``: the inner pytest in a subprocess, short rounds, the baselines in
  ``baselines/``, no cache;
* ``run_suite``: the same, measuring ``--loader-config=w0-bs8`` of the suite that ``suite_project`` wrote;
* ``user_repo(tests, delay, module=...)``: a user's test module, a sleeping dataset ``Slow`` and a unit test
  before ``tests``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

RunResultOf = Callable[..., pytest.RunResult]

SUITE = ["--benchmark", "--loader-scenarios=workloads.toml", "--loader-config=w0-bs8"]

USER_MODULE = """
import time

import pytest
import torch
from torch.utils.data import Dataset

from loaderbench.config import LoaderConfig

DELAY = {delay}


class Slow(Dataset):
    def __len__(self):
        return 64

    def __getitem__(self, i):
        time.sleep(DELAY)
        return torch.zeros(4)


def test_unit():
    assert True
"""


def _fast(rounds: int, round_s: float) -> list[str]:
    return [
        f"--loader-rounds={rounds}",
        f"--loader-round-seconds={round_s}",
        "--loader-baseline-dir=baselines",
        "-p",
        "no:cacheprovider",
    ]


@pytest.fixture
def run_fast() -> RunResultOf:
    """``run_fast(p, *args, rounds=3, round_s=0.03)``: pytest ``args`` in a subprocess in ``p``'s directory."""

    def run(p: pytest.Pytester, *args: str, rounds: int = 3, round_s: float = 0.03) -> pytest.RunResult:
        return p.runpytest_subprocess(*_fast(rounds, round_s), *args)

    return run


@pytest.fixture
def run_suite() -> RunResultOf:
    """``run_suite(p, *args, rounds=3, round_s=0.03)``: ``pytest --benchmark`` of the suite's scenario file
    (``suite_project``), its config w0-bs8 only."""

    def run(p: pytest.Pytester, *args: str, rounds: int = 3, round_s: float = 0.03) -> pytest.RunResult:
        return p.runpytest_subprocess(*SUITE, *_fast(rounds, round_s), *args)

    return run


@pytest.fixture
def user_repo(pytester: pytest.Pytester) -> Callable[..., None]:
    """``user_repo(tests, delay=0.001, module="test_repo")``: write a user's test module into the pytester
    directory: ``Slow``, a 64-sample dataset that sleeps ``delay`` seconds a sample, ``test_unit``, then ``tests``
    (which import ``pytest`` and ``LoaderConfig`` from the module's head)."""

    def write(tests: str, delay: float = 0.001, *, module: str = "test_repo") -> None:
        pytester.makepyfile(**{module: USER_MODULE.format(delay=delay) + tests})

    return write
