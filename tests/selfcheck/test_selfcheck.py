"""The self-checks' own machinery: the slowed interpreter, the A/B self-check's variants and figures, and
the stored self-check's baseline sizes.  (Their measured figures are in docs/figures.md; these tests take
no timing.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from loaderbench import data
from loaderbench.engine.plan import Plan
from loaderbench.errors import UsageError
from loaderbench.selfcheck import ab_jobs as selfcheck_ab
from loaderbench.selfcheck import meter as meter_lib
from loaderbench.selfcheck.ab_jobs import Variant, figures_of, parse_variants, render
from loaderbench.selfcheck.common import case_id, fraction_list, geomean, parse_cases
from loaderbench.selfcheck.slow_interpreter import write_slowed_interpreter
from loaderbench.tools import meter, selfcheck
from loaderbench.workloads.recipes import load_scenarios

ROOT = Path(__file__).resolve().parents[2]

# A child that reports, for the main process and for one spawn worker, whether torch's map fetcher is
# the slowed one, and how long one fetch of a 20 ms-sleep dataset took in the main process.
PROBE = """
import json, sys, time
import torch
from torch.utils.data import DataLoader, Dataset
import torch.utils.data._utils.fetch as fetch

class Sleepy(Dataset):
    def __len__(self):
        return 4
    def __getitem__(self, i):
        time.sleep(0.02)
        return torch.tensor([i])

def patched(_):
    return fetch._MapDatasetFetcher.fetch.__name__ == "slowed_fetch"

class Report(Dataset):
    def __len__(self):
        return 1
    def __getitem__(self, i):
        import torch.utils.data._utils.fetch as f
        return f._MapDatasetFetcher.fetch.__name__ == "slowed_fetch"

if __name__ == "__main__":
    fetcher = fetch._MapDatasetFetcher(Sleepy(), True, lambda xs: xs, False)
    t0 = time.perf_counter()
    fetcher.fetch([0])
    fetch_s = time.perf_counter() - t0
    loader = DataLoader(Report(), batch_size=None, num_workers=1, multiprocessing_context="spawn")
    (worker,) = list(loader)
    print(json.dumps({"main": patched(None), "worker": bool(worker), "fetch_s": fetch_s}))
