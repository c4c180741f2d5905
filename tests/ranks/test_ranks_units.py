"""The multi-rank pieces without torchrun: combining per-rank measurements, the synchronous step with a fake
collective, the exactly-once properties of the ranks' samples (hypothesis), detecting ranks that read the
same samples, the launcher's diagnosis of a failed job, and its clean-up of a process tree."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.data import Dataset

from loaderbench import CaseFailed, LoaderConfig, UsageError, Workload
from loaderbench.ab.child import select_cases
from loaderbench.ab.records import ChildSpec
from loaderbench.ab.user_tests import pytest_args
from loaderbench.engine.case import Case
from loaderbench.engine.consumers import CpuConsumer, StepConsumer
from loaderbench.errors import FailureKind, LoaderbenchError
from loaderbench.measurement import Measurement
from loaderbench.pytest_plugin import confirm
from loaderbench.ranks import launch, rank_main
from loaderbench.ranks.combine import combine, slowest_rank
from loaderbench.ranks.coverage import (
    duplicates,
    epoch_indices,
    expected_counts,
    same_samples,
    same_samples_message,
    sample_fingerprints,
)
from loaderbench.ranks.sync import SyncConsumer, synced_runner
from loaderbench.tune.ranks import core_note, first_oversubscribed, oversubscribed
from loaderbench.tune.search import TuneSpec, auto_worker_cap, rank_rules
from loaderbench.workloads import datasets


def _rank(rate: float, wait: float, data: float, *, memory: int = 100, ttfb: float = 0.1, notes: tuple[str, ...] = ()):
    m = Measurement.from_raw(
        {
            "samples_per_s": [rate, rate * 1.1, rate * 0.9],
            "batches_per_s": [rate / 8] * 3,
            "round_s": [0.2, 0.3, 0.25],
            "collective_wait_s": [wait] * 3,
            "data_wait_s": [data] * 3,
            "step_s": [0.0] * 3,
        },
        {"ttfb_s": ttfb, "startup_s": 0.05, "peak_memory_bytes": memory},
        config=LoaderConfig(num_workers=1, batch_size=8, ranks=2),
    )
    return Measurement(**{**{f: getattr(m, f) for f in m.__slots__}, "notes": notes, "steady_batches": 40})


# --- combine ------------------------------------------------------------------------------------------------------
def test_the_job_sums_the_ranks_rates_and_keeps_the_slowest_phases() -> None:
    a = _rank(100.0, wait=0.05, data=0.001, memory=300, ttfb=0.2, notes=("same", "only a"))
    b = _rank(110.0, wait=0.0, data=0.04, memory=200, ttfb=0.5, notes=("same",))
    job = combine([a, b], ideal_samples_per_s=500.0)
    assert job.rounds["samples_per_s"] == pytest.approx((210.0, 231.0, 189.0))
    assert job.rounds["round_s"] == (0.2, 0.3, 0.25)
    assert "collective_wait_s" not in job.rounds  # per rank in extra instead
    assert job.samples_per_s == pytest.approx(210.0)
    assert job.phases["ttfb_s"] == 0.5 and job.peak_memory_bytes == 500 and job.ideal_samples_per_s == 500.0
    assert job.extra["ranks"] == 2 and job.extra["slowest_rank"] == 1  # rank 0 waited for rank 1
    assert job.extra["rank_ttfb_s"] == [0.2, 0.5] and job.extra["rank_peak_memory_bytes"] == [300, 200]
    assert job.extra["rank_collective_wait_s"] == [0.05, 0.0] and job.extra["rank_data_wait_s"] == [0.001, 0.04]
    assert job.notes == ("same", "rank 0: only a")
    info = job.extra_info()
    assert info["samples_per_s"] == pytest.approx(210.0) and info["ranks"] == 2
    assert Measurement.from_json(job.to_json()).extra["rank_samples_per_s"] == job.extra["rank_samples_per_s"]


def test_the_job_s_cpu_time_per_sample_is_every_rank_s_and_its_o_flag_counts_every_rank() -> None:
    a, b = _rank(100.0, 0.0, 0.0), _rank(100.0, 0.0, 0.0)
    a = dataclasses.replace(a, extra={**a.extra, "cpu_s_per_sample": 0.001})
    b = dataclasses.replace(b, extra={**b.extra, "cpu_s_per_sample": 0.003})
    job = combine([a, b])
    assert job.extra["cpu_s_per_sample"] == pytest.approx(0.002)
    assert job.extra["rank_cpu_s_per_sample"] == [0.001, 0.003]
    assert "cpu_s_per_sample" not in combine([a, _rank(100.0, 0.0, 0.0)]).extra  # unknown on one rank: unknown
    two_by_two = dataclasses.replace(job, config=LoaderConfig(num_workers=2, ranks=2), cpus=2)
    assert "O" in [f.letter for f in two_by_two.flags]  # 4 loading processes on 2 CPUs
    one_each = dataclasses.replace(job, config=LoaderConfig(num_workers=1, ranks=2), cpus=2)
    assert "O" not in [f.letter for f in one_each.flags]


def test_unknown_memory_on_one_rank_leaves_the_job_s_unknown() -> None:
    a, b = _rank(1.0, 0.0, 0.0), _rank(1.0, 0.0, 0.0)
    b = Measurement(**{**{f: getattr(b, f) for f in b.__slots__}, "peak_memory_bytes": None})
    assert combine([a, b]).peak_memory_bytes is None
    with pytest.raises(ValueError):
        combine([])


def test_without_sync_metrics_the_slowest_rank_is_the_lowest_rate() -> None:
    ms = [Measurement.from_raw({"samples_per_s": [v]}) for v in (5.0, 3.0, 4.0)]
    assert slowest_rank(ms) == 1


# --- the synchronous step -----------------------------------------------------------------------------------------
class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_the_sync_consumer_times_data_step_and_collective_only_while_armed() -> None:
    clock = _Clock()
    calls: list[float] = []

    def reduce() -> None:
        calls.append(clock.t)
        clock.t += 0.5  # the wait for the slowest rank

    inner = StepConsumer(0)
    sync = SyncConsumer(inner, reduce=reduce, clock=clock, case="c", rank=0, ranks=2)
    assert sync.id == inner.id
    sync.consume(None)  # warm-up: no collective
    assert calls == []
    rounds: list[dict[str, float]] = []

    def round_fn() -> None:
        for _ in range(3):
            clock.t += 0.25  # waiting for the batch
            sync.consume(None)
        sync.sync()
        rounds.append(dict(sync.round_metrics(3, 1.0)))

    synced_runner(sync)(round_fn, 2, lambda: None)
    assert len(calls) == 2 * (1 + 3)  # a barrier before each round, then one collective per batch
    assert rounds == [{"data_wait_s": 0.75, "step_s": 0.0, "collective_wait_s": 1.5}] * 2
    assert not sync.armed and sync.steps == 8
    sync.consume(None)  # after the rounds: no collective again
    assert len(calls) == 8


def test_a_failed_collective_is_a_rank_wait_failure() -> None:
    def reduce() -> None:
        raise RuntimeError("Connection closed by peer\nmore")

    sync = SyncConsumer(CpuConsumer(), reduce=reduce, case="io-cpu-w0-bs8-ranks2", rank=0, ranks=2)
    with sync.arming(), pytest.raises(CaseFailed) as info:
        sync.consume(None)
    assert info.value.kind == "rank-wait" and sync.in_collective
    assert "rank 0 of 2 waited at the per-step all-reduce" in str(info.value)
    assert "Connection closed by peer" in str(info.value) and "more" not in str(info.value)


# --- exactly once, fuzzed -----------------------------------------------------------------------------------------
class _Indices(Dataset[int]):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


@given(
    length=st.integers(1, 70),
    ranks=st.integers(2, 4),
    batch=st.integers(1, 8),
    drop_last=st.booleans(),
    shuffle=st.booleans(),
    epoch=st.integers(0, 3),
    batching=st.sampled_from(["auto", "sampler"]),
)
def test_every_sample_of_an_epoch_arrives_exactly_once_across_ranks(
    length: int, ranks: int, batch: int, drop_last: bool, shuffle: bool, epoch: int, batching: str
) -> None:
    config = LoaderConfig(batch_size=batch, ranks=ranks, drop_last=drop_last, shuffle=shuffle, batching=batching)
    per_rank = epoch_indices(config, _Indices(length), epoch=epoch)
    delivered, distinct = expected_counts(length, ranks, batch, drop_last=drop_last)
    got = Counter(i for r in per_rank for i in r)
    assert sum(got.values()) == delivered and len(got) == distinct
    dup = duplicates(per_rank)
    if drop_last or length % ranks == 0:
        assert dup == {}  # exactly once
    else:  # DistributedSampler pads with the epoch's first samples up to a multiple of the ranks
        assert sum(n - 1 for n in dup.values()) == ranks - length % ranks
    if not drop_last:
        assert set(got) == set(range(length))
    # the harness's own epochs (ranks x the per-rank length) are exactly once with drop_last on or off
    harness = epoch_indices(config, _Indices(length * ranks * batch), epoch=epoch)
    assert sorted(i for r in harness for i in r) == list(range(length * ranks * batch))


def test_set_epoch_reshuffles_the_ranks_shares() -> None:
    config = LoaderConfig(batch_size=4, ranks=2, shuffle=True)
    first, second = epoch_indices(config, _Indices(64), epoch=0), epoch_indices(config, _Indices(64), epoch=1)
    assert first != second
    assert sorted(i for r in first for i in r) == sorted(i for r in second for i in r) == list(range(64))


@given(length=st.integers(0, 80), ranks=st.integers(1, 4), workers=st.integers(0, 3))
def test_iterable_datasets_shard_by_rank_and_worker_exactly_once(length: int, ranks: int, workers: int) -> None:
    seen: list[int] = []
    for rank in range(ranks):
        ds = datasets.IterableSleepDataset(length, latency_s=0, shape=(1,), with_index=True)
        ds.rank, ds.ranks = rank, ranks
        for worker in range(max(1, workers)):
            info = None if workers == 0 else SimpleNamespace(num_workers=workers, id=worker)
            with pytest.MonkeyPatch.context() as m:
                m.setattr(datasets, "get_worker_info", lambda info=info: info)
                seen.extend(index for index, _ in ds)
    assert sorted(seen) == list(range(length))


# --- ranks reading the same samples -------------------------------------------------------------------------------
class _Stream(torch.utils.data.IterableDataset[Any]):
    def __init__(self, start: int, step: int, constant: bool = False) -> None:
        self.start, self.step, self.constant = start, step, constant

    def __iter__(self) -> Any:
        for i in range(self.start, 100, self.step):
            yield torch.zeros(2) if self.constant else (torch.full((2,), float(i)), {"label": i})


@given(ranks=st.integers(2, 6), first=st.integers(0, 10))
def test_any_number_of_ranks_reading_one_stream_is_detected_and_sharded_ones_are_not(ranks: int, first: int) -> None:
    assert same_samples([sample_fingerprints(_Stream(first, 1)) for _ in range(ranks)])
    assert not same_samples([sample_fingerprints(_Stream(first + r, ranks)) for r in range(ranks)])


def test_ranks_reading_the_same_samples_are_told_apart_from_sharded_and_constant_ones() -> None:
    unsharded = [sample_fingerprints(_Stream(0, 1)) for _ in range(3)]
    sharded = [sample_fingerprints(_Stream(r, 3)) for r in range(3)]
    constant = [sample_fingerprints(_Stream(0, 1, constant=True)) for _ in range(3)]
    assert same_samples(unsharded) and not same_samples(sharded) and not same_samples(constant)
    assert not same_samples(unsharded[:1]) and not same_samples([[], []])
    text = same_samples_message("x-cpu-w0-bs4-ranks3", 3)
    assert "ranks read the same samples" in text and "get_rank()" in text and "DistributedSampler" in text


# --- the launcher -------------------------------------------------------------------------------------------------
CASE = Case(Workload(name="io", kind="sleep", params={"latency_s": 0.001}), LoaderConfig(batch_size=8, ranks=2))
CID = "io-cpu-w0-bs8-ranks2"
TORCHRUN_SUMMARY = """
Root Cause (first observed failure):
[0]:
  time      : 2026-12-02_04:55:01
  host      : box
  rank      : 1 (local_rank: 1)
  exitcode  : -9 (pid: 4242)
  error_file: <N/A>
  traceback : Signal 9 (SIGKILL) received by PID 4242
