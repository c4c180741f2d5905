"""The pipeline axis: each pipeline through the harness's phases, its failures, the registry and the
"which pipeline" report table (behaviour only, never timings)."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from dataclasses import dataclass
from typing import Any

import psutil
import pytest
import torch
from torch.utils.data import Dataset

from loaderbench import CaseFailed, LoaderConfig, Plan, measure
from loaderbench.config_rules import PIPELINE_FACTS, PIPELINE_UNSUPPORTED, PIPELINES
from loaderbench.engine.case import Case
from loaderbench.measurement import Measurement, from_extra_info
from loaderbench.pipelines import registry
from loaderbench.pytest_plugin import plugin
from loaderbench.report import markdown, pipelines, terminal
from loaderbench.workloads.recipes import Workload

TINY = Plan(rounds=2, round_s=0.01, warmup_batches=1, min_batches_per_round=2)
SLEEPY = Workload(name="sleepy", kind="sleep", batch_size=4, params={"latency_s": 1e-4})


def needs(name: str) -> Any:
    """A parameter for pipeline ``name``, skipped with the registry's one reason where it is not installed."""
    reason = registry.unavailable_reason(name)
    return pytest.param(name, marks=pytest.mark.skipif(reason is not None, reason=reason or ""), id=name)


ALL = [needs(p) for p in PIPELINES]
PROCESSES = {name for name, facts in PIPELINE_FACTS.items() if facts.processes}


def config_for(pipeline: str, **fields: Any) -> LoaderConfig:
    if pipeline in PROCESSES and fields.get("num_workers"):
        fields.setdefault("multiprocessing_context", "fork")
    return LoaderConfig(pipeline=pipeline, **fields)


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def _shm() -> set[str]:
    return {n for n in os.listdir("/dev/shm") if n.startswith("torch_")} if os.path.isdir("/dev/shm") else set()


def _leaked(before: set[str]) -> set[str]:
    """torch segments new since ``before`` that stay, less those of another live program (other suites run
    beside this one): a segment whose creator is alive and not a process of this test is not ours."""
    new = _shm() - before
    if new:
        time.sleep(0.5)
        new &= _shm()
    ours = _children() | {os.getpid()}
    return {n for n in new if not (psutil.pid_exists(int(n.split("_")[1])) and int(n.split("_")[1]) not in ours)}


# --- every pipeline through every phase -----------------------------------------------------------------------------


@pytest.mark.parametrize("pipeline", ALL)
@pytest.mark.parametrize("workers", [0, 2])
def test_each_pipeline_runs_every_phase_and_says_which_it_was(pipeline: str, workers: int) -> None:
    before, shm = _children(), _shm()
    config = config_for(pipeline, batch_size=4, num_workers=workers)
    m = measure(SLEEPY, config, plan=TINY)
    assert m.samples_per_s > 0 and m.steady_batches >= 4
    for phase in ("startup_s", "ttfb_s", "epoch_end_s", "epoch_stall_s", "shutdown_s"):
        assert m.phases[phase] >= 0, phase
    info = m.extra_info()
    assert info["pipeline"] == pipeline
    assert info["config_id"] == config.id and (pipeline == "dataloader") == (not config.id.endswith(pipeline))
    assert info["cpu_s_per_sample"] >= 0
    assert m.peak_memory_bytes and m.peak_memory_bytes > 0
    assert from_extra_info(info).config == config
    assert _children() <= before
    assert not _leaked(shm)


SPIN = Workload(name="spin", kind="spin", batch_size=4, params={"cost_s": 0.002, "shape": [2]})


@pytest.mark.parametrize("pipeline", [needs("dataloader"), needs("nodesprocess"), needs("stateful")])
def test_process_pipelines_count_their_workers_memory_and_cpu(pipeline: str) -> None:
    config = config_for(pipeline, batch_size=4, num_workers=2, shuffle=True, in_order=False, prefetch_factor=3)
    m = measure(SLEEPY, config, plan=TINY)
    assert m.extra["cpu_s_per_sample"] > 0
    assert m.notes == ()
    # 2 ms of CPU per sample spent in the workers: counted only if the workers' CPU time is (the main process
    # only receives and collates, a few microseconds per sample)
    spun = measure(SPIN, config_for(pipeline, batch_size=4, num_workers=2), plan=TINY)
    assert spun.extra["cpu_s_per_sample"] >= 0.001, spun.extra


