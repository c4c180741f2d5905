"""Harness phase accounting with a fake clock, cleanup, and failure messages."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch
from torch.utils.data import Dataset

from loaderbench import FakeClock, LoaderConfig, Plan, measure
from loaderbench.engine import memory
from loaderbench.engine.cleanup import case_processes
from loaderbench.engine.plan import estimate_samples_per_s, plan_epoch, replanned_batches, warmup_batches
from loaderbench.errors import CaseFailed
from loaderbench.workloads.recipes import Workload

CLOCK = FakeClock()


class ClockedDataset(Dataset[torch.Tensor]):
    """Each sample costs exactly 1 ms of fake time (in-process only)."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        CLOCK.advance(0.001)
        return torch.zeros(4)  # 16 bytes


@dataclass(frozen=True, slots=True)
class ClockedWorkload(Workload):
    def build(self, length: int, workdir: Any = None) -> Dataset[Any]:
        return ClockedDataset(length)


CLOCKED = ClockedWorkload(name="clocked", kind="sleep", batch_size=10, params={"latency_s": 0.001})


def test_phase_accounting_with_a_fake_clock() -> None:
    plan = Plan(rounds=4, round_s=0.05, warmup_batches=2)
    m = measure(CLOCKED, LoaderConfig(batch_size=10), plan=plan, clock=CLOCK)
    assert m.rounds["samples_per_s"] == pytest.approx((1000.0,) * 4)
    assert m.rounds["batches_per_s"] == pytest.approx((100.0,) * 4)
    assert m.rounds["bytes_per_s"] == pytest.approx((16_000.0,) * 4)
    assert m.rounds["round_s"] == pytest.approx((0.05,) * 4)  # 5 batches of 10 samples of 1 ms
    assert m.steady_batches == 4 * 5
    assert m.phases["startup_s"] == 0.0  # no worker to start, no fake time passes
    assert m.phases["ttfb_s"] == pytest.approx(0.010)  # one batch of 10 samples
    assert m.phases["epoch_stall_s"] == pytest.approx(0.010)
    assert m.phases["epoch_end_s"] == 0.0
    assert m.samples_per_s == pytest.approx(1000.0)
    assert m.ideal_samples_per_s == pytest.approx(1000.0)
    assert m.relative_iqr == pytest.approx(0.0, abs=1e-12)
    assert m.bytes_per_sample == 16
    assert m.peak_memory_bytes is not None and m.peak_memory_bytes > 0
    assert m.memory_kind in ("pss-anon", "pss", "rss")


def test_runner_receives_the_rounds() -> None:
    calls: list[int] = []

    def runner(fn: Any, rounds: int, between: Any) -> None:
        calls.append(rounds)
        for _ in range(rounds):
            between()
            fn()

    m = measure(CLOCKED, LoaderConfig(batch_size=10), plan=Plan(rounds=3, round_s=0.05), clock=CLOCK, runner=runner)
    assert calls == [3] and len(m.rounds["samples_per_s"]) == 3


def test_no_memory_sample_is_taken_inside_the_timed_rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sampler thread reads every process's PSS (kernel and GIL time): never while a round is timed."""
    in_rounds = [False]
    samples: list[bool] = []
    real = memory.tree_memory

    def spy(procs: Any = None) -> tuple[int, str]:
        samples.append(in_rounds[0])
        return real(procs)

    def runner(fn: Any, rounds: int, between: Any) -> None:
        in_rounds[0] = True
        for _ in range(rounds):
            between()
            fn()
            time.sleep(0.03)  # the sampler ticks every 5 ms: it would sample here if it were not paused
        in_rounds[0] = False

    monkeypatch.setattr(memory, "tree_memory", spy)
    plan = Plan(rounds=3, round_s=0.05, memory_interval_s=0.005)
    m = measure(CLOCKED, LoaderConfig(batch_size=10), plan=plan, clock=CLOCK, runner=runner)
    assert samples and True not in samples
    assert len(samples) >= 2  # before the rounds, and the untimed memory round after them
    assert m.peak_memory_bytes is not None and m.peak_memory_bytes > 0


def test_paused_sampler_takes_no_sample_and_samples_on_leaving() -> None:
    with memory.PeakMemorySampler(0.002) as sampler:
        time.sleep(0.02)
        with sampler.paused():
            during = sampler.samples
            time.sleep(0.05)
            assert sampler.samples == during
        assert sampler.samples >= during + 1  # the rescan on leaving is synchronous


class FirstCallPenalty(Dataset[torch.Tensor]):
    """1 s of fake time for the first sample (lazy imports, first faults), 1 ms for every other."""

    def __init__(self, length: int) -> None:
        self.length, self.calls = length, 0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        self.calls += 1
        CLOCK.advance(1.0 if self.calls == 1 else 0.001)
        return torch.zeros(1)


