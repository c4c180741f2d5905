"""The one-command GPU check, for whoever gets a GPU machine: ``python -m loaderbench.tools.gpu_check OUTDIR``
(or ``tox -e gpucheck``), from the repository root, in at most 8 minutes on one H100/H200 with 16 CPUs.

It runs, each step in a child process with its own time limit, and writes every figure into OUTDIR:

1. ``unit``: the GPU unit tests (``tests/cuda/test_cuda_gpu.py``, in a child pytest as the suite runs them);
2. ``smoke``: the CUDA smoke tier with ``--loader-report`` (``report/``, ``cuda-smoke.json``), recording this
   machine's baseline file into ``baselines/`` (copy it to ``fixtures/baselines/`` to commit it);
3. ``aa``: the CUDA smoke tier again, against the baseline the smoke step just recorded
   (``--loader-require-baseline``): nothing changed, so a red rerun is a false alarm of the gate on this GPU
   (``cuda-aa.json``; the verdict lines are in ``aa.log``);
4. ``h2d``: the pinned host-to-device limit at 1, 16 and 256 MiB against the PCIe link NVML reports (the spec
   line from its generation and width, and the measured fraction of it; published: about 55.5 GB/s pinned on
   PCIe gen5 x16, whose spec line is 63.0 GB/s);
5. ``nccl``: one case in one rank through ``torch.distributed.run`` with NCCL (the ranks path's GPU side);
6. ``decode``: the decode workload fed to the GPU through the DataLoader (spawn workers) and each installed
   thread pipeline (torchdata.nodes threads, SPDL).

``summary.json`` and ``summary.md`` hold each step's outcome, time and figures.  The exit status is 0 when
every step passed or was skipped with a reason, 1 otherwise.  ``--simulated`` runs the same steps on the
simulated device (the project's tests do, so this check cannot rot on machines without a GPU); ``--quick``
shortens the smoke and decode steps to their in-process cases.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from loaderbench import data
from loaderbench.config import LoaderConfig
from loaderbench.config_rules import PIPELINE_FACTS
from loaderbench.cuda.ops import measure_h2d_limit_bytes_per_s
from loaderbench.cuda.spec import CudaSpec
from loaderbench.engine.case import Case
from loaderbench.engine.plan import Plan
from loaderbench.errors import InvalidConfig, LoaderbenchError
from loaderbench.pipelines.registry import unavailable_reason
from loaderbench.ranks.launch import launch
from loaderbench.selection.run import run_case
from loaderbench.testing.simulated_gpu import SimulatedGpu, SimulatedGpuSpec
from loaderbench.testing.simulated_nvml import simulated_pynvml
from loaderbench.workloads.recipes import load_scenarios

#: The whole check's budget, and each step's share of it (seconds).
BUDGET_S = 480.0
STEP_LIMIT_S = {"unit": 120.0, "smoke": 200.0, "aa": 150.0, "h2d": 40.0, "nccl": 90.0, "decode": 120.0}
STEPS = tuple(STEP_LIMIT_S)
#: PCIe payload bandwidth per lane in bytes/s after line encoding, by generation (gen6: 64 GT/s, FLIT 242/256).
PCIE_LANE_BYTES_PER_S = {1: 0.25e9, 2: 0.5e9, 3: 8e9 * 128 / 130 / 8, 4: 16e9 * 128 / 130 / 8,
                         5: 32e9 * 128 / 130 / 8, 6: 64e9 * 242 / 256 / 8}  # fmt: skip
#: Published pinned copy-engine H2D on PCIe gen5 x16, for the summary's comparison line.
PUBLISHED_GEN5_X16 = 55.5e9
MiB = 1 << 20


def pcie_spec_bytes_per_s(generation: int, width: int) -> float | None:
    """The link's spec line (payload after encoding), e.g. 63.0e9 for gen5 x16; None for an unknown generation."""
    lane = PCIE_LANE_BYTES_PER_S.get(generation)
    return None if lane is None or width <= 0 else lane * width


# --- the steps that run inside this module (in a child process each) ----------------------------------