"""


def test_the_root_cause_is_preferred_over_ranks_that_waited_for_it(tmp_path: Path) -> None:
    launch.write_json(
        launch.error_path(tmp_path, 0),
        {"rank": 0, "message": f"case {CID} failed: rank 0 of 2 waited", "kind": "rank-wait", "phase": "p"},
    )
    launch.write_json(
        launch.error_path(tmp_path, 1),
        {"rank": 1, "message": f"case {CID} failed: the dataset raised KeyError", "kind": "dataset", "phase": "q"},
    )
    exc = launch.diagnose(CASE, tmp_path, "", 1, timed_out=False, limit=10)
    assert str(exc).startswith(f"case {CID} failed on rank 1 of 2: the dataset raised KeyError.")
    assert "Rank(s) 0 were waiting for it" in str(exc) and exc.kind == "dataset" and exc.phase == "q"


def test_a_rank_killed_by_a_signal_is_read_from_torchrun_s_summary(tmp_path: Path) -> None:
    exc = launch.diagnose(CASE, tmp_path, "noise\n" + TORCHRUN_SUMMARY, 1, timed_out=False, limit=10)
    assert exc.kind == "rank-died" and f"case {CID} failed: rank 1 of 2 was killed by SIGKILL" in str(exc)


def test_a_rank_that_died_while_another_waited_is_named_not_the_waiting_one(tmp_path: Path) -> None:
    launch.write_json(
        launch.error_path(tmp_path, 0),
        {"rank": 0, "message": f"case {CID} failed: rank 0 of 2 waited", "kind": "rank-wait", "phase": "p"},
    )
    exc = launch.diagnose(CASE, tmp_path, TORCHRUN_SUMMARY, 1, timed_out=False, limit=10)
    assert exc.kind == "rank-died" and "rank 1 of 2 was killed by SIGKILL" in str(exc)
    assert "Rank(s) 0 were waiting for it" in str(exc)
    silent = launch.diagnose(CASE, tmp_path, TORCHRUN_SUMMARY.replace(": 1 (", ": 0 ("), 1, timed_out=False, limit=1)
    assert silent.kind == "hang" and "rank(s) 1 of 2 stopped stepping and reported no error" in str(silent)


def test_a_timed_out_job_names_the_ranks_without_a_result(tmp_path: Path) -> None:
    (launch.done_path(tmp_path, 0)).write_text("{}")
    exc = launch.diagnose(CASE, tmp_path, "", -9, timed_out=True, limit=12.0)
    assert exc.kind == "hang" and "rank(s) 1 of 2 did not finish within 12 s" in str(exc)
    other = launch.diagnose(CASE, tmp_path, "a\nb\nlast words", 1, timed_out=False, limit=12.0)
    assert other.kind == "ranks" and "last words" in str(other) and "exit code 1" in str(other)


@pytest.mark.slow
def test_the_launcher_kills_the_whole_tree_on_timeout() -> None:
    child = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True); time.sleep(60)"  # noqa: E501
    proc = subprocess.Popen([sys.executable, "-c", child], start_new_session=True)
    deadline = time.monotonic() + 10
    while not psutil.Process(proc.pid).children() and time.monotonic() < deadline:
        time.sleep(0.05)
    grandchild = psutil.Process(proc.pid).children()[0]
    assert launch._wait(proc, 0.5) is True
    assert proc.returncode is not None and not grandchild.is_running()


def test_the_default_timeout_follows_the_plan() -> None:
    from loaderbench import Plan

    assert launch.default_timeout_s(Plan(batch_timeout_s=math.inf)) is None
    assert launch.default_timeout_s(Plan(batch_timeout_s=10, rounds=5, round_s=0.25)) == pytest.approx(89.0)


def test_a_case_that_cannot_be_pickled_is_a_clear_failure() -> None:
    workload = Workload(name="lam", kind="user", params={"dataset": lambda: _Indices(4)})
    case = Case(workload, LoaderConfig(batch_size=2, ranks=2))
    with pytest.raises(CaseFailed) as info:
        launch.launch(case, launch.Plan())
    assert info.value.kind == "pickling" and "module level" in str(info.value)


def test_a_cuda_case_needs_a_gpu_per_rank() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    case = Case(
        CASE.workload,
        LoaderConfig(num_workers=1, batch_size=8, ranks=2, multiprocessing_context="spawn"),
        device="cuda",
    )
    with pytest.raises(CaseFailed) as info:
        launch.launch(case, launch.Plan())
    assert info.value.kind == "ranks" and "--loader-ranks=2 but this machine has 0 GPU(s)" in str(info.value)


# --- tune --ranks and the A/B ---------------------------------------------------------------------------------------
def test_the_core_note_says_where_ranks_times_workers_over_subscribe() -> None:
    assert not oversubscribed(2, 1, 2) and oversubscribed(2, 2, 2) and oversubscribed(4, 0, 2)
    assert first_oversubscribed(2, 8) == 5
    fits = core_note(2, 4, cpus=8)
    assert "2 ranks x 4 worker(s) per rank = 8 loading processes on 8 CPUs" in fits
    assert "from 5 workers per rank (2 x 5 = 10 > 8)" in fits and fits.endswith("this setting does not.")
    assert "and this setting does" in core_note(2, 6, cpus=8)


def test_tune_spec_ranks_split_the_worker_cap_and_add_a_per_rank_rule() -> None:
    with pytest.raises(UsageError, match=r"ranks=0: must be a positive integer"):
        TuneSpec(factory="m:f", ranks=0)
    assert TuneSpec(factory="m:f", ranks=4).worker_cap == max(4, auto_worker_cap() // 4)
    assert TuneSpec(factory="m:f", ranks=4, max_workers=3).worker_cap == 3
    assert list(rank_rules(2)) == ["affinity CPUs / 2 ranks"] and rank_rules(1) == {}


def test_the_ab_child_runs_the_cases_in_the_spec_s_ranks(tmp_path: Path) -> None:
    scenarios = tmp_path / "w.toml"
    scenarios.write_text('[[workload]]\nname = "io"\nkind = "sleep"\nlatency_s = 0.001\nbatch_size = 8\n')
    spec = ChildSpec(scenarios=str(scenarios), tier="smoke", device="cpu", rounds=2, round_s=0.1,
                     batch_timeout_s=None, ranks=2)  # fmt: skip
    again = ChildSpec.from_json(spec.to_json())
    assert again == spec and "ranks" not in dataclasses.replace(spec, ranks=1).to_json()
    cases = select_cases(again)
    assert cases and all(c.config.ranks == 2 and c.id.endswith("-ranks2") for c in cases)
    assert "--loader-ranks=2" in pytest_args(again, ["t.py::test_x"], str(tmp_path))


@pytest.mark.parametrize(
    ("args", "several"),
    [
        ("", False),
        ("--standalone --nproc-per-node=2", False),
        ("--nnodes=2 --node-rank=0 --rdzv-endpoint=h:1", True),
        ("--nnodes 2 --node-rank 1", True),
        ("--nnodes=1 --nproc-per-node=8", False),
        ("--nnodes=1:4 --rdzv-backend=c10d", True),
        ("--nnodes=two", False),
        ("--nproc-per-node=2 --nnodes", False),
    ],
)
def test_several_nodes_reads_the_torchrun_arguments(monkeypatch: pytest.MonkeyPatch, args: str, several: bool) -> None:
    monkeypatch.setenv(launch.TORCHRUN_ARGS_ENV, args)
    assert launch.several_nodes() is several


def test_a_ranked_case_on_several_nodes_is_not_confirmed_or_remeasured_in_a_fresh_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its fresh process would rendezvous with nodes whose runs are over and wait for ever (seen: node 0's
    recording hung measuring the case's noise in a fresh process after node 1 had finished)."""
    ranked = Measurement.from_raw({"samples_per_s": [1.0]}, workload="w", config=LoaderConfig(batch_size=4, ranks=2))
    alone = Measurement.from_raw({"samples_per_s": [1.0]}, workload="v", config=LoaderConfig(batch_size=4))
    ids = [ranked.case_id, alone.case_id]
    monkeypatch.setenv(launch.TORCHRUN_ARGS_ENV, "--nnodes=2 --node-rank=0 --rdzv-endpoint=h:1")
    assert confirm.on_this_node(ids, [ranked, alone]) == [alone.case_id]
    spec = ChildSpec(scenarios="", tier="smoke", device="cpu", rounds=2, round_s=0.05, batch_timeout_s=None)
    with pytest.raises(LoaderbenchError, match=r"several nodes .* rerun every node to confirm"):
        confirm.confirmer(spec, {}, [ranked, alone])([ranked.case_id])
    monkeypatch.setenv(launch.TORCHRUN_ARGS_ENV, "--standalone --nproc-per-node=2")
    assert confirm.on_this_node(ids, [ranked, alone]) == ids


@pytest.mark.parametrize("other", ["io-cpu-w2-bs8-ranks2", None])
def test_ranks_that_run_different_cases_fail_naming_both(monkeypatch: pytest.MonkeyPatch, other: str | None) -> None:
    """Nodes whose pytest runs fell out of step join one rendezvous with different cases: refused by name."""
    ids = [CASE.id, other or CASE.id]

    def all_gather_object(out: list[Any], mine: Any) -> None:
        assert mine == CASE.id
        out[:] = ids

    monkeypatch.setattr(rank_main.dist, "all_gather_object", all_gather_object)
    if other is None:
        rank_main._check_same_case(CASE, 0, 2)  # the same case on every rank: nothing to say
        return
    with pytest.raises(CaseFailed) as info:
        rank_main._check_same_case(CASE, 1, 2)
    assert info.value.kind == FailureKind.RANKS and info.value.phase == "joining the process group"
    assert f"rank 1 of 2: the ranks run different cases ({CASE.id}, {other})" in str(info.value)
    assert "same selection, on every node" in str(info.value)