@dataclass(frozen=True, slots=True)
class NoCostModel(Workload):
    def build(self, length: int, workdir: Any = None) -> Dataset[Any]:
        return FirstCallPenalty(length)

    def ideal_samples_per_s(self, num_workers: int, cpus: int | None = None) -> float | None:
        return None


def test_the_pilot_does_not_time_a_first_call() -> None:
    workload = NoCostModel(name="first-call", kind="user", batch_size=16)
    rate = estimate_samples_per_s(workload, LoaderConfig(batch_size=16), ".", clock=CLOCK)
    assert rate == pytest.approx(1000.0)  # 1 ms a sample; the first call's 1 s is not in it


def test_epoch_is_sized_to_whole_rounds() -> None:
    cfg = LoaderConfig(batch_size=10, num_workers=2, prefetch_factor=3)
    plan = Plan(rounds=5, round_s=0.2, warmup_batches=2)
    epoch = plan_epoch(CLOCKED, cfg, plan, rate=2000.0)
    assert epoch.batches_per_round == 40  # 0.2 s * 2000 samples/s / 10 per batch
    assert warmup_batches(cfg, plan) == 2 + 3 * 2  # drains the batches prefetched during start-up
    assert epoch.total_batches == 8 + 1 + 5 * 40 + 40  # and one untimed round for the memory sampler


def test_rounds_shrink_when_the_warm_up_is_far_slower_than_planned_and_never_grow() -> None:
    plan = Plan(rounds=5, round_s=0.2, warmup_batches=2)
    # planned 40 batches a round (5 ms each); consuming a warm-up batch took 50 ms: a cost the estimate missed
    assert replanned_batches(40, 2, 0.100, plan) == 4  # 0.2 s / 50 ms
    assert replanned_batches(40, 8, 0.040, plan) == 40  # as planned
    assert replanned_batches(40, 8, 0.075, plan) == 40  # under REPLAN_FACTOR times slower: left alone
    assert replanned_batches(40, 2, 10.0, plan) == plan.min_batches_per_round
    assert replanned_batches(40, 0, 1.0, plan) == 40 and replanned_batches(40, 2, 0.0, plan) == 40
    assert replanned_batches(400, 2, 0.001, plan) == 400  # faster than planned: never more batches


def test_unstable_and_short_cases_warn_with_advice() -> None:
    m = measure(CLOCKED, LoaderConfig(batch_size=10), plan=Plan(rounds=2, round_s=0.02), clock=CLOCK)
    assert any("too few steady-state batches" in w and "--loader-round-seconds" in w for w in m.warnings)


def _children() -> set[int]:
    """Worker processes below this one (forkserver workers included; the forkserver itself excluded)."""
    return {p.pid for p in case_processes(psutil.Process(), before=())}


def test_workers_are_gone_after_a_case() -> None:
    before = _children()
    m = measure(
        CLOCKED, LoaderConfig(batch_size=10, num_workers=2, persistent_workers=True), plan=Plan(rounds=2, round_s=0.05)
    )
    assert not math.isnan(m.samples_per_s)
    assert _children() <= before


@pytest.mark.parametrize("start", [None, "spawn"])  # spawn workers import the dataset's class by name
def test_a_failing_worker_gives_one_clear_message_and_leaves_no_workers(
    failing_workload: Workload, start: str | None
) -> None:
    before = _children()
    config = LoaderConfig(batch_size=4, num_workers=2, multiprocessing_context=start)
    with pytest.raises(CaseFailed) as info:
        measure(failing_workload, config, plan=Plan(rounds=2, round_s=0.05))
    text = str(info.value)
    assert text.startswith(f"case failing-cpu-{config.id} failed: the dataset or collate raised KeyError")
    assert "sample 40 is missing" in text and "Remedy:" in text
    assert "\n" not in text
    assert _children() <= before


def test_sharing_strategy_and_threads_are_restored() -> None:
    strategy, threads = torch.multiprocessing.get_sharing_strategy(), torch.get_num_threads()
    measure(
        CLOCKED,
        LoaderConfig(batch_size=10, sharing_strategy="file_system"),
        plan=Plan(rounds=2, round_s=0.05),
        clock=CLOCK,
    )
    assert torch.multiprocessing.get_sharing_strategy() == strategy
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize(("env", "expected"), [("pinned", "pinned (mmap 32 MiB"), ("default", "left dynamic")])
def test_malloc_thresholds_are_pinned_unless_asked_not_to(env: str, expected: str) -> None:
    import os
    import subprocess
    import sys

    code = "from loaderbench.engine import allocator; print(allocator.pin()); print(allocator.pin())"
    out = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "LOADERBENCH_MALLOC": env}, capture_output=True, text=True
    )
    first, second = out.stdout.splitlines()
    assert expected in first and first == second  # once per process


