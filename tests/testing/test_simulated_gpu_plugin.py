"""``--loader-simulated-gpu`` through the plugin: a user's CUDA test runs after the CPU ones and on the simulated
device, its records say so, and without the option a CUDA measurement skips with the reason (never a fallback)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loaderbench.cuda import cuda_available

pytest_plugins = ["pytester"]

HAS_GPU, _ = cuda_available()

USER_TESTS = """
import pytest
import torch
from torch.utils.data import TensorDataset

from loaderbench.config import LoaderConfig


def data():
    return TensorDataset(torch.zeros(256, 3, 16, 16))


def test_a_gpu_feed(loader_benchmark):
    m = loader_benchmark(data, LoaderConfig(batch_size=16), device="cuda")
    assert m.extra["simulated_gpu"] is True


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_b_either(loader_benchmark, device):
    loader_benchmark(data, LoaderConfig(batch_size=16), device=device)


def test_c_cpu_feed(loader_benchmark):
    loader_benchmark(data, LoaderConfig(batch_size=16))
"""

FAST = ["--loader-rounds=2", "--loader-round-seconds=0.05", "-p", "no:cacheprovider", "-p", "no:randomly"]


def _order(stdout: str) -> list[str]:
    names = []
    for line in stdout.splitlines():
        if "::test_" in line and ("PASSED" in line or "SKIPPED" in line or "FAILED" in line):
            names.append(line.split("::", 1)[1].split(" ", 1)[0])
    return names


@pytest.mark.slow
def test_a_users_cuda_tests_run_after_every_cpu_one_on_the_simulated_device(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    out = pytester.path / "bench.json"
    result = pytester.runpytest_subprocess(
        "--benchmark",
        "--loader-simulated-gpu",
        f"--loader-baseline-dir={pytester.path / 'baselines'}",
        f"--benchmark-json={out}",
        "-k",
        "test_a or test_b or test_c",
        "-v",
        *FAST,
    )
    result.assert_outcomes(passed=4)
    order = _order(result.stdout.str())
    assert order == ["test_b_either[cpu]", "test_c_cpu_feed", "test_a_gpu_feed", "test_b_either[cuda]"], order
    records = {b["name"]: b["extra_info"] for b in json.loads(out.read_text())["benchmarks"]}
    gpu = records["test_a_gpu_feed"]
    assert gpu["simulated_gpu"] is True and gpu["gpu_name"] == "loaderbench simulated GPU"
    assert gpu["case_id"].endswith("-simgpu")
    assert "simulated_gpu" not in records["test_c_cpu_feed"]


@pytest.mark.slow
@pytest.mark.skipif(HAS_GPU, reason="checks the skip on a machine without a GPU")
def test_without_the_option_a_cuda_measurement_skips_with_the_reason(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess(
        "--benchmark",
        f"--loader-baseline-dir={pytester.path / 'baselines'}",
        "-k",
        "test_a",
        "-rs",
        *FAST,
    )
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*no CUDA GPU*--loader-simulated-gpu runs it on the simulated device*"])


@pytest.mark.slow
def test_a_cuda_test_the_plugin_cannot_recognise_fails_before_initialising_cuda(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_user=USER_TESTS
        + """

DEVICE = "cu" + "da"


def test_0_hidden(loader_benchmark):
    loader_benchmark(data, LoaderConfig(batch_size=16), device=DEVICE)
"""
    )
    result = pytester.runpytest_subprocess(
        "--benchmark",
        "--loader-simulated-gpu",
        f"--loader-baseline-dir={pytester.path / 'baselines'}",
        "-k",
        "test_0_hidden or test_c",
        *FAST,
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*runs before CPU cases*Mark the test @pytest.mark.loaderbench(device='cuda')*"])


@pytest.mark.slow
def test_the_suites_cuda_smoke_cases_run_end_to_end_on_the_simulated_device(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    """The smoke tier's in-process CUDA case (no worker start-up to wait for) through plugin, harness, consumer,
    gate and reports."""
    root = Path(__file__).resolve().parents[2]
    report = tmp_path / "report"
    out = tmp_path / "bench.json"
    result = pytester.runpytest_subprocess(
        "--benchmark",
        "--loader-device=cuda",
        "--loader-simulated-gpu",
        f"--loader-baseline-dir={tmp_path / 'baselines'}",
        f"--loader-report={report}",
        f"--benchmark-json={out}",
        "-k",
        "test_pipeline and cuda-w0",
        f"--rootdir={root}",
        str(root / "tests" / "bench" / "test_pipelines.py"),
        *FAST,
    )
    result.assert_outcomes(passed=1)
    rows = [b["extra_info"] for b in json.loads(out.read_text())["benchmarks"]]
    assert [r["case_id"] for r in rows] == ["transfer-cuda-w0-bs32-pin-step0ms-nb-plain-simgpu"]
    for r in rows:
        assert r["simulated_gpu"] is True and r["device"] == "cuda"
        assert r["feed_samples_per_s"] > 0 and r["h2d_limit_bytes_per_s"] > 0
        assert r["h2d_bytes_per_s"] <= r["simulated_gpu_spec"]["h2d_bytes_per_s"] * 1.02
    text = (report / "report.md").read_text()
    assert "simgpu" in text


SLOW_LOADER = """
import os, time
import torch
from torch.utils.data import Dataset

