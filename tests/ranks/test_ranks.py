"""Multi-rank cases end to end: 2 ranks started by torch.distributed.run (gloo) on this machine, through the
plugin and through ``run_case``; faults in one rank (a worker raising, the rank killed, the rank hung, ranks
reading the same samples) each fail the case with one paragraph naming the rank and the case, and leave no
rank or worker process behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch
from torch.utils.data import Dataset, IterableDataset

from loaderbench import CaseFailed, LoaderConfig, Plan, Workload
from loaderbench.engine.case import Case
from loaderbench.selection.run import run_case

PLAN = Plan(rounds=2, round_s=0.05, batch_timeout_s=60)
MINE = """
import torch
from torch.utils.data import Dataset
from loaderbench import LoaderConfig


class Mine(Dataset):
    def __len__(self):
        return 1000

    def __getitem__(self, i):
        return torch.zeros(4)


def test_mine(loader_benchmark):
    m = loader_benchmark(Mine(), LoaderConfig(batch_size=8))
    assert m.extra["ranks"] == 2 and m.case_id == "test_mine-cpu-w0-bs8-ranks2"
"""


# --- faulty datasets: module level, so the ranks unpickle them by reference -----------------------------------------
class _OnRank(Dataset[torch.Tensor]):
    """A map-style dataset whose rank 1 misbehaves from sample ``at`` (the rank from torchrun's ``RANK``, which
    the rank's workers inherit: the dataset itself is built in the test's process)."""

    def __init__(self, at: int = 40) -> None:
        self.at = at
        self.calls = 0

    def __len__(self) -> int:
        return 100_000

    def fault(self) -> None:
        raise NotImplementedError

    def __getitem__(self, index: int) -> torch.Tensor:
        self.calls += 1
        if os.environ.get("RANK") == "1" and self.calls > self.at:
            self.fault()
        return torch.zeros(4)


class RaisingOnRank1(_OnRank):
    def fault(self) -> None:
        raise ValueError("sample is corrupt")


class KilledOnRank1(_OnRank):
    def fault(self) -> None:
        os.kill(os.getpid(), signal.SIGKILL)


class HungOnRank1(_OnRank):
    def fault(self) -> None:
        while True:
            time.sleep(0.05)


class Unsharded(IterableDataset[torch.Tensor]):
    """An iterable dataset that ignores the rank: every rank reads the same samples."""

    def __iter__(self) -> Iterator[torch.Tensor]:
        for i in range(100_000):
            yield torch.full((4,), float(i))


def _user_case(dataset: Any, name: str, **config: Any) -> Case:
    settings = {"batch_size": 4, "ranks": 2, **config}
    workload = Workload(name=name, kind="user", batch_size=4, params={"dataset": dataset})
    return Case(workload, LoaderConfig(**settings))


#: Set in this test's environment, inherited by everything it starts: tells its rank jobs from another run's.
TAG = "LOADERBENCH_TEST_RANKS_TAG"


def _leftovers(since: float, tag: str) -> list[psutil.Process]:
    """Processes of this test's rank jobs started after ``since``: torchrun, the ranks and their workers (another
    test run's rank jobs on the machine are not this test's leftovers)."""
    found = []
    for p in psutil.process_iter(["cmdline", "create_time"]):
        cmd = " ".join(p.info["cmdline"] or ())
        ours = "torch.distributed.run" in cmd or "ranks.rank_main" in cmd
        if not ours or p.info["create_time"] < since - 1 or p.pid == os.getpid():
            continue
        try:
            if p.environ().get(TAG) == tag:
                found.append(p)
        except psutil.Error:
            continue
    return found


@pytest.fixture
def no_leftovers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    tag = f"{os.getpid()}-{time.monotonic_ns()}"
    monkeypatch.setenv(TAG, tag)
    since = time.time()
    yield
    left = _leftovers(since, tag)
    assert not left, f"left behind: {[(p.pid, p.info['cmdline']) for p in left]}"


@pytest.mark.slow
def test_two_ranks_through_the_plugin_record_the_job_and_its_ranks(suite_project: Any, no_leftovers: None) -> None:
    pytester = suite_project(0.0005, suite_project.ALL_TIERS)
    pytester.makepyfile(test_mine=MINE)  # beside the suite's case, a user's loader_benchmark
    result = pytester.runpytest_subprocess(
        "--benchmark",
        "--loader-scenarios=workloads.toml",
        "--loader-rounds=3",
        "--loader-round-seconds=0.05",
        "--loader-config=w1-bs8",
        "--loader-ranks=2",
        "--loader-baseline-save",
        "--loader-baseline-dir=baselines",
        "--benchmark-json=out.json",
    )
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*ranks=2*", "*in 2 ranks each*"])
    benchmarks = json.loads((pytester.path / "out.json").read_text())["benchmarks"]
    info = next(b["extra_info"] for b in benchmarks if "tiny-io" in b["name"])
    assert info["case_id"] == "tiny-io-cpu-w1-bs8-ranks2" and info["config_id"].endswith("ranks2")
    assert info["ranks"] == 2 and info["slowest_rank"] in (0, 1)
    for key in ("rank_samples_per_s", "rank_ttfb_s", "rank_data_wait_s", "rank_step_s", "rank_collective_wait_s"):
        assert len(info[key]) == 2 and all(v is not None and v >= 0 for v in info[key]), key
    # the job's rate is the sum over ranks of the synchronised step rate, round by round
    assert len(info["rounds"]["samples_per_s"]) == 3
    assert info["samples_per_s"] == pytest.approx(sum(info["rank_samples_per_s"]), rel=0.25)
    assert info["peak_memory_bytes"] == sum(info["rank_peak_memory_bytes"]) > 0
    assert info["launch_s"] > 0 and info["ideal_samples_per_s"] == pytest.approx(2 * 1 / 0.0005)
    stored = "".join(p.read_text() for p in (pytester.path / "baselines").rglob("*.json"))
    assert "tiny-io-cpu-w1-bs8-ranks2" in stored  # the baseline key includes the rank count
    assert "test_mine-cpu-w0-bs8-ranks2" in stored


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_two_nodes_on_loopback_record_the_job_on_node_zero_only(suite_project: Any, no_leftovers: None) -> None:
    """The several-nodes recipe of docs/ranks.md, both nodes on this machine: two pytest processes, one rank
    each, joined by torchrun's static rendezvous on 127.0.0.1 (gloo); node 0 records the job's one case with
    ``ranks=2``, node 1 records nothing and says where the result is."""
    pytester = suite_project(0.0005, suite_project.ALL_TIERS)
    endpoint = f"127.0.0.1:{_free_port()}"
    nodes = []
    for rank in (0, 1):
        env = dict(os.environ)
        args = f"--nnodes=2 --node-rank={rank} --nproc-per-node=1 --rdzv-endpoint={endpoint}"
        env["LOADERBENCH_TORCHRUN_ARGS"] = args
        argv = [
            sys.executable, "-m", "pytest", "--benchmark", "--loader-scenarios=workloads.toml",
            "--loader-config=w1-bs8", "--loader-ranks=2", "--loader-rounds=2", "--loader-round-seconds=0.05",
            "--loader-baseline-save", f"--loader-baseline-dir=node{rank}", "-p", "no:cacheprovider", "-rs",
        ]  # fmt: skip
        log = (pytester.path / f"node{rank}.log").open("w")
        nodes.append(subprocess.Popen(argv, cwd=pytester.path, env=env, stdout=log, stderr=subprocess.STDOUT))
        log.close()
    try:
        for node in nodes:
            node.wait(timeout=300)
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
                node.wait()
    outs = [(pytester.path / f"node{rank}.log").read_text() for rank in (0, 1)]
    assert [n.returncode for n in nodes] == [0, 0], "\n\n".join(outs)
    stored = [p.read_text() for p in (pytester.path / "node0").rglob("*.json")]
    assert len(stored) == 1 and "tiny-io-cpu-w1-bs8-ranks2" in stored[0], outs[0]
    assert json.loads(stored[0])["cases"]["tiny-io-cpu-w1-bs8-ranks2"]["runs"][0]["config"]["ranks"] == 2
    assert not list((pytester.path / "node1").rglob("*.json")), outs[1]
    assert "recorded on the node that runs rank 0" in outs[1]


def test_a_bad_rank_count_is_a_usage_error(suite_project: Any) -> None:
    pytester = suite_project(0.0005, suite_project.ALL_TIERS)
    result = pytester.runpytest("--benchmark", "--loader-scenarios=workloads.toml", "--loader-ranks=0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--loader-ranks='0' must be >= 1*"])


@pytest.mark.slow
def test_a_worker_raising_in_one_rank_names_the_rank_and_the_case(no_leftovers: None) -> None:
    case = _user_case(RaisingOnRank1(), "raising", num_workers=1)
    with pytest.raises(CaseFailed) as info:
        run_case(case, PLAN)
    text = str(info.value)
    assert text.startswith(f"case {case.id} failed on rank 1 of 2:") and "sample is corrupt" in text
    assert "Traceback" not in text and "\n" not in text


@pytest.mark.slow
def test_a_killed_rank_names_the_rank_and_the_signal(no_leftovers: None) -> None:
    case = _user_case(KilledOnRank1(), "killed")
    with pytest.raises(CaseFailed) as info:
        run_case(case, PLAN)
    assert info.value.kind == "rank-died" and info.value.case == case.id
    assert f"case {case.id} failed: rank 1 of 2 was killed by SIGKILL" in str(info.value)


@pytest.mark.slow
def test_a_hung_rank_is_stopped_by_its_watchdog_and_named(no_leftovers: None) -> None:
    case = _user_case(HungOnRank1(), "hung")
    with pytest.raises(CaseFailed) as info:
        run_case(case, Plan(rounds=2, round_s=0.05, batch_timeout_s=3))
    assert str(info.value).startswith(f"case {case.id} failed on rank 1 of 2:")
    assert info.value.kind in ("hang", "timeout")


@pytest.mark.slow
def test_ranks_reading_the_same_samples_are_detected_with_the_fix(no_leftovers: None) -> None:
    case = _user_case(Unsharded(), "unsharded")
    with pytest.raises(CaseFailed) as info:
        run_case(case, PLAN)
    assert info.value.kind == "same-samples"
    assert "ranks read the same samples" in str(info.value) and "DistributedSampler" in str(info.value)


@pytest.mark.slow
def test_the_next_case_runs_after_a_failed_one(no_leftovers: None) -> None:
    workload = Workload(name="io", kind="sleep", batch_size=4, params={"latency_s": 0.0005, "shape": [2]})
    m = run_case(Case(workload, LoaderConfig(batch_size=4, ranks=2)), PLAN)
    assert m.extra["ranks"] == 2 and m.case_id == "io-cpu-w0-bs4-ranks2" and m.samples_per_s > 0


APP = """
import time
import torch
from torch.utils.data import Dataset


class Slow(Dataset):
    def __len__(self):
        return 4096

    def __getitem__(self, i):
        time.sleep(0.001)
        return torch.zeros(4)


def make():
    return Slow()
"""


def _tune(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "rankapp.py").write_text(APP)
    command = [sys.executable, "-m", "loaderbench.cli", "tune", "rankapp:make", *args]
    return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.slow
def test_tune_with_ranks_answers_workers_per_rank_on_the_shared_cores(tmp_path: Path, no_leftovers: None) -> None:
    args = ("--ranks=2", "--budget=8", "--max-workers=1", "--rounds=2", "--round-seconds=0.05", "--batch-size=8")
    proc = _tune(tmp_path, *args, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    out = " ".join(proc.stdout.split())
    assert "2 ranks;" in out and "Per rank, in each of 2 ranks (torchrun --nproc-per-node=2)" in out
    assert "over-subscribe the cores" in out and "-ranks2" in out
    assert "Traceback" not in proc.stderr


def test_tune_rejects_a_bad_rank_count(tmp_path: Path) -> None:
    proc = _tune(tmp_path, "--ranks=0")
    assert proc.returncode == 2 and "--ranks='0' must be >= 1" in proc.stderr
