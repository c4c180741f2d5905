"""Faults injected into a benchmark case's dataset: an exception, a killed or crashed worker, /dev/shm running
out, a dataset that cannot be pickled, a hang, samples that cannot be collated.  Each fails its case with one
clear paragraph, the next case still runs, and nothing is left behind (no worker process, no /dev/shm segment, the
baseline file untouched: ``run_fault``, tests/engine/conftest.py).  The machine's limits, a worker dying at exit
and the user's bad input are in test_faults_resources.py."""

from __future__ import annotations

import ctypes
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch.utils.data import Dataset, get_worker_info

from loaderbench import LoaderConfig, Plan, Workload
from loaderbench.testing.strategies import Record2

#: ``run_fault(workload, config, plan=..., consumer=..., kind=...)`` (tests/engine/conftest.py).
RunFault = Callable[..., str]
HANG_PLAN = Plan(rounds=2, round_s=0.02, batch_timeout_s=1.0)
AT = 40  # the faulty index: past the pilot and the first batches, inside the measured rounds


# --- faulty datasets (module level: they must pickle under spawn) -------------------------------------------------


def _zeros(index: int) -> torch.Tensor:
    return torch.zeros(2)


LAMBDA = lambda index: torch.zeros(2)  # noqa: E731 - the point: a lambda cannot be pickled for spawn


class Faulty(Dataset[Any]):
    """``torch.zeros(2)`` everywhere except at index ``at``, where ``fault`` happens (in a worker only,
    unless ``in_main``: the harness's pilot fetches a few samples in the main process)."""

    def __init__(self, fault: str, *, at: int = AT, in_main: bool = False, length: int = 10_000) -> None:
        self.fault, self.at, self.in_main, self.length = fault, at, in_main, length
        self.hold = LAMBDA if fault == "unpicklable" else _zeros

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Any:
        if index == self.at and (self.in_main or get_worker_info() is not None):
            _inject(self.fault)
        if self.fault == "ragged":
            return torch.zeros(index % 3 + 1)
        if self.fault == "dataclass":
            return Record2(index, torch.zeros(2))
        return self.hold(index)


def _inject(fault: str) -> None:
    if fault == "raise":
        raise KeyError(f"sample {AT} is missing")
    if fault == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if fault == "segfault":
        ctypes.string_at(0)  # a real NULL dereference in native code
    if fault == "sigbus":  # what a worker gets when /dev/shm is full as it writes a batch
        os.kill(os.getpid(), signal.SIGBUS)
    if fault == "enospc":  # torch's own text when /dev/shm is full as a worker creates a segment
        raise RuntimeError(f"unable to write to file </torch_{os.getpid()}_1_0>: No space left on device (28)")
    if fault == "sleep":
        time.sleep(3600)
    if fault == "nap":  # longer than the case's timeout, short enough that shutdown need not wait long
        time.sleep(2.0)
    if fault == "spin":
        while True:
            pass


@dataclass(frozen=True, slots=True)
class FaultyWorkload(Workload):
    def build(self, length: int, workdir: Any = None) -> Dataset[Any]:
        return Faulty(self.params["fault"], in_main=bool(self.params.get("in_main", False)))


def faulty(fault: str, **params: Any) -> FaultyWorkload:
    return FaultyWorkload(
        name=f"faulty-{fault}", kind="sleep", batch_size=4, params={"latency_s": 1e-4, "fault": fault, **params}
    )


W2 = LoaderConfig(batch_size=4, num_workers=2, multiprocessing_context="fork")


# --- the faults ----------------------------------------------------------------------------------------------------


def test_an_exception_in_a_worker(run_fault: RunFault) -> None:
    text = run_fault(faulty("raise"), W2, kind="dataset")
    assert f"the dataset or collate raised KeyError: 'sample {AT} is missing' (in DataLoader worker process" in text
    assert "Remedy: fix the dataset; run it with num_workers=0" in text


def test_an_exception_at_zero_workers_is_not_told_to_rerun_at_zero_workers(run_fault: RunFault) -> None:
    text = run_fault(faulty("raise", in_main=True), LoaderConfig(batch_size=4), kind="dataset")
    assert f"the dataset or collate raised KeyError: 'sample {AT} is missing'" in text
    assert "it raised in this process (num_workers=0): call its __getitem__" in text
    assert "run it with num_workers=0" not in text