from loaderbench.config import LoaderConfig

DELAY = {delay}


class Slow(Dataset):
    def __len__(self):
        return 96

    def __getitem__(self, i):
        time.sleep(DELAY)
        return torch.zeros(3, 16, 16)


def test_gpu_feed(loader_benchmark):
    loader_benchmark(Slow, LoaderConfig(batch_size=8), device="cuda")
"""


@pytest.mark.slow
def test_a_slower_loader_feeding_the_simulated_gpu_is_caught_by_the_gate(pytester: pytest.Pytester) -> None:
    """Item 2: a regression injected into the loader of a CUDA case is caught on the simulated device, through
    the recording (its noise measured in fresh processes that also use the simulated device) and the gate."""
    args = ["--benchmark", "--loader-simulated-gpu", "--loader-baseline-dir=baselines", *FAST]
    pytester.makepyfile(test_feed=SLOW_LOADER.format(delay=0.001))
    saved = pytester.runpytest_subprocess(*args, "--loader-baseline-save")
    assert saved.ret == pytest.ExitCode.OK, saved.stdout.str()
    saved.stdout.fnmatch_lines(["*fresh process(es)*3 recording session(s)*"])  # confirmations ran simulated too
    pytester.makepyfile(test_feed=SLOW_LOADER.format(delay=0.004))  # 4x slower per sample
    slower = pytester.runpytest_subprocess(*args, "--benchmark-json=out.json")
    assert slower.ret == pytest.ExitCode.TESTS_FAILED, slower.stdout.str()
    gate = json.loads((pytester.path / "out.json").read_text())["benchmarks"][0]["extra_info"]["gate"]
    regressed = {v["metric"] for v in gate if v["outcome"] == "regressed"}
    assert "feed_samples_per_s" in regressed or "samples_per_s" in regressed, gate
    assert all(v["case_id"].endswith("-simgpu") for v in gate)


COPY_BOUND = """
import torch
from torch.utils.data import Dataset

from loaderbench.config import LoaderConfig


class Frames(Dataset):
    def __len__(self):
        return 256

    def __getitem__(self, i):
        return torch.zeros(3, 64, 64)  # 48 KiB a sample: the simulated copy, not the loader, sets the pace


def test_copy_bound_feed(loader_benchmark):
    loader_benchmark(Frames, LoaderConfig(batch_size=8), device="cuda")
"""


@pytest.mark.slow
def test_a_slower_copy_engine_is_caught_by_the_gate(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 2, the copy half: the same loader on a simulated device whose host-to-device copies are 4x slower
    (set from outside the code under test, keeping the baseline key, as a degraded link would) is a feed-rate
    regression; the rounds stay about their planned length although the CPU-side estimate cannot see the copy."""
    args = ["--benchmark", "--loader-simulated-gpu", "--loader-baseline-dir=baselines", *FAST]
    pytester.makepyfile(test_copy=COPY_BOUND)
    monkeypatch.setenv("LOADERBENCH_SIMULATED_H2D_BYTES_PER_S", "400e6")
    saved = pytester.runpytest_subprocess(*args, "--loader-baseline-save", "--benchmark-json=saved.json")
    assert saved.ret == pytest.ExitCode.OK, saved.stdout.str()
    rec = json.loads((pytester.path / "saved.json").read_text())["benchmarks"][0]["extra_info"]
    assert rec["h2d_bytes_per_s"] <= 400e6 * 0.5 * 1.02  # pageable: half the pinned bandwidth, never above
    monkeypatch.setenv("LOADERBENCH_SIMULATED_H2D_BYTES_PER_S", "100e6")
    slower = pytester.runpytest_subprocess(*args, "--benchmark-json=out.json")
    assert slower.ret == pytest.ExitCode.TESTS_FAILED, slower.stdout.str()
    bench = json.loads((pytester.path / "out.json").read_text())["benchmarks"][0]["extra_info"]
    assert bench["h2d_bytes_per_s"] <= 100e6 * 0.5 * 1.02
    regressed = {v["metric"] for v in bench["gate"] if v["outcome"] == "regressed"}
    assert regressed & {"feed_samples_per_s", "samples_per_s", "h2d_bytes_per_s"}, bench["gate"]
    assert any("not the" in w and "planned" in w for w in bench["warnings"]), bench["warnings"]