"""


def _probe(tmp_path: Path, slowdown: float) -> dict[str, Any]:
    wrapper = write_slowed_interpreter(tmp_path / f"slow-{slowdown:g}", slowdown)
    script = tmp_path / "probe.py"
    script.write_text(PROBE, encoding="utf-8")
    done = subprocess.run([str(wrapper), str(script)], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


@pytest.mark.slow
def test_the_slowed_interpreter_slows_every_fetch_in_the_process_and_its_spawn_workers(tmp_path: Path) -> None:
    out = _probe(tmp_path, 1.0)
    assert out["main"] and out["worker"]
    # 20 ms of sleep made twice as long: a sleep never returns early, so this lower bound cannot flake
    assert out["fetch_s"] >= 0.039


@pytest.mark.slow
def test_the_a_a_interpreter_changes_nothing(tmp_path: Path) -> None:
    out = _probe(tmp_path, 0.0)
    assert not out["main"] and not out["worker"]


def test_a_negative_slowdown_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"slowdown=-0\.1"):
        write_slowed_interpreter(tmp_path, -0.1)


# --- the A/B self-check: variants, figures, table ----------------------------------------------------------

IDS = {"io-cpu-w0-bs32": "io", "io-cpu-w2-bs32": "io", "cpu-cpu-w2-bs32": "cpu"}


def test_slowdowns_name_the_workloads_they_are_injected_into() -> None:
    variants = parse_variants("5@io,10@cpu+transfer,20", IDS)
    assert variants == [
        Variant(0.0, tuple(IDS)),
        Variant(0.05, ("io-cpu-w0-bs32", "io-cpu-w2-bs32")),
        Variant(0.10, ("cpu-cpu-w2-bs32",)),
        Variant(0.20, tuple(IDS)),
    ]


@pytest.mark.parametrize(("text", "match"), [("5@disk", "names no workload"), ("x", "not a list"), ("-5", "positive")])
def test_bad_slowdowns_are_usage_errors(text: str, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        parse_variants(text, IDS)


def _verdict(case: str, outcome: str, ratio: float, pairs: int, metric: str = "samples_per_s") -> dict[str, Any]:
    return {"case_id": case, "metric": metric, "outcome": outcome, "ratio": ratio, "pairs": pairs, "resolves": 0.04}


def _job(slowdown: float, verdicts: list[dict[str, Any]], wall: float = 60.0) -> dict[str, Any]:
    return {"slowdown": slowdown, "verdicts": verdicts, "wall_s": wall, "load": [0.5, 0.7]}


def test_figures_count_false_alarms_detections_and_the_achieved_slowdown() -> None:
    variants = [Variant(0.0, ("a", "b")), Variant(0.05, ("a",))]
    jobs = [
        _job(0.0, [_verdict("a", "unchanged", 1.0, 4), _verdict("b", "inconclusive", 1.0, 8)]),
        _job(0.0, [_verdict("a", "unchanged", 1.0, 4), _verdict("b", "regressed", 1.2, 5, metric="ttfb_s")]),
        _job(0.05, [_verdict("a", "regressed", 1 / 1.05, 6)], wall=30.0),
        _job(0.05, [_verdict("a", "inconclusive", 1 / 1.05, 8)], wall=40.0),
    ]
    f = figures_of(jobs, variants)
    a, b = f["cases"]
    assert (a["aa_false"], a["aa_unchanged"], a["aa_jobs"]) == (0, 2, 2)
    assert a["power_0.05"]["detected"] == 1 and a["power_0.05"]["runs"] == 2
    assert a["power_0.05"]["achieved"] == pytest.approx(1.05)
    assert a["power_0.05"]["pairs"] == 7
    assert (b["aa_false"], b["aa_false_metrics"], b["aa_unchanged"]) == (1, ["ttfb_s"], 0)
    assert "power_0.05" not in b
    assert f["wall_per_job_s"]["5% slower"] == {"median": 35.0, "max": 40.0, "jobs": 2}
    lines = render({**f, "wall_s": 170.0}, variants)
    assert lines[0].split("  ")[0] == "case"
    assert lines[1].startswith("a ") and "1/2 (1.050x, 7)" in lines[1]
    assert lines[2].startswith("b ") and lines[2].rstrip().endswith("-")
    assert "note: b: A/A false alarms on ttfb_s" in lines
    assert lines[-1] == "total wall time: 170 s"


def test_ab_mode_refuses_bad_numbers_before_running_anything(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--ab", "--scenarios", str(data.WORKLOADS), "--cases", "io:w0", "--ab-pairs", "0"]
    assert selfcheck.main(argv) == 2
    assert "--ab-pairs=0" in capsys.readouterr().err


def test_ab_mode_refuses_a_case_in_no_tier(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--ab", "--scenarios", str(data.WORKLOADS), "--cases", "io:w3-pf7"]
    assert selfcheck_ab.main(selfcheck.build_parser().parse_args(argv)) == 2
    assert "io-cpu-w3-bs32-pf7" in capsys.readouterr().err


def test_ab_mode_pools_the_stored_priors_as_the_real_ab_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the priors every look would judge the pairs alone (2 dof at 3 pairs): a weaker A/B than
    ``loaderbench ab``, and figures that describe nothing users run."""
    seen = []

    def fake_run_ab(spec: Any, arms: Any, schedule: Any, **_: Any) -> Any:
        seen.append(schedule)
        raise selfcheck_ab.ABError("stop here")

    monkeypatch.setattr(selfcheck_ab, "run_ab", fake_run_ab)
    argv = ["--ab", "--scenarios", str(data.WORKLOADS), "--cases", "io:w0", "--reruns", "1"]
    selfcheck_ab.main(selfcheck.build_parser().parse_args(argv))
    assert seen and seen[0].priors is not None
    assert seen[0].priors.get("io", "samples_per_s") is not None
    seen.clear()
    selfcheck_ab.main(selfcheck.build_parser().parse_args([*argv, "--priors", ""]))
    assert seen and seen[0].priors is None