@pytest.mark.parametrize("sharing", ["file_descriptor", "file_system"])
def test_a_worker_killed_with_sigkill(sharing: str, run_fault: RunFault) -> None:
    """Under file_system the dead worker's segments stay in /dev/shm unless the harness removes them."""
    text = run_fault(faulty("sigkill"), W2.replace(sharing_strategy=sharing), kind="worker-killed")
    # torch says "is killed by signal: Killed" or, when it notices the dead worker first, "exited unexpectedly"
    # (then the harness adds "died of SIGKILL" from the worker's exit code)
    assert "a worker process was killed with SIGKILL" in text
    assert "is killed by signal: Killed" in text or "died of SIGKILL" in text
    assert "OOM killer" in text and "lower num_workers" in text


def test_a_worker_that_segfaults(run_fault: RunFault) -> None:
    text = run_fault(faulty("segfault"), W2, kind="segfault")
    assert "crashed in native code with a segmentation fault" in text
    assert "num_workers=0" in text and "faulthandler" in text


@pytest.mark.parametrize("fault", ["sigbus", "enospc"])
def test_shared_memory_exhaustion(fault: str, run_fault: RunFault) -> None:
    text = run_fault(faulty(fault), W2, kind="shm-exhausted")
    assert "shared memory (/dev/shm) ran out" in text and "/dev/shm:" in text and "bytes free" in text
    assert "--shm-size" in text and "num_workers=0" in text and "prefetch_factor" in text


@pytest.mark.parametrize("context", ["spawn", "forkserver"])
def test_a_dataset_that_cannot_be_pickled_under_spawn(context: str, run_fault: RunFault) -> None:
    config = LoaderConfig(batch_size=4, num_workers=2, multiprocessing_context=context)
    text = run_fault(faulty("unpicklable"), config, kind="pickling")
    assert "could not be pickled to start a spawn or forkserver worker" in text and "<lambda>" in text
    assert "while starting the workers" in text
    assert "module level" in text and "multiprocessing_context='fork'" in text


def test_a_hung_worker_is_killed(run_fault: RunFault) -> None:
    text = run_fault(faulty("sleep"), W2, plan=HANG_PLAN, kind="hang")
    assert "no batch arrived and no phase began for 1 s (Plan.batch_timeout_s)" in text
    assert "the dataset hangs; worker process(es)" in text and "so the harness killed them" in text
    assert "timeout is 0 (wait forever)" in text and "raise Plan.batch_timeout_s" in text


@pytest.mark.slow
def test_the_cases_own_dataloader_timeout(run_fault: RunFault) -> None:
    text = run_fault(faulty("nap"), W2.replace(timeout=1.0), kind="timeout")
    assert "no batch arrived within the case's DataLoader timeout (RuntimeError: DataLoader timed out after 1" in text
    assert "raise timeout" in text


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["sleep", "spin"])
def test_a_hang_in_the_main_process_is_interrupted(fault: str, run_fault: RunFault) -> None:
    """num_workers=0: the dataset hangs in this very process; the watchdog interrupts it (main thread only)."""
    text = run_fault(faulty(fault, in_main=True), LoaderConfig(batch_size=4), plan=HANG_PLAN)
    assert "the main process was stuck at" in text and "in _inject, so the harness interrupted it" in text


@dataclass(frozen=True, slots=True)
class PilotHangWorkload(Workload):
    """A user workload (no cost model), whose sample 0 hangs in the main process."""

    def build(self, length: int, workdir: Any = None) -> Dataset[Any]:
        return Faulty("sleep", at=0, in_main=True)


def test_a_hang_while_the_harness_sizes_the_epoch(run_fault: RunFault) -> None:
    """Without a cost model the harness first fetches a few samples in the main process."""
    workload = PilotHangWorkload(name="faulty-pilot", kind="user", batch_size=4)
    text = run_fault(workload, W2, plan=HANG_PLAN)
    assert "while sizing the epoch" in text and "the main process was stuck at" in text


@pytest.mark.parametrize("workers", [0, 2])
def test_samples_that_cannot_be_stacked_name_their_shapes(workers: int, run_fault: RunFault) -> None:
    config = LoaderConfig(batch_size=4, num_workers=workers, multiprocessing_context="fork" if workers else None)
    text = run_fault(faulty("ragged"), config)
    assert (
        "samples in one batch cannot be collated: they differ: entry 0 holds a float32 tensor of shape [1] "
        "and entry 1 holds a float32 tensor of shape [2]"
    ) in text
    assert "pad_collate" in text and "collate='list'" in text


def test_a_sample_type_default_collate_cannot_batch(run_fault: RunFault) -> None:
    text = run_fault(faulty("dataclass"), W2)
    assert "samples cannot be collated: they hold a <class 'loaderbench.testing.datasets.Record2'>" in text
    assert "dataclasses.astuple" in text and "collate='list'" in text