@pytest.mark.parametrize("pipeline", [needs("nodesthread"), needs("spdl")])
def test_pinning_without_an_accelerator_is_a_note_as_for_dataloader(pipeline: str) -> None:
    if torch.accelerator.is_available():
        pytest.skip("an accelerator is present: pinning works")
    m = measure(SLEEPY, config_for(pipeline, batch_size=4, num_workers=1, pin_memory=True), plan=TINY)
    assert any("pins nothing" in n for n in m.notes)


# --- failures --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pipeline", ALL)
def test_a_failing_sample_gives_one_clear_message_and_leaves_nothing(pipeline: str, failing_workload: Workload) -> None:
    before, shm = _children(), _shm()
    config = config_for(pipeline, batch_size=4, num_workers=2)
    with pytest.raises(CaseFailed) as info:
        measure(failing_workload, config, plan=TINY)
    text = str(info.value)
    assert text.startswith(f"case failing-cpu-{config.id} failed: the dataset or collate raised KeyError")
    assert "sample 40 is missing" in text and "Remedy:" in text and "\n" not in text
    assert _children() <= before
    assert not _leaked(shm)


class Dying(Dataset[torch.Tensor]):
    """Sample 40 kills the worker process that reads it (SIGKILL, as the OOM killer does)."""

    def __init__(self) -> None:
        self.parent = os.getpid()

    def __len__(self) -> int:
        return 1000

    def __getitem__(self, index: int) -> torch.Tensor:
        if index == 40 and os.getpid() != self.parent:
            os.kill(os.getpid(), signal.SIGKILL)
        return torch.zeros(2)


@dataclass(frozen=True, slots=True)
class DyingWorkload(Workload):
    def build(self, length: int, workdir: Any = None) -> Dataset[Any]:
        return Dying()


def test_a_killed_nodes_process_worker_fails_the_case_at_once_naming_the_signal() -> None:
    if registry.unavailable_reason("nodesprocess"):
        pytest.skip(registry.unavailable_reason("nodesprocess") or "")
    before, shm = _children(), _shm()
    wl = DyingWorkload(name="dying", kind="sleep", batch_size=4, params={"latency_s": 0.0001})
    config = config_for("nodesprocess", batch_size=4, num_workers=2)
    with pytest.raises(CaseFailed) as info:  # the watchdog's limit is 120 s: the guard must end it long before
        measure(wl, config, plan=dataclasses.replace(TINY, batch_timeout_s=60))
    assert info.value.kind == "worker-killed", str(info.value)
    assert "SIGKILL" in str(info.value) and "\n" not in str(info.value)
    assert _children() <= before
    assert not _leaked(shm)


@pytest.mark.parametrize("pipeline", [needs("nodesthread"), needs("nodesprocess"), needs("spdl")])
def test_map_only_pipelines_refuse_an_iterable_workload_in_one_paragraph(pipeline: str) -> None:
    wl = Workload(name="stream", kind="iterable-sleep", batch_size=4, params={"latency_s": 1e-4})
    with pytest.raises(CaseFailed) as info:
        measure(wl, config_for(pipeline, batch_size=4), plan=TINY)
    assert info.value.kind == "pipeline"
    assert "IterableDataset" in str(info.value) and "pipeline='dataloader'" in str(info.value)
    assert "\n" not in str(info.value)


def test_a_missing_pipeline_fails_its_case_with_the_one_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.REQUIRES, "spdl", (("loaderbench_no_such_module", "spdl"),))
    registry.unavailable_reason.cache_clear()
    try:
        reason = registry.unavailable_reason("spdl")
        assert reason is not None and 'pip install "loaderbench[rivals]"' in reason and "spdl" in reason
        assert not registry.is_available("spdl") and "spdl" not in registry.installed()
        with pytest.raises(CaseFailed) as info:
            measure(SLEEPY, LoaderConfig(batch_size=4, num_workers=1, pipeline="spdl"), plan=TINY)
        assert info.value.kind == "pipeline" and reason in str(info.value)
        # the plugin skips such a case with that one reason instead of running it into the failure
        marks = plugin._marks(Case(SLEEPY, LoaderConfig(batch_size=4, num_workers=1, pipeline="spdl")))
        assert [m.kwargs.get("reason") for m in marks if m.name == "skip"] == [reason]
        assert not [m for m in plugin._marks(Case(SLEEPY, LoaderConfig(batch_size=4))) if m.name == "skip"]
    finally:
        monkeypatch.undo()
        registry.unavailable_reason.cache_clear()


def test_the_registry_knows_every_pipeline() -> None:
    assert set(registry.REQUIRES) == set(PIPELINES)
    assert registry.unavailable_reason("dataloader") is None
    assert "not a known pipeline" in (registry.unavailable_reason("nope") or "")
    assert registry.installed()[0] == "dataloader"


