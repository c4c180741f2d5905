"""``python -m loaderbench.tools.gpu_check`` on the simulated device, so the one-command GPU check cannot rot on
machines without a GPU: every step runs (or says why not) and writes its figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loaderbench.tools import gpu_check


def test_pcie_spec_lines() -> None:
    assert gpu_check.pcie_spec_bytes_per_s(5, 16) == pytest.approx(63.0e9, rel=1e-3)
    assert gpu_check.pcie_spec_bytes_per_s(4, 16) == pytest.approx(31.5e9, rel=1e-3)
    assert gpu_check.pcie_spec_bytes_per_s(3, 16) == pytest.approx(15.75e9, rel=1e-3)
    assert gpu_check.pcie_spec_bytes_per_s(9, 16) is None


def test_a_step_with_a_failed_case_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    figures = {"cases": {"a": {"feed_samples_per_s": 1.0}, "b": {"failed": "multiprocessing_context=None: ..."}}}
    monkeypatch.setattr(gpu_check, "step_decode", lambda simulated, quick: figures)
    assert gpu_check.main(["--step", "decode", "--simulated", str(tmp_path)]) == 1
    assert json.loads((tmp_path / "decode.json").read_text()) == figures
    figures["cases"].pop("b")
    assert gpu_check.main(["--step", "decode", "--simulated", str(tmp_path)]) == 0
    assert gpu_check.failed_cases({"skipped": "no NCCL"}) == []


@pytest.mark.slow
def test_the_gpu_check_runs_every_step_on_the_simulated_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(Path(__file__).resolve().parents[2])  # the check runs from the repository root
    rc = gpu_check.run_check(tmp_path, simulated=True, quick=True)
    summary = json.loads((tmp_path / "summary.json").read_text())
    steps = summary["steps"]
    assert list(steps) == list(gpu_check.STEPS)
    assert rc == 0, {k: v["status"] for k, v in steps.items()}
    h2d = steps["h2d"]["figures"]
    assert h2d["pcie_link"]["generation"] == 3 and h2d["pcie_link"]["width"] == 16
    assert 0 < h2d["h2d_fraction_of_spec"] <= 1
    assert "skipped" in steps["nccl"]["figures"]
    decode = steps["decode"]["figures"]["cases"]
    assert decode and all(r.get("simulated_gpu") is True for r in decode.values()), decode
    smoke = json.loads((tmp_path / "cuda-smoke.json").read_text())["benchmarks"]
    assert smoke and all(b["extra_info"]["simulated_gpu"] is True for b in smoke)
    assert (tmp_path / "report" / "report.md").exists()
    assert list((tmp_path / "baselines").glob("*.json")), "the smoke step records the machine's baseline file"
    assert "loaderbench gate: comparing against" in (tmp_path / "aa.log").read_text()  # the rerun was judged
    assert json.loads((tmp_path / "cuda-aa.json").read_text())["benchmarks"]
    md = (tmp_path / "summary.md").read_text()
    assert "simulated device (not a GPU)" in md and "spec line 15.8 GB/s" in md