# --- shared syntax and the stored self-check's baseline sizes -----------------------------------------------


def test_cases_take_the_workloads_batch_size_unless_named() -> None:
    workloads = load_scenarios(data.WORKLOADS)
    ids = [case_id(w, c) for w, c in parse_cases("io:w0,cpu:w2-bs8", workloads)]
    assert ids == ["io-cpu-w0-bs32", "cpu-cpu-w2-bs8"]
    with pytest.raises(UsageError, match="known workload"):
        parse_cases("disk:w0", workloads)


def test_fraction_lists_and_geometric_means() -> None:
    assert fraction_list("5, 10%") == [0.05, 0.10]
    assert geomean([2.0, 8.0, float("nan"), 0.0]) == pytest.approx(4.0)
    assert geomean([]) != geomean([])  # NaN when there is nothing to average


def test_baseline_sizes_are_a_sorted_list_of_counts() -> None:
    assert selfcheck.session_counts("5,1,3,3") == [1, 3, 5]
    for bad in ("0", "", "a,3"):
        with pytest.raises(UsageError, match="--baseline-sessions"):
            selfcheck.session_counts(bad)


def test_the_ab_check_is_a_mode_of_the_selfcheck_command() -> None:
    help_text = subprocess.run(
        [sys.executable, "-m", "loaderbench.tools.selfcheck", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--ab " in help_text and "--ab-pairs" in help_text and "--baseline-sessions" in help_text


# --- the independent meter ----------------------------------------------------------------------------------


def test_the_meter_pairs_the_harness_with_a_bare_loop_over_the_same_case() -> None:
    workloads = load_scenarios(data.WORKLOADS)
    ((workload, config),) = parse_cases("io:w0-bs8", workloads)
    result = meter_lib.agreement(workload, config, pairs=2, plan=Plan(rounds=2, round_s=0.02))
    assert result.case_id == "io-cpu-w0-bs8"
    assert len(result.a) == len(result.b) == 2
    assert all(r > 0 for r in result.ratios)
    assert result.ratio == pytest.approx(sum(result.ratios) / 2)  # the median of two
    lines = meter.render([result])
    assert lines[0].split()[:4] == ["case", "harness", "samples/s", "meter"]
    assert lines[1].startswith("io-cpu-w0-bs8 ") and lines[1].split()[-1] == "2"


def test_the_meter_compares_round_lengths() -> None:
    workloads = load_scenarios(data.WORKLOADS)
    ((workload, config),) = parse_cases("io:w0-bs8", workloads)
    result = meter_lib.round_length_agreement(workload, config, factor=2, pairs=1, plan=Plan(rounds=2, round_s=0.02))
    assert result.labels == ("rounds 0.02 s", "rounds 0.04 s") and len(result.ratios) == 1
    assert meter.render([result])[0].split()[1:4] == ["rounds", "0.02", "s"]


def test_the_meter_refuses_zero_pairs(capsys: pytest.CaptureFixture[str]) -> None:
    assert meter.main(["--pairs", "0", "--scenarios", str(data.WORKLOADS)]) == 2
    assert "--pairs=0" in capsys.readouterr().err


def test_rank_scaling_refuses_a_bad_rank_list(capsys: pytest.CaptureFixture[str]) -> None:
    from loaderbench.tools import rank_scaling

    assert rank_scaling.main(["--ranks", "0"]) == 2
    assert "--ranks='0': not a comma-separated list of integers >= 1" in capsys.readouterr().err
    assert rank_scaling.main(["--workloads", "nope"]) == 2
