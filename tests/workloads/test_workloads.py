"""Workloads: ideal-throughput maths, scenario loading, user factories, iterable sharding."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from loaderbench import data
from loaderbench.errors import WorkloadError
from loaderbench.workloads.datasets import IterableSleepDataset, sample_latency
from loaderbench.workloads.recipes import Workload, load_factory, load_scenarios

SCENARIOS = data.WORKLOADS


def test_io_scales_past_the_core_count() -> None:
    io = Workload(name="io", kind="sleep", params={"latency_s": 0.002})
    assert io.ideal_samples_per_s(0, cpus=2) == pytest.approx(500.0)
    assert io.ideal_samples_per_s(1, cpus=2) == pytest.approx(500.0)
    assert io.ideal_samples_per_s(8, cpus=2) == pytest.approx(4000.0)


def test_cpu_scales_only_to_the_cpu_count() -> None:
    cpu = Workload(name="cpu", kind="spin", params={"cost_s": 0.001})
    assert cpu.ideal_samples_per_s(0, cpus=2) == pytest.approx(1000.0)
    assert cpu.ideal_samples_per_s(2, cpus=2) == pytest.approx(2000.0)
    assert cpu.ideal_samples_per_s(4, cpus=2) == pytest.approx(2000.0)


def test_skewed_uses_the_mean_cost() -> None:
    skewed = Workload(name="s", kind="skewed", params={"base_s": 0.001, "heavy_s": 0.009, "every": 4})
    assert skewed.sample_cost_s() == pytest.approx(0.003)  # (9 + 3*1) / 4 ms
    assert skewed.ideal_samples_per_s(3, cpus=2) == pytest.approx(1000.0)


def test_no_cost_model_means_no_ideal() -> None:
    assert Workload(name="t", kind="tensor-fill", params={"shape": [3]}).ideal_samples_per_s(2, cpus=2) is None


def test_lognormal_latency_is_seeded_and_has_the_requested_mean() -> None:
    draws = [sample_latency(7, i, 0.001, 0.5) for i in range(20000)]
    assert draws[:5] == [sample_latency(7, i, 0.001, 0.5) for i in range(5)]
    assert sum(draws) / len(draws) == pytest.approx(0.001, rel=0.03)
    assert sample_latency(7, 3, 0.001, 0.0) == 0.001


@pytest.mark.slow
def test_every_scenario_builds_a_dataset_of_the_requested_length(tmp_path: Path) -> None:
    for w in load_scenarios(SCENARIOS).values():
        ds = w.build(64, tmp_path)
        assert len(ds) == 64, w.name  # type: ignore[arg-type]


def test_file_workload_reads_real_files(tmp_path: Path) -> None:
    w = Workload(name="f", kind="file", params={"file_bytes": 1000, "n_files": 3})
    ds = w.build(5, tmp_path)
    sample = ds[4]
    assert sample.dtype == torch.uint8 and sample.numel() == 1000
    assert len(list((tmp_path / "files-f").iterdir())) == 3


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_iterable_sharding_delivers_every_sample_exactly_once(workers: int) -> None:
    ds = IterableSleepDataset(37, latency_s=0.0, shape=(1,), with_index=True)
    loader = DataLoader(ds, batch_size=4, num_workers=workers)
    seen = [int(i) for indices, _ in loader for i in indices]
    assert sorted(seen) == list(range(37))


def test_scenario_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(WorkloadError, match="file not found"):
        load_scenarios(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[workload]\n")
    with pytest.raises(WorkloadError, match="not valid TOML"):
        load_scenarios(bad)
    nameless = tmp_path / "nameless.toml"
    nameless.write_text('[[workload]]\nkind = "sleep"\n')
    with pytest.raises(WorkloadError, match="lacks 'name'"):
        load_scenarios(nameless)
    with pytest.raises(WorkloadError, match="kind='nope'"):
        Workload(name="x", kind="nope")


def test_user_factory_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "userdata.py").write_text(
        "import torch\n"
        "from torch.utils.data import TensorDataset\n"
        "def good(): return TensorDataset(torch.zeros(5, 2))\n"
        "def raises(): raise RuntimeError('disk gone')\n"
        "def wrong(): return [1, 2, 3]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "userdata", raising=False)
    assert len(load_factory("userdata:good")) == 5  # type: ignore[arg-type]
    with pytest.raises(WorkloadError, match="not a 'module:factory' path"):
        load_factory("userdata.good")
    with pytest.raises(WorkloadError, match="cannot import 'nosuchmodule'"):
        load_factory("nosuchmodule:f")
    with pytest.raises(WorkloadError, match="no callable 'missing'"):
        load_factory("userdata:missing")
    with pytest.raises(WorkloadError, match="raised RuntimeError: disk gone"):
        load_factory("userdata:raises")
    with pytest.raises(WorkloadError, match="returned list, not a sized torch Dataset"):
        load_factory("userdata:wrong")


def test_a_bad_factory_path_fails_when_the_scenarios_load(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[[workload]]\nname = "mine"\nkind = "user"\nfactory = "no_such_module_xyz:make"\n')
    with pytest.raises(WorkloadError, match="module 'no_such_module_xyz' is not importable"):
        load_scenarios(path)
    path.write_text('[[workload]]\nname = "mine"\nkind = "user"\nfactory = "just_a_module"\n')
    with pytest.raises(WorkloadError, match="is not a 'module:factory' path"):
        load_scenarios(path)


def test_a_factory_module_that_is_a_namespace_package_says_so_and_names_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # run from the parent of a project folder "mypipe" whose code lives in mypipe/src/...: "mypipe" imports as a
    # namespace package (a folder without __init__.py), with no factory in it
    (tmp_path / "mypipe" / "src").mkdir(parents=True)
    (tmp_path / "userdata2.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("mypipe", "userdata2"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(WorkloadError) as info:
        load_factory("mypipe:make")
    message = str(info.value)
    assert "'mypipe' resolved to a namespace package" in message
    assert str(tmp_path / "mypipe") in message
    with pytest.raises(WorkloadError, match=r"userdata2 has no callable 'make' \(imported from .*userdata2\.py\)"):
        load_factory("userdata2:make")
