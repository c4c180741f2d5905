"""Fixtures shared by several test folders (tests import no other test module: what they share is here).

* ``failing_workload``: a workload whose sample 40 raises ``KeyError`` (the harness and pipeline-axis tests);
* ``make_measurement``, ``fake_run`` and ``fake_search``: a measurement record with plain defaults, a fake
  ``measure(config, next_epoch)`` for tune's search, and a whole search on it (the tune and CLI tests);
* ``suite_project``: a pytester directory laid out as a suite, a scenario file and a benchmark file (the plugin
  and multi-rank tests).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from loaderbench.config import LoaderConfig
from loaderbench.errors import CaseFailed
from loaderbench.measurement import Measurement
from loaderbench.testing.datasets import FailingWorkload
from loaderbench.tune.search import Search, TuneSpec
from loaderbench.workloads.recipes import Workload

# --- a workload whose dataset raises ----------------------------------------------------------------------------------


@pytest.fixture
def failing_workload() -> Workload:
    """Sample 40 raises ``KeyError('sample 40 is missing')``, in a worker (of any start method) or in this process."""
    return FailingWorkload(name="failing", kind="sleep", batch_size=4, params={"latency_s": 0.0001})


# --- measurement records, and tune's search on a fake measure ---------------------------------------------------------


def measurement(**fields: Any) -> Measurement:
    """A record with plain defaults (one CPU case of 100 steady batches, 2 CPUs) for every field not given."""
    defaults: dict[str, Any] = {
        "workload": "fake",
        "device": "cpu",
        "config": LoaderConfig(),
        "rounds": {},
        "phases": {},
        "steady_batches": 100,
        "bytes_per_sample": 16,
        "peak_memory_bytes": 100_000_000,
        "memory_kind": "pss",
        "ideal_samples_per_s": None,
        "torch_threads": 1,
        "cpus": 2,
    }
    return Measurement(**{**defaults, **fields})


@pytest.fixture
def make_measurement() -> Callable[..., Measurement]:
    """``make_measurement(**fields)``: a :class:`Measurement` with plain defaults for the fields not given."""
    return measurement


class FakeRun:
    """``measure(config, next_epoch)`` for tune's search, from a rate model: five rounds at ``rate(config)``
    samples/s with a small deterministic spread, and a fake clock (:meth:`clock`) that moves 1 s a call.

    A NaN or non-positive rate fails the case with ``failure``.  Every record holds a 50 ms time to the first
    batch, a peak memory of 100 MB plus 10 MB a worker and its CPU time per sample (1/rate); the next-epoch stall
    (5 ms with persistent workers, 80 ms without) when a second epoch was asked for, or in every record with
    ``stall_always``."""

    def __init__(
        self, rate: Callable[[LoaderConfig], float], *, failure: str = "the case failed", stall_always: bool = False
    ) -> None:
        self.rate, self.failure, self.stall_always = rate, failure, stall_always
        self.now = 0.0
        self.calls: list[LoaderConfig] = []

    def clock(self) -> float:
        return self.now

    def __call__(self, config: LoaderConfig, next_epoch: bool) -> Measurement:
        self.now += 1.0
        self.calls.append(config)
        r = self.rate(config)
        if math.isnan(r) or r <= 0:
            raise CaseFailed(f"{config.id}: {self.failure}")
        k = len(self.calls)
        stall = 0.005 if config.persistent_workers else 0.08
        return measurement(
            config=config,
            rounds={"samples_per_s": tuple(r * (1 + 0.002 * ((i * 7 + k) % 5 - 2)) for i in range(5))},
            phases={"ttfb_s": 0.05, **({"epoch_stall_s": stall} if next_epoch or self.stall_always else {})},
            peak_memory_bytes=100_000_000 + config.num_workers * 10_000_000,
            extra={"cpu_s_per_sample": 1.0 / r},
        )


@pytest.fixture
def fake_run() -> type[FakeRun]:
    """``fake_run(rate, failure=..., stall_always=...)``: a fake ``measure`` for ``tune.Search`` (see FakeRun);
    pass it with ``clock=fake.clock``; ``fake.calls`` lists the configs it measured."""
    return FakeRun


def _fake_search(
    rate: Callable[[LoaderConfig], float], *, batch_size: int, budget: float, max_workers: int | None, **fake: Any
) -> Search:
    measure = FakeRun(rate, **fake)
    spec = TuneSpec(factory="m:f", budget_s=budget, max_workers=max_workers, batch_size=batch_size)
    search = Search(spec, measure, base=LoaderConfig(batch_size=batch_size), clock=measure.clock)
    search.search()
    return search


@pytest.fixture
def fake_search() -> Callable[..., Search]:
    """``fake_search(rate, batch_size=, budget=, max_workers=, **fake)``: a whole search of the default config's
    neighbourhood at ``batch_size``, measured by ``FakeRun(rate, **fake)``; the finished ``Search``."""
    return _fake_search


# --- a suite in a pytester directory ----------------------------------------------------------------------------------

SUITE_BENCH = """
from loaderbench.selection.tiers import Case

def test_pipeline(loaderbench_case: Case, loaderbench_session, benchmark):
    m = loaderbench_session.run(loaderbench_case, benchmark)
    assert m.rounds["samples_per_s"]
"""


class SuiteProject:
    """A pytester directory laid out as a suite: ``workloads.toml`` holds one sleep workload (``tiny-io``: samples
    of shape [4], batches of 8) and ``test_bench.py`` measures each selected case."""

    ALL_TIERS = ("smoke", "standard", "full")

    def __init__(self, pytester: pytest.Pytester) -> None:
        self.pytester = pytester

    @staticmethod
    def scenario(latency_s: float = 0.001, tiers: Sequence[str] = ("smoke",), name: str = "tiny-io") -> str:
        """The text of a scenario file with one sleep workload, ``latency_s`` a sample."""
        return f"""
[[workload]]
name = "{name}"
kind = "sleep"
latency_s = {latency_s}
shape = [4]
batch_size = 8
tiers = {json.dumps(list(tiers))}
"""

    def __call__(
        self, latency_s: float = 0.001, tiers: Sequence[str] = ("smoke",), *, more_tests: str = ""
    ) -> pytest.Pytester:
        """Write both files (``more_tests`` appended to the benchmark file); the pytester, to run in."""
        self.pytester.makefile(".toml", workloads=self.scenario(latency_s, tiers))
        self.pytester.makepyfile(test_bench=SUITE_BENCH + more_tests)
        return self.pytester


@pytest.fixture
def suite_project(pytester: pytest.Pytester) -> SuiteProject:
    """``suite_project(latency_s, tiers)`` writes the suite's two files into the pytester directory and returns
    the pytester; ``suite_project.scenario(...)`` is a scenario file's text, to rewrite or combine."""
    return SuiteProject(pytester)