CHILD_MEMORY = """
import json, psutil, torch
from loaderbench.engine.memory import tree_memory
print(json.dumps([*tree_memory(), psutil.Process().memory_full_info().pss]))
"""

PARENT = """
import subprocess, sys
if sys.argv[1] == "torch":
    import torch  # this parent maps torch's files: its child shares those pages with it
print(subprocess.run([sys.executable, "-c", sys.argv[2]], capture_output=True, text=True, check=True).stdout)
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="needs Linux's smaps_rollup")
def test_memory_counts_no_file_pages_so_a_parent_mapping_the_same_libraries_changes_nothing() -> None:
    """A process's whole PSS is smaller when its parent maps the same torch files (the A/B's head arm, a
    confirming process), 1.16x in an A/B of two installations; the figure the harness keeps (anonymous +
    shared memory) does not depend on it."""

    def child(parent: str) -> tuple[int, str, int]:
        out = subprocess.run([sys.executable, "-c", PARENT, parent, CHILD_MEMORY], capture_output=True, text=True)
        value, kind, whole = json.loads(out.stdout)
        return int(value), str(kind), int(whole)

    alone, shared = child("plain"), child("torch")
    assert alone[1] == shared[1] == "pss-anon"
    assert abs(shared[0] / alone[0] - 1) < 0.05
    # the whole PSS does move (by how much depends on how many other processes map the same files: 3-15% seen)
    assert shared[2] < alone[2]


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="needs Linux's smaps_rollup")
def test_a_process_that_exited_meanwhile_does_not_coarsen_the_memory_kind() -> None:
    """A worker that exits while the tree is read (shutting down at the epoch's end) holds no memory; it once
    turned every worker case's reading into whole PSS, so the gate compared kinds at random and a smoke job
    recorded 24 cases as ``pss`` beside 11 as ``pss-anon``."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    proc = psutil.Process(gone.pid)
    gone.wait()
    total, kind = memory.tree_memory([psutil.Process(), proc])
    assert kind == "pss-anon" and total > 0
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])  # exited, not yet reaped: as a worker is
    zproc = psutil.Process(zombie.pid)
    while zproc.status() != psutil.STATUS_ZOMBIE:
        time.sleep(0.01)
    try:
        assert memory.tree_memory([psutil.Process(), zproc])[1] == "pss-anon"
    finally:
        zombie.wait()
    cases = [LoaderConfig(batch_size=8, num_workers=2)]
    m = measure(CLOCKED, cases[0], plan=Plan(rounds=2, round_s=0.02, next_epoch=True))
    assert m.memory_kind == "pss-anon"


#: Bytes each process that fetches a sample holds from its first fetch on (anonymous, touched).
BALLAST = 48 * 2**20
_HELD: dict[int, bytearray] = {}


class Ballast(Dataset[torch.Tensor]):
    """The first sample a process fetches makes it hold :data:`BALLAST` bytes of its own (a forked worker's
    inherited copy of its parent's stays shared: PSS counts it once)."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        if os.getpid() not in _HELD:
            _HELD[os.getpid()] = bytearray(b"\x01" * BALLAST)
        time.sleep(0.0002)
        return torch.zeros(4)


@dataclass(frozen=True, slots=True)
class BallastWorkload(Workload):
    def build(self, length: int, workdir: Any = None) -> Dataset[Any]:
        return Ballast(length)


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="needs Linux's smaps_rollup")
def test_peak_memory_sums_the_main_process_and_every_worker() -> None:
    """Each worker holds its own ballast: 2 workers (plus the main process's pilot fetch) count about two
    ballasts more than 0 workers, where only the main process holds one."""
    workload = BallastWorkload(name="ballast", kind="sleep", batch_size=8, params={"latency_s": 0.0002})
    plan = Plan(rounds=2, round_s=0.05, next_epoch=False)
    w0 = measure(workload, LoaderConfig(batch_size=8), plan=plan)
    w2 = measure(workload, LoaderConfig(batch_size=8, num_workers=2, multiprocessing_context="fork"), plan=plan)
    assert w0.memory_kind == w2.memory_kind == "pss-anon"
    assert w0.peak_memory_bytes is not None and w2.peak_memory_bytes is not None
    assert w2.peak_memory_bytes - w0.peak_memory_bytes > 1.6 * BALLAST, (w0.peak_memory_bytes, w2.peak_memory_bytes)