def step_h2d(simulated: bool) -> dict[str, Any]:
    if simulated:
        gpu = SimulatedGpu()
        limits = {str(n): gpu.h2d_limit(n * MiB, 0) for n in (1, 16, 256)}
        nvml, handle, name = simulated_pynvml(gpu), gpu, gpu.gpu(0)[0]
    else:
        import pynvml  # type: ignore[import-not-found,unused-ignore]
        import torch

        limits = {str(n): measure_h2d_limit_bytes_per_s(n * MiB, 0) for n in (1, 16, 256)}
        name = torch.cuda.get_device_name(0)
        nvml = pynvml
        nvml.nvmlInit()
        handle = nvml.nvmlDeviceGetHandleByIndex(int(os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0] or 0))
    link = {
        "generation": int(nvml.nvmlDeviceGetCurrPcieLinkGeneration(handle)),
        "width": int(nvml.nvmlDeviceGetCurrPcieLinkWidth(handle)),
        "max_generation": int(nvml.nvmlDeviceGetMaxPcieLinkGeneration(handle)),
        "max_width": int(nvml.nvmlDeviceGetMaxPcieLinkWidth(handle)),
    }
    spec = pcie_spec_bytes_per_s(link["generation"], link["width"])
    best = max(limits.values())
    return {
        "gpu_name": name,
        "h2d_limit_bytes_per_s": limits,
        "pcie_link": link,
        "pcie_spec_bytes_per_s": spec,
        "h2d_fraction_of_spec": best / spec if spec else None,
        "published_gen5_x16": {"pinned_h2d_bytes_per_s": PUBLISHED_GEN5_X16, "spec_bytes_per_s": 63.0e9},
        "note": "the link is read after the copies (an idle GPU may train its link down)",
    }


def _run_cases(cases: list[Any], plan: Any) -> dict[str, Any]:

    out: dict[str, Any] = {}
    for case in cases:
        try:
            out[case.id] = run_case(case, plan).extra_info()
        except LoaderbenchError as exc:
            out[case.id] = {"failed": str(exc)}
    return out


def _workload(name: str) -> Any:

    return load_scenarios(data.local_or_packaged(Path.cwd(), data.WORKLOADS))[name]


def step_nccl(simulated: bool) -> dict[str, Any]:
    if simulated:
        return {"skipped": "the simulated device has no NCCL: this step runs on a GPU machine only"}

    w = _workload("transfer")
    config = LoaderConfig(
        batch_size=w.batch_size, num_workers=2, multiprocessing_context="spawn", persistent_workers=True,
        pin_memory=True, ranks=1,
    )  # fmt: skip
    m = launch(Case(w, config, device="cuda", consumer=CudaSpec(step_ms=5.0)), Plan(rounds=3))
    return {m.case_id: m.extra_info()}


def step_decode(simulated: bool, quick: bool) -> dict[str, Any]:

    w = _workload("decode")
    workers = 0 if quick else 4
    base: dict[str, Any] = {"batch_size": w.batch_size, "pin_memory": True, "num_workers": workers}
    configs: dict[str, dict[str, Any]] = {"dataloader": dict(base)}
    if workers:
        configs["dataloader"].update(multiprocessing_context="spawn", persistent_workers=True)
    for pipeline in (name for name, facts in PIPELINE_FACTS.items() if not facts.processes):  # the thread pipelines
        configs[pipeline] = {**base, "pipeline": pipeline}
    cases, skipped = [], {}
    for name, kwargs in configs.items():
        missing = unavailable_reason(kwargs.get("pipeline", "dataloader"))
        try:
            config = LoaderConfig(**kwargs)
        except InvalidConfig as exc:
            missing = missing or str(exc)
        if missing:
            skipped[name] = missing
            continue
        sim = SimulatedGpuSpec() if simulated else None
        cases.append(Case(w, config, device="cuda", consumer=CudaSpec(step_ms=5.0), simulated_gpu=sim))
    plan = Plan(rounds=2, round_s=0.1) if quick else Plan(rounds=3)
    return {"cases": _run_cases(cases, plan), "skipped": skipped}


def failed_cases(figures: dict[str, Any]) -> list[str]:
    """The ids of the cases a step's figures say failed (a step with a failed case fails)."""
    cases = figures.get("cases", {})
    return [case_id for case_id, record in cases.items() if isinstance(record, dict) and "failed" in record]


# --- the orchestration ----------------------------------------------------------------------------------


def _command(step: str, out: Path, simulated: bool, quick: bool) -> tuple[list[str], dict[str, str]] | str:
    """The child command of ``step`` and its environment, or why it cannot run here."""
    py, env = sys.executable, dict(os.environ)
    sim = ["--loader-simulated-gpu"] if simulated else []
    if step == "unit":
        path = Path("tests/cuda/test_cuda_gpu.py")
        if not path.exists():
            return f"not run: {path} not found; run the check from the repository root"
        env["LOADERBENCH_GPU_SUBPROCESS"] = "1"
        return [py, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(path),
                f"--junitxml={out / 'unit.xml'}"], env  # fmt: skip
    if step in ("smoke", "aa"):
        fast = ["-k", "cuda-w0", "--loader-rounds=2", "--loader-round-seconds=0.05"] if quick else []
        smoke = [f"--loader-report={out / 'report'}", f"--benchmark-json={out / 'cuda-smoke.json'}"]
        role = (
            [*smoke, "--loader-baseline-save"]
            if step == "smoke"
            else [f"--benchmark-json={out / 'cuda-aa.json'}", "--loader-require-baseline"]
        )
        return [py, "-m", "pytest", "--benchmark", "--loader-device=cuda", "--loader-tier=smoke", *sim, *fast, *role,
                f"--loader-baseline-dir={out / 'baselines'}", "-p", "no:cacheprovider", "-rs", "-q"], env  # fmt: skip
    flags = (["--simulated"] if simulated else []) + (["--quick"] if quick else [])
    return [py, "-m", "loaderbench.tools.gpu_check", "--step", step, *flags, str(out)], env


