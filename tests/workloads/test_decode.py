"""The decode workload (real JPEGs, decoded and augmented like the ImageNet reference) and the big-index canary."""

from __future__ import annotations

import math
import os
import pickle
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from loaderbench import LoaderConfig, Plan, data, measure
from loaderbench.errors import WorkloadError
from loaderbench.workloads import decode
from loaderbench.workloads.datasets import BigIndexDataset
from loaderbench.workloads.recipes import Workload, load_scenarios

SMALL = {"n_files": 6, "width": 120, "height": 90, "quality": 90, "crop": 32}


def small_decode(cache: str = "warm", name: str = "decode-small") -> Workload:
    return Workload(name=name, kind="decode", batch_size=4, params={**SMALL, "cache": cache})


def test_generated_files_are_real_jpegs_of_the_requested_size_and_are_reused(tmp_path: Path) -> None:
    total = decode.make_jpegs(tmp_path, n_files=3, width=500, height=375, quality=90, seed=1)
    files = sorted(tmp_path.glob("*.jpg"))
    assert len(files) == 3 and sum(f.stat().st_size for f in files) == total
    with Image.open(files[0]) as image:
        assert (image.format, image.size, image.mode) == ("JPEG", (500, 375), "RGB")
    assert 30_000 < total / 3 < 200_000  # compresses like a photograph, not like noise or a flat colour
    stamps = [f.stat().st_mtime_ns for f in files]
    decode.make_jpegs(tmp_path, n_files=3, width=500, height=375, quality=90, seed=1)
    assert [f.stat().st_mtime_ns for f in files] == stamps  # kept, not rewritten
    other = tmp_path / "other"
    decode.make_jpegs(other, n_files=1, width=500, height=375, quality=90, seed=2)
    assert (other / "000000.jpg").read_bytes() != files[0].read_bytes()  # the seed changes the content


def test_samples_are_normalised_crops_with_labels_and_reproducible(tmp_path: Path) -> None:
    dataset = small_decode().build(10, tmp_path)
    assert isinstance(dataset, decode.DecodeDataset)
    image, label = dataset[7]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and label == 7
    assert torch.equal(image, dataset[7][0])  # crop and flip are seeded per index
    assert float(image.min()) > -2.2 and float(image.max()) < 2.7  # (x - mean) / std of values in [0, 1]
    with pytest.raises(IndexError):
        dataset[10]
    batch = next(iter(DataLoader(dataset, batch_size=4)))
    assert batch[0].shape == (4, 3, 32, 32) and batch[1].tolist() == [0, 1, 2, 3]


def test_random_resized_crop_follows_torchvision_rules() -> None:
    rng = random.Random(0)
    for _ in range(500):
        left, top, right, bottom = decode.random_resized_crop(500, 375, rng)
        w, h = right - left, bottom - top
        assert 0 <= left < right <= 500 and 0 <= top < bottom <= 375
        assert 0.08 * 500 * 375 * 0.95 <= w * h <= 500 * 375
        assert 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1
    # a strip no draw can fit falls back to the centre crop of the clamped ratio
    assert decode.random_resized_crop(400, 10, random.Random(0)) == (193, 0, 206, 10)


def test_the_cost_model_is_the_decode_time_measured_in_this_process(tmp_path: Path) -> None:
    workload = small_decode(name="decode-cost")
    assert workload.sample_cost_s() is None  # not measured before the first build
    workload.build(8, tmp_path)
    cost = workload.sample_cost_s()
    assert cost is not None and 0 < cost < 1
    assert workload.ideal_samples_per_s(4, cpus=2) == pytest.approx(2 / cost)  # capped by the CPUs
    assert workload.ideal_samples_per_s(0, cpus=2) == pytest.approx(1 / cost)


def test_a_cold_read_leaves_none_of_the_file_in_the_page_cache(tmp_path: Path) -> None:
    if decode.file_system_of(tmp_path) in ("tmpfs", "ramfs"):
        pytest.skip("the temporary directory is in memory (tmpfs): its pages cannot be dropped")
    dataset = small_decode("cold", name="decode-cold-small").build(6, tmp_path)
    assert isinstance(dataset, decode.DecodeDataset) and dataset.cold
    path = Path(dataset.directory) / "000002.jpg"
    path.read_bytes()
    warm = decode.resident_fraction(path)
    if math.isnan(warm):
        pytest.skip("mincore is not available here")
    assert warm == 1.0
    dataset[2]
    assert decode.resident_fraction(path) == 0.0
    # every file is cold from the first read on: the files were just written, and the cost was measured on them
    fresh = small_decode("cold", name="decode-cold-fresh").build(6, tmp_path / "fresh")
    assert isinstance(fresh, decode.DecodeDataset)
    files = sorted(Path(fresh.directory).glob("*.jpg"))
    assert len(files) == 6 and [decode.resident_fraction(f) for f in files] == [0.0] * 6
    assert decode.cold_unavailable(tmp_path) is None