@pytest.mark.parametrize("pipeline", list(PIPELINES))
def test_nearest_keeps_what_a_pipeline_can_run_and_drops_the_rest(pipeline: str) -> None:
    full = LoaderConfig(
        batch_size=8,
        num_workers=2,
        prefetch_factor=4,
        persistent_workers=True,
        multiprocessing_context="fork",
        timeout=30.0,
        shuffle=True,
        batching="sampler",
    )
    near = registry.nearest(full, pipeline)
    assert near.pipeline == pipeline
    assert (near.batch_size, near.num_workers, near.prefetch_factor, near.shuffle) == (8, 2, 4, True)
    for name in PIPELINE_UNSUPPORTED.get(pipeline, ()):
        assert getattr(near, name) == getattr(LoaderConfig(), name)


# --- the "which pipeline" table --------------------------------------------------------------------------------------


def _case(pipeline: str, workers: int, rate: float, cpu: float, memory: int, workload: str = "decode") -> Measurement:
    config = LoaderConfig(batch_size=32, num_workers=workers, pipeline=pipeline)
    m = Measurement.from_raw({"samples_per_s": [rate] * 3}, {"peak_memory_bytes": memory}, workload=workload)
    return Measurement(
        **{**{f: getattr(m, f) for f in m.__slots__}, "config": config, "extra": {"cpu_s_per_sample": cpu}}
    )


CASES = [
    _case("dataloader", 0, 100.0, 0.010, 400_000_000),
    _case("dataloader", 2, 180.0, 0.012, 900_000_000),
    _case("nodesthread", 2, 150.0, 0.009, 450_000_000),
    _case("spdl", 2, 240.0, 0.008, 500_000_000),
    _case("spdl", 1, 120.0, 0.008, 480_000_000),
    _case("dataloader", 2, 50.0, 0.001, 1, workload="io"),  # one pipeline only: no table
]


def test_the_table_shows_each_pipelines_best_fastest_first() -> None:
    compared = pipelines.compared_groups(CASES)
    assert list(compared) == [("decode", "cpu")]
    tops = compared[("decode", "cpu")]
    assert [(m.config.pipeline, m.config.num_workers) for m in tops] == [
        ("spdl", 2),
        ("dataloader", 2),
        ("nodesthread", 2),
    ]
    rows = pipelines.rows(tops)
    assert rows[0][:6] == ["spdl", "w2-bs32-spdl", "240", "1.33x", "8ms", "500.0 MB"]
    assert rows[1][3] == "1.00x" and rows[1][4] == "12ms" and rows[2][4] == "9ms"
    assert pipelines.fmt_cpu(9.53e-5) == "95.3us" and pipelines.fmt_cpu(None) == "-"
    assert "fastest: spdl" in pipelines.verdict(tops) and "1.33x DataLoader's best (w2-bs32)" in pipelines.verdict(tops)


def test_the_markdown_and_terminal_reports_carry_the_table_only_when_pipelines_were_compared() -> None:
    text = markdown.markdown_report(CASES)
    assert "## Which pipeline" in text and "| spdl | w2-bs32-spdl |" in text
    assert text.index("## Which pipeline") > text.index("## Fastest configuration per workload")
    lines = terminal.terminal_report(CASES, width=100)
    assert all(len(line) <= 100 for line in lines)
    assert any(line.startswith("decode on cpu: fastest: spdl") for line in lines)
    only_dl = [m for m in CASES if m.config.pipeline == "dataloader"]
    assert "Which pipeline" not in markdown.markdown_report(only_dl)
    assert not any("which pipeline" in line for line in terminal.terminal_report(only_dl))


@pytest.mark.parametrize("pipeline", ALL)
def test_ranks_read_disjoint_shares_through_the_same_distributed_sampler(pipeline: str) -> None:
    ds = torch.utils.data.TensorDataset(torch.arange(24))  # even: DistributedSampler pads an odd one
    config = config_for(pipeline, batch_size=4, num_workers=1, shuffle=True, ranks=2)
    shares = []
    for rank in range(2):
        loader = registry.build(pipeline, ds, config.dataloader_kwargs(ds, seed=7, rank=rank), config)
        epochs = []
        for epoch in range(2):
            loader.set_epoch(epoch)
            it = loader.start()
            epochs.append([int(i) for (batch,) in it for i in batch])
            loader.release(it, [], "the epoch's")
        loader.close()
        assert epochs[0] != epochs[1], "set_epoch must change a DistributedSampler's shuffle"
        shares.append(epochs[0])
    assert not set(shares[0]) & set(shares[1])
    assert set(shares[0]) | set(shares[1]) == set(range(24))