def run_check(out: Path, *, simulated: bool = False, quick: bool = False, steps: tuple[str, ...] = STEPS) -> int:
    out.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + BUDGET_S
    results: dict[str, Any] = {"simulated": simulated, "quick": quick, "steps": {}}
    for step in steps:
        log = out / f"{step}.log"
        made = _command(step, out, simulated, quick)
        left = deadline - time.monotonic()
        if isinstance(made, str) or left < 5:
            why = made if isinstance(made, str) else f"not run: the check's {BUDGET_S:g} s budget is spent"
            results["steps"][step] = {"status": why}
            continue
        cmd, env = made
        limit = min(STEP_LIMIT_S[step], left)
        t0 = time.monotonic()
        with log.open("w") as fh:
            try:
                rc: int | None = subprocess.run(
                    cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=limit
                ).returncode
            except subprocess.TimeoutExpired:
                rc = None
        seconds = time.monotonic() - t0
        status = "passed" if rc == 0 else (f"timed out after {limit:g} s" if rc is None else f"failed (exit {rc})")
        entry: dict[str, Any] = {"status": status, "seconds": round(seconds, 1), "log": log.name, "command": cmd}
        figures = out / f"{step}.json"
        if figures.exists():
            entry["figures"] = json.loads(figures.read_text())
        results["steps"][step] = entry
    (out / "summary.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "summary.md").write_text("\n".join(summary_lines(results)) + "\n")
    ok = all(s["status"] == "passed" or s["status"].startswith("not run") for s in results["steps"].values())
    return 0 if ok else 1


def summary_lines(results: dict[str, Any]) -> list[str]:
    head = "simulated device (not a GPU)" if results["simulated"] else "GPU"
    lines = [f"# loaderbench GPU check ({head})", "", "| step | status | seconds |", "|---|---|---|"]
    for name, s in results["steps"].items():
        lines.append(f"| {name} | {s['status']} | {s.get('seconds', '')} |")
    h2d = results["steps"].get("h2d", {}).get("figures")
    if h2d:
        link, spec = h2d["pcie_link"], h2d["pcie_spec_bytes_per_s"]
        best = max(h2d["h2d_limit_bytes_per_s"].values())
        frac = h2d["h2d_fraction_of_spec"]
        lines += [
            "",
            f"{h2d['gpu_name']}: pinned H2D {best / 1e9:.1f} GB/s on PCIe gen{link['generation']} x{link['width']} "
            f"(spec line {spec / 1e9:.1f} GB/s: {frac:.0%} of it)"
            if spec and frac
            else f"pinned H2D {best / 1e9:.1f} GB/s",
            "published: about 55.5 GB/s pinned H2D on PCIe gen5 x16, spec line 63.0 GB/s (88%)",
        ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loaderbench.tools.gpu_check", description=__doc__.split("\n")[0])
    parser.add_argument("outdir", type=Path, help="folder for every figure, log, report and the baseline file")
    parser.add_argument("--simulated", action="store_true", help="run on the simulated device (default: off)")
    parser.add_argument(
        "--quick", action="store_true", help="only the in-process smoke and decode cases (default: off)"
    )
    parser.add_argument("--step", choices=("h2d", "nccl", "decode"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:
        args.outdir.mkdir(parents=True, exist_ok=True)
        if args.step == "h2d":
            figures = step_h2d(args.simulated)
        elif args.step == "nccl":
            figures = step_nccl(args.simulated)
        else:
            figures = step_decode(args.simulated, args.quick)
        (args.outdir / f"{args.step}.json").write_text(json.dumps(figures, indent=2, default=str))
        print(json.dumps(figures, default=str)[:4000])
        failed = failed_cases(figures)
        for case_id in failed:
            print(f"FAILED {case_id}: {figures['cases'][case_id]['failed']}", file=sys.stderr)
        return 1 if failed else 0
    rc = run_check(args.outdir, simulated=args.simulated, quick=args.quick)
    print((args.outdir / "summary.md").read_text())
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