def test_cold_cache_on_a_memory_file_system_is_refused_with_the_fix(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if decode.file_system_of(shm) != "tmpfs":
        pytest.skip("no tmpfs at /dev/shm")
    with pytest.raises(WorkloadError, match=r"cache='cold' cannot drop pages .* tmpfs .* Point TMPDIR at a directory"):
        decode.check_cold(shm, "decode-cold")
    with pytest.raises(WorkloadError, match=r"cache='lukewarm' is not a page-cache state"):
        small_decode("lukewarm").build(4, tmp_path)


def test_decode_measures_through_the_harness_with_workers(tmp_path: Path) -> None:
    m = measure(
        small_decode(name="decode-harness"),
        LoaderConfig(batch_size=4, num_workers=2),
        plan=Plan(rounds=2, round_s=0.05),
        workdir=tmp_path,
    )
    assert len(m.rounds["samples_per_s"]) == 2 and m.samples_per_s > 0
    assert m.ideal_samples_per_s is not None and m.bytes_per_sample >= 3 * 32 * 32 * 4


def test_datasets_with_the_same_parameters_share_one_generated_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each case builds its dataset in a fresh work directory; the JPEGs are generated once per process."""
    monkeypatch.setattr(decode, "_shared", {})  # as in a fresh process
    calls: list[dict[str, int]] = []
    real = decode.make_jpegs

    def counting(directory: Path, **kwargs: int) -> int:
        calls.append(kwargs)
        return real(directory, **kwargs)

    monkeypatch.setattr(decode, "make_jpegs", counting)
    first = small_decode(name="decode-share-a").build(8, tmp_path / "case1")
    second = small_decode(name="decode-share-b").build(12, tmp_path / "case2")
    assert isinstance(first, decode.DecodeDataset) and isinstance(second, decode.DecodeDataset)
    assert first.directory == second.directory and len(calls) == 1
    assert len(list(Path(first.directory).glob("*.jpg"))) == SMALL["n_files"]
    assert torch.equal(first[3][0], second[3][0])  # the same files, the same samples
    other = Workload(name="decode-share-c", kind="decode", batch_size=4, params={**SMALL, "seed": 7}).build(8, tmp_path)
    assert isinstance(other, decode.DecodeDataset) and other.directory != first.directory and len(calls) == 2
    for f in Path(first.directory).glob("*.jpg"):  # files that went missing are written again
        f.unlink()
    again = small_decode(name="decode-share-a").build(8, tmp_path / "case3")
    assert isinstance(again, decode.DecodeDataset) and len(calls) == 3
    assert len(list(Path(again.directory).glob("*.jpg"))) == SMALL["n_files"]


def test_a_shared_set_is_cold_for_a_cold_case_and_warm_for_a_warm_one(tmp_path: Path) -> None:
    if decode.file_system_of(tmp_path) in ("tmpfs", "ramfs"):
        pytest.skip("the temporary directory is in memory (tmpfs): its pages cannot be dropped")
    warm = small_decode(name="decode-share-warm").build(6, tmp_path / "warm")
    cold = small_decode("cold", name="decode-share-cold").build(6, tmp_path / "cold")
    assert isinstance(warm, decode.DecodeDataset) and isinstance(cold, decode.DecodeDataset)
    assert warm.directory == cold.directory
    files = sorted(Path(cold.directory).glob("*.jpg"))
    resident = [decode.resident_fraction(f) for f in files]
    if any(math.isnan(r) for r in resident):
        pytest.skip("mincore is not available here")
    assert resident == [0.0] * len(files)  # the cold build dropped the shared files' pages
    small_decode(name="decode-share-warm").build(6, tmp_path / "warm-again")
    assert [decode.resident_fraction(f) for f in files] == [1.0] * len(files)  # and a warm build reads them in


def test_the_generated_sets_are_removed_when_the_process_exits(tmp_path: Path) -> None:
    """Nothing is left in TMPDIR: the work directory is the case's, the shared set is removed at exit."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    script = textwrap.dedent(
        f"""
        import tempfile
        from pathlib import Path
        from loaderbench.workloads.recipes import Workload
        w = Workload(name="d", kind="decode", batch_size=4, params={SMALL!r})
        with tempfile.TemporaryDirectory() as case:
            dataset = w.build(4, case)
        assert len(list(Path(dataset.directory).glob("*.jpg"))) == {SMALL["n_files"]}
        print(dataset.directory)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "TMPDIR": str(tmpdir)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).is_relative_to(tmpdir)  # generated under TMPDIR, outside the case's directory
    assert list(tmpdir.iterdir()) == []


def test_the_big_index_grows_what_spawn_pickles_into_each_worker() -> None:
    small = BigIndexDataset(8, index_size=1_000, latency_s=0.0, shape=[2])
    large = BigIndexDataset(8, index_size=100_000, latency_s=0.0, shape=[2])
    assert len(pickle.dumps(large)) > 50 * len(pickle.dumps(small))
    assert small[3].shape == (2,) and float(small[3][0]) == len(small.paths[3])
    with pytest.raises(IndexError):
        small[8]


def test_the_scenario_file_has_the_decode_and_big_index_workloads() -> None:
    workloads = load_scenarios(data.WORKLOADS)
    assert workloads["decode"].params["cache"] == "warm" and workloads["decode-cold"].params["cache"] == "cold"
    sizes = sorted(w.params["index_size"] for w in workloads.values() if w.kind == "big-index")
    assert sizes == [1_000, 100_000, 1_000_000]
    assert all(w.sample_cost_s() == 0.001 for w in workloads.values() if w.kind == "big-index")
