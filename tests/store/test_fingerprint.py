"""The machine fingerprint: stable, free of volatile fields, and explained when it differs."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from loaderbench.store import fingerprint as fpm
from loaderbench.store.fingerprint import Fingerprint, cgroup_cpu_quota, diff

BASE = Fingerprint(
    machine="x86_64",
    cpu_model="AMD EPYC 7B13",
    affinity_cpus=2,
    cpu_quota=None,
    ram_bytes=24 * 2**30,
    gpus=(),
)


def test_current_is_stable_within_a_session() -> None:
    a, b = fpm.current(), fpm.current()
    assert a == b
    assert a.key == b.key
    assert a.affinity_cpus >= 1 and a.ram_bytes > 0


def test_hardware_only_no_software_and_no_volatile_fields() -> None:
    """The software (kernel, Python, torch, CUDA, driver) is the environment: compared, never keyed."""
    names = {f.name for f in dataclasses.fields(Fingerprint)}
    assert names == {"machine", "cpu_model", "affinity_cpus", "cpu_quota", "ram_bytes", "gpus"}


def test_key_is_short_readable_and_file_safe() -> None:
    assert re.fullmatch(r"x86_64-2cpu-24gib-cpu-[0-9a-f]{12}", BASE.key)
    gpu = dataclasses.replace(BASE, gpus=("NVIDIA H100 80GB HBM3",))
    assert re.fullmatch(r"x86_64-2cpu-24gib-h100-80gb-[0-9a-f]{12}", gpu.key)


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(Fingerprint)])
def test_every_field_changes_the_key(field: str) -> None:
    value = getattr(BASE, field)
    other = {
        str: "other",
        int: 4,
        tuple: ("NVIDIA A100",),
        type(None): 1.5,
    }[type(value)]
    assert dataclasses.replace(BASE, **{field: other}).key != BASE.key


def test_dict_and_json_round_trip() -> None:
    gpu = dataclasses.replace(BASE, gpus=("NVIDIA H100",), cpu_quota=1.5)
    assert Fingerprint.from_dict(json.loads(json.dumps(gpu.as_dict()))) == gpu


def test_from_dict_names_a_missing_or_mistyped_field() -> None:
    data = BASE.as_dict()
    del data["cpu_model"]
    with pytest.raises(ValueError, match="'cpu_model' is missing"):
        Fingerprint.from_dict(data)
    with pytest.raises(ValueError, match="'affinity_cpus' is not an integer"):
        Fingerprint.from_dict({**BASE.as_dict(), "affinity_cpus": "2"})


def test_diff_says_what_differs_in_words() -> None:
    assert diff(BASE, BASE) == []
    other = dataclasses.replace(BASE, affinity_cpus=4, ram_bytes=48 * 2**30, gpus=("NVIDIA L4",))
    assert diff(BASE, other) == [
        "CPUs in the affinity mask: 2 (baseline) vs 4 (this machine)",
        "total RAM: 24.00 GiB (baseline) vs 48.00 GiB (this machine)",
        "GPUs: no GPU (baseline) vs NVIDIA L4 (this machine)",
    ]


def test_a_format_1_fingerprint_reads_as_its_hardware() -> None:
    """Format-1 fingerprints also held the software; those fields are ignored here (they are the environment)."""
    old = {**BASE.as_dict(), "os": "Linux 6.1", "python": "CPython 3.11.7", "torch": "2.13.0", "cuda": None}
    assert Fingerprint.from_dict({**old, "gpu_driver": None}) == BASE


# --- probes against a fake /proc and /sys ------------------------------------------------------


def fake_root(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_cgroup_v2_quota(tmp_path: Path) -> None:
    root = fake_root(
        tmp_path,
        {"proc/self/cgroup": "0::/ci/job\n", "sys/fs/cgroup/ci/job/cpu.max": "150000 100000\n"},
    )
    assert cgroup_cpu_quota(root) == 1.5


def test_cgroup_v2_unlimited(tmp_path: Path) -> None:
    root = fake_root(tmp_path, {"proc/self/cgroup": "0::/\n", "sys/fs/cgroup/cpu.max": "max 100000\n"})
    assert cgroup_cpu_quota(root) is None


def test_cgroup_v1_quota_and_unlimited(tmp_path: Path) -> None:
    root = fake_root(
        tmp_path,
        {
            "proc/self/cgroup": "4:memory:/x\n2:cpu,cpuacct:/job\n",
            "sys/fs/cgroup/cpu,cpuacct/job/cpu.cfs_quota_us": "50000\n",
            "sys/fs/cgroup/cpu,cpuacct/job/cpu.cfs_period_us": "100000\n",
        },
    )
    assert cgroup_cpu_quota(root) == 0.5
    (root / "sys/fs/cgroup/cpu,cpuacct/job/cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_quota(root) is None


def test_no_cgroup_information(tmp_path: Path) -> None:
    assert cgroup_cpu_quota(tmp_path) is None


def test_probes_read_cpu_model_and_nvidia_proc_files(tmp_path: Path) -> None:
    root = fake_root(
        tmp_path,
        {
            "proc/cpuinfo": "processor\t: 0\nmodel name\t: AMD EPYC 7B13 64-Core Processor\n",
            "proc/driver/nvidia/version": "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.65.06  Sun Jul 27\n",
            "proc/driver/nvidia/gpus/0000:01:00.0/information": "Model: \t\t NVIDIA H100 80GB HBM3\nIRQ: 1\n",
        },
    )
    fp = fpm.current(root=root)
    assert fp.cpu_model == "AMD EPYC 7B13 64-Core Processor"
    assert fp.gpus == ("NVIDIA H100 80GB HBM3",)
    assert fpm.gpus_and_driver(root) == (("NVIDIA H100 80GB HBM3",), "580.65.06")
