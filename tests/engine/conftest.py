"""What the fault tests share (test_faults.py, test_faults_resources.py): what must hold after every fault.

* ``leftovers()``: a snapshot of this test's worker processes and torch shared-memory segments;
  ``.assert_none_since()`` fails on any process or segment new since then;
* ``baseline``: a real baseline file, recorded from a good case before the faults (one per test module);
* ``run_fault(workload, config, ...)``: measure a faulty case, then a good one, and check the one-paragraph
  message, the data the exception carries, the leftovers and the baseline.
"""

from __future__ import annotations

import multiprocessing.process
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from loaderbench import CaseFailed, LoaderConfig, Plan, Workload, measure
from loaderbench.store.baseline import BaselineStore, entries_from
from loaderbench.store.fingerprint import current

SHM = Path("/dev/shm")
PLAN = Plan(rounds=2, round_s=0.02, batch_timeout_s=60)
GOOD = Workload(name="good", kind="sleep", batch_size=4, params={"latency_s": 1e-4, "shape": [2]})


def _infrastructure(proc: psutil.Process, me: int) -> bool:
    """The forkserver server and multiprocessing's resource tracker: shared, they outlive cases by design."""
    try:
        return proc.ppid() == me and any(
            f"multiprocessing.{name} import main" in " ".join(proc.cmdline())
            for name in ("forkserver", "resource_tracker")
        )
    except psutil.Error:
        return False


def descendants() -> set[int]:
    me = psutil.Process()
    return {p.pid for p in me.children(recursive=True) if not _infrastructure(p, me.pid)}


#: Every process this test process started (DataLoader workers included), recorded by ``record_started``.
STARTED: set[int] = set()


@pytest.fixture
def record_started(monkeypatch: pytest.MonkeyPatch) -> None:
    """Record the pid of every process started here (fork, spawn or forkserver alike), so a leak check can tell
    this test's shared-memory segments from another program's: torch names a segment ``torch_<creator pid>_...``.
    Counting every ``torch_*`` in /dev/shm made these tests fail whenever another torch job (a second pytest, a
    benchmark) on the machine held a segment for longer than the check's grace period."""
    start = multiprocessing.process.BaseProcess.start

    def recording(self: multiprocessing.process.BaseProcess) -> None:
        start(self)
        if self.pid is not None:
            STARTED.add(self.pid)

    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", recording)


def _ours(name: str) -> bool:
    creator = name.split("_")[1] if name.count("_") >= 1 else ""
    return creator.isdigit() and (int(creator) == os.getpid() or int(creator) in STARTED)


def torch_segments() -> set[str]:
    """This process's and its started processes' torch segments in /dev/shm."""
    return {p.name for p in SHM.glob("torch_*") if _ours(p.name)} if SHM.is_dir() else set()


@dataclass
class Leftovers:
    processes: set[int]
    segments: set[str]

    @classmethod
    def snapshot(cls) -> Leftovers:
        return cls(descendants(), torch_segments())

    def assert_none_since(self) -> None:
        assert descendants() <= self.processes, "worker processes remain after the case"
        new = torch_segments() - self.segments
        if new:  # ignore another program's short-lived segments: a leak is one that stays
            time.sleep(0.5)
            new &= torch_segments()
        assert not new, f"shared-memory segments leaked in /dev/shm: {sorted(new)}"


@pytest.fixture
def leftovers(record_started: None) -> Callable[[], Leftovers]:
    """``before = leftovers()``: this test's processes and segments now; ``before.assert_none_since()`` later."""
    return Leftovers.snapshot


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A real baseline file (the store's format), recorded from a good case before the faults."""
    store = BaselineStore(tmp_path_factory.mktemp("baselines"))
    m = measure(GOOD, LoaderConfig(batch_size=4), plan=PLAN)
    yield store.save(current(), entries_from([m]))


@pytest.fixture
def run_fault(baseline: Path, record_started: None) -> Callable[..., str]:
    """``run_fault(workload, config, plan=..., consumer=..., kind=...)``: the failure's text, once checked."""

    def run(
        workload: Workload, config: LoaderConfig, *, plan: Plan = PLAN, consumer: Any = None, kind: str = ""
    ) -> str:
        """Measure the faulty case, then a good one; check the message's form, the data the exception carries
        (case, phase, fault kind), the leftovers and the baseline."""
        before = Leftovers.snapshot()
        stored = baseline.read_bytes()
        with pytest.raises(CaseFailed) as info:
            measure(workload, config, plan=plan, consumer=consumer)
        if hasattr(consumer, "restore"):
            consumer.restore()
        text = str(info.value)
        assert text.startswith(f"case {workload.name}-cpu-{config.id} failed: "), text
        assert info.value.case == f"{workload.name}-cpu-{config.id}"
        assert info.value.phase and info.value.phase in text, (info.value.phase, text)
        assert info.value.kind == kind if kind else info.value.kind, info.value.kind
        assert "\n" not in text and text.count(" Remedy: ") == 1 and text.endswith("."), text
        before.assert_none_since()
        good = measure(GOOD, LoaderConfig(batch_size=4, num_workers=2, multiprocessing_context="fork"), plan=PLAN)
        assert len(good.rounds["samples_per_s"]) == PLAN.rounds and good.samples_per_s > 0
        before.assert_none_since()
        assert baseline.read_bytes() == stored
        return text

    return run
