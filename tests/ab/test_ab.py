"""The interleaved A/B: the runner's schedule on fake (stdlib-only, instant) children, one end-to-end run of
``loaderbench ab`` with two wrapper interpreters and a user workload, and its errors (exit 4, no traceback,
no process left behind)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from loaderbench import cli, data
from loaderbench.ab.child import select_cases
from loaderbench.ab.errors import ABError
from loaderbench.ab.paired import ABVerdict
from loaderbench.ab.process import PROBE_MARK, check_interpreter
from loaderbench.ab.records import BASE_ENVIRON, ChildSpec
from loaderbench.ab.render import progress_line, summary_lines
from loaderbench.ab.schedule import ABResult, Arm, Schedule, Step, run_ab
from loaderbench.history import store
from loaderbench.workloads.calibration import CALIBRATION_ENV

ROOT = Path(__file__).resolve().parents[2]

# --- the runner on fake children ---------------------------------------------------------------------

#: A stand-in for ``ARM -m loaderbench.ab.child SPEC RECORDS``: writes records of the protocol with
#: samples/s from $FAKE_SPEED (case -> factor for this arm), a drift per child slot, and a log of its runs.
FAKE_CHILD = """
import json, math, os, random, sys, time, zlib
assert sys.argv[1:3] == ["-m", "loaderbench.ab.child"], sys.argv
spec = json.load(open(sys.argv[3]))
arm, log = os.environ["FAKE_ARM"], os.environ["FAKE_LOG"]
slot = len(open(log).read().splitlines()) if os.path.exists(log) else 0
calibration = os.environ.get("LOADERBENCH_SPIN_LOOPS_PER_S")
with open(log, "a") as fh:
    fh.write(json.dumps({"arm": arm, "cases": spec["cases"], "calibration": calibration}) + "\\n")
time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
if os.environ.get("FAKE_CRASH"):
    sys.exit(3)
speed = json.loads(os.environ.get("FAKE_SPEED", "{}"))
drift = float(os.environ.get("FAKE_DRIFT", "0"))
out = open(sys.argv[4], "a")
def put(record):
    out.write(json.dumps(record) + "\\n")
env = {"torch": os.environ.get("FAKE_TORCH", "2.13.0+cpu"), "python": "CPython 3.11"}
put({"type": "environment", "protocol": 1, "environment": env, "variables": {"ARM": arm},
     "calibration": float(os.environ["LOADERBENCH_SPIN_LOOPS_PER_S"]), "executable": sys.executable})
for case in spec["cases"]:
    if case == os.environ.get("FAKE_FAIL"):
        put({"type": "failure", "case_id": case, "message": f"{case}: the dataset raised in the {arm} arm"})
        continue
    rng = random.Random(zlib.crc32(f"{case}:{slot}".encode()))  # not hash(): it is salted per process
    noise = float(os.environ.get("FAKE_NOISE_" + case, "0.002"))
    value = 1000.0 * speed.get(case, 1.0) * math.exp(-drift * slot + rng.gauss(0, noise))
    record = {"workload": case, "device": "cpu", "config": {}, "rounds": {"samples_per_s": [value] * 3}}
    put({"type": "measurement", "case_id": case, "measurement": record})
put({"type": "done"})
"""


def fake_arms(tmp_path: Path, **env: str) -> dict[str, Arm]:
    script = tmp_path / "fake-python"
    script.write_text(f"#!{sys.executable} -S\n{FAKE_CHILD}")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    arms = {}
    for name in ("base", "head"):
        own = {k[len(name) + 1 :]: v for k, v in env.items() if k.startswith(name + "_")}
        shared = {k: v for k, v in env.items() if not k.startswith(("base_", "head_"))}
        values = {**os.environ, "FAKE_ARM": name, "FAKE_LOG": str(tmp_path / "log.jsonl"), **shared, **own}
        arms[name] = Arm(name, str(script), values, f"the {name} arm")
    return arms


def spec(*cases: str) -> ChildSpec:
    return ChildSpec(
        scenarios="x.toml", tier="smoke", device="cpu", rounds=3, round_s=0.1, batch_timeout_s=60, cases=cases
    )


def runs(tmp_path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]


def test_abba_order_early_decisions_and_one_calibration(tmp_path: Path) -> None:
    arms = fake_arms(tmp_path, head_FAKE_SPEED=json.dumps({"slow": 0.5}), FAKE_NOISE_noisy="0.3")
    steps: list[Step] = []
    result = run_ab(spec("same", "slow", "noisy"), arms, Schedule(max_pairs=5), cwd=tmp_path, progress=steps.append)
    log = runs(tmp_path)
    assert [r["arm"] for r in log[:6]] == ["base", "head", "head", "base", "base", "head"]
    assert [s.arm for s in steps] == [r["arm"] for r in log]
    assert log[0]["cases"] == ["same", "slow", "noisy"]
    assert log[2]["cases"] == log[0]["cases"]  # nothing is decided from one pair
    assert log[4]["cases"] == ["same", "slow", "noisy"]  # no case is decided before the first look (3 pairs)
    # "slow": regressed after 3 pairs; "noisy" (±30% a run): no outcome is within reach by 5 pairs, so it
    # stops too (futility: it could only have ended inconclusive)
    assert len(log) == 6 and result.blocks == 3
    outcome = {v.case_id: v.outcome for v in result.verdicts}
    assert outcome == {"same": "unchanged", "slow": "regressed", "noisy": "inconclusive"}
    assert result.failed and result.stopped == "every case was decided"
    noisy = next(v for v in result.verdicts if v.case_id == "noisy")
    assert "too noisy to be decided within 5 pairs" in noisy.reason
    assert len(result.pairs["same"]) == 3 and len(result.pairs["slow"]) == 3 and len(result.pairs["noisy"]) == 3
    assert progress_line(steps[0]) == "loaderbench ab: block 1/5 (A B), base, 3 case(s) left, starting"
    assert "noisy: samples_per_s" in "\n".join(summary_lines(result))


def test_both_arms_get_the_parents_one_calibration(tmp_path: Path) -> None:
    arms = fake_arms(tmp_path, **{CALIBRATION_ENV: "123"})  # the runner's own measurement replaces any
    result = run_ab(spec("same"), arms, Schedule(max_pairs=2), cwd=tmp_path)
    handed = {r["calibration"] for r in runs(tmp_path)}
    assert handed == {repr(result.calibration)} and result.calibration > 0
    assert not result.notes  # both arms used it


def test_a_linear_drift_across_the_job_is_cancelled(tmp_path: Path) -> None:
    """Each child is 14% slower than the one before it: base-first in every block would read the head 14%
    slower in every pair (a regression); ABBA turns it into +d and -d in turn, which the mean cancels."""
    arms = fake_arms(tmp_path, FAKE_DRIFT="0.15")
    result = run_ab(spec("same"), arms, Schedule(max_pairs=4), cwd=tmp_path)
    assert not result.failed and {v.outcome for v in result.verdicts} <= {"unchanged", "inconclusive"}
    logs = [math.log(h.samples_per_s / b.samples_per_s) for b, h in result.pairs["same"]]
    assert logs[:2] == [pytest.approx(-0.15, abs=0.01), pytest.approx(0.15, abs=0.01)]  # against the head, then for it
    assert abs(logs[0] + logs[1]) < 0.01  # one ABBA cycle cancels it


def test_the_budget_stops_new_blocks_after_three(tmp_path: Path) -> None:
    arms = fake_arms(tmp_path, FAKE_SLEEP="0.2", FAKE_NOISE_noisy="0.3")
    result = run_ab(spec("noisy"), arms, Schedule(max_pairs=8, budget_s=0.5), cwd=tmp_path)
    assert result.blocks == 3 and "--loader-ab-budget" in result.stopped  # a change is decided from 3 pairs on
    assert "stopped at 3 pairs by the --loader-ab-budget" in result.verdicts[0].reason


def test_a_case_failing_in_the_head_fails_the_run_and_leaves_the_schedule(tmp_path: Path) -> None:
    arms = fake_arms(tmp_path, head_FAKE_FAIL="broken")
    result = run_ab(spec("broken", "same"), arms, Schedule(max_pairs=3), cwd=tmp_path)
    assert result.failed and [f.case_id for f in result.head_failures] == ["broken"]
    assert runs(tmp_path)[2]["cases"] == ["same"]  # the failed case left the schedule
    assert any(line.startswith("FAILED in the head arm (block 1)") for line in summary_lines(result))


def test_the_environment_difference_is_reported(tmp_path: Path) -> None:
    arms = fake_arms(tmp_path, head_FAKE_TORCH="2.14.1+cpu")
    result: ABResult = run_ab(spec("same"), arms, Schedule(max_pairs=2), cwd=tmp_path)
    assert result.changes() == ["torch 2.13.0+cpu -> 2.14.1+cpu", "$ARM base -> head"]


def test_a_crashing_child_is_an_error_naming_it_and_keeps_its_files(tmp_path: Path) -> None:
    arms = fake_arms(tmp_path, base_FAKE_CRASH="1")
    with pytest.raises(ABError, match=r"the base arm \(.*fake-python\) in block 1 crashed: it exited with status 3"):
        run_ab(spec("same"), arms, Schedule(max_pairs=2), cwd=tmp_path)


TERM_PARENT = """
import sys
from pathlib import Path
from loaderbench.ab.process import run_grouped
child = [sys.executable, "-c", "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(120)"]
run_grouped(child + [sys.argv[1]], label="t", env={}, cwd=Path("."), log=Path(sys.argv[2]), timeout_s=None)
"""


def test_sigterm_to_the_runner_kills_the_childs_group(tmp_path: Path) -> None:
    """A cancelled CI job sends SIGTERM: the child and its group must not run on as orphans."""
    pid_file, log = tmp_path / "child.pid", tmp_path / "child.log"
    parent = subprocess.Popen([sys.executable, "-c", TERM_PARENT, str(pid_file), str(log)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline and parent.poll() is None, "the child never started"
        time.sleep(0.05)
    child = int(pid_file.read_text())
    parent.send_signal(signal.SIGTERM)
    _, err = parent.communicate(timeout=60)
    assert parent.returncode != 0 and b"interrupted by SIGTERM" in err
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE


def test_check_interpreter(tmp_path: Path) -> None:
    assert check_interpreter(sys.executable, label="X", cwd=tmp_path) == sys.executable
    assert check_interpreter("sh", label="X", cwd=tmp_path).endswith("/sh")  # a bare name: on $PATH
    (tmp_path / "plain").write_text("")
    with pytest.raises(ABError, match=r"X: .*plain is not executable. Make it executable \(chmod \+x"):
        check_interpreter("plain", label="X", cwd=tmp_path)
    with pytest.raises(ABError, match="is a directory"):
        check_interpreter(str(tmp_path), label="X", cwd=tmp_path)


# --- end to end ------------------------------------------------------------------------------------------

SCENARIOS = """
[[workload]]
name = "tiny"
kind = "user"
factory = "slowdata:make"
batch_size = 8
tiers = ["smoke"]

[[workload]]
name = "steady"
kind = "sleep"
latency_s = 0.0005
shape = [4]
batch_size = 8
tiers = ["smoke"]
"""
#: 0.5 ms per sample, 4 ms when $AB_SLOW is set: the head, run by slow.sh, is 8x slower on it.
SLOWDATA = """
import os
import time

import torch
from torch.utils.data import Dataset


class Slow(Dataset):
    def __init__(self):
        self.cost = 0.004 if os.environ.get("AB_SLOW") else 0.0005

    def __len__(self):
        return 64

    def __getitem__(self, i):
        time.sleep(self.cost)
        return torch.zeros(4)


def make():
    return Slow()
"""
FAST = ("--loader-scenarios=workloads.toml", "--loader-config=w0-bs8", "--loader-rounds=3")


def wrapper(directory: Path, name: str, body: str) -> Path:
    path = directory / name
    path.write_text(f'#!/bin/sh\n{body}\nexec "{sys.executable}" "$@"\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def descendants() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makefile(".toml", workloads=SCENARIOS)
    pytester.makepyfile(slowdata=SLOWDATA)
    pytester.syspathinsert()  # the in-process runs import the user workload as `python -m pytest` would
    return pytester


@pytest.mark.slow
def test_end_to_end_finds_the_regression_and_not_the_unchanged_case(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The head is this pytest run under slow.sh (``AB_SLOW=1``), as ``loaderbench ab plain.sh slow.sh`` runs
    it: the command hands its own environment to the base arm, so the base (a plain wrapper) runs without
    ``AB_SLOW`` though the pytest that starts it has it."""
    plain = wrapper(project.path, "plain.sh", "")
    slow = wrapper(project.path, "slow.sh", "export AB_SLOW=1")
    monkeypatch.delenv("AB_SLOW", raising=False)
    monkeypatch.setenv(BASE_ENVIRON, json.dumps(dict(os.environ)))
    before = descendants()
    t0 = time.perf_counter()
    result = project.run(
        str(slow), "-m", "pytest", "--benchmark", f"--loader-ab={plain.name}",
        *FAST, "--loader-round-seconds=0.03", "--loader-ab-pairs=3", "--loader-report=report", "-p", "no:cacheprovider",
        timeout=300,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    out = result.stdout.str()
    assert result.ret == 1, out + result.stderr.str()
    assert "Traceback" not in out + result.stderr.str()
    lines = out.splitlines()
    first = lines.index(next(ln for ln in lines if ln.startswith("REGRESSIONS: ")))
    table = lines[first + 1 : first + 4]
    assert table[0].split()[:4] == ["case", "metric", "base", "head"] and "head/base [95% CI]" in table[0]
    assert table[1].split()[:2] == ["tiny-cpu-w0-bs8", "samples_per_s"] and "slower" in table[1]
    assert "environment, base -> head: $AB_SLOW unset -> 1" in out  # the variable reached the head only
    assert "steady-cpu-w0-bs8" not in "\n".join(table)
    assert sum("loaderbench ab: block" in ln for ln in lines) == 6  # one line per child: 3 blocks x 2 arms
    doc = json.loads((project.path / "report" / "results.json").read_text())
    verdicts = doc["context"]["ab"]["verdicts"]
    by_case = {(v["case_id"], v["metric"]): v for v in verdicts}
    assert by_case[("tiny-cpu-w0-bs8", "samples_per_s")]["outcome"] == "regressed"
    assert by_case[("steady-cpu-w0-bs8", "samples_per_s")]["outcome"] != "regressed"  # the A/A case
    assert all(isinstance(v, dict) and v["pairs"] == len(v["log_ratios"]) for v in verdicts)
    assert {c["consumer"] for c in doc["cases"]} == {"", "base"}  # head and base side by side
    assert len(doc["context"]["ab"]["runs"]["tiny-cpu-w0-bs8"]) == 3
    assert "## A/B: base vs head" in (project.path / "report" / "report.md").read_text()
    assert descendants() <= before
    print(f"end-to-end A/B: {wall:.1f} s")


USER_TEST = """
from loaderbench.config import LoaderConfig
from slowdata import Slow


def test_my_pipeline(loader_benchmark):
    loader_benchmark(Slow, LoaderConfig(batch_size=8))


def test_not_a_benchmark():
    pass
"""


@pytest.mark.slow
def test_a_users_loader_benchmark_test_is_compared_in_each_arms_environment(pytester: pytest.Pytester) -> None:
    """A repository with only its own ``loader_benchmark`` test (no suite, no fixtures/): the A/B runs that test
    in both arms through pytest, pairs it, and finds the head's slowdown; the plain test is not run."""
    pytester.makepyfile(test_mine=USER_TEST, slowdata=SLOWDATA)
    plain = wrapper(pytester.path, "plain.sh", "unset AB_SLOW")
    slow = wrapper(pytester.path, "slow.sh", "export AB_SLOW=1")
    before = descendants()
    result = pytester.run(
        str(slow), "-m", "pytest", "--benchmark", f"--loader-ab={plain}", "--loader-rounds=3",
        "--loader-round-seconds=0.03", "--loader-ab-pairs=3", "-p", "no:cacheprovider", "--loader-history=hist",
        timeout=300,
    )  # fmt: skip
    out = result.stdout.str()
    assert result.ret == 1, out + result.stderr.str()
    assert "REGRESSIONS: 1 case, " in out and "CUDA case(s) skipped" not in out  # no tier case in this A/B
    # --loader-history kept the head arm's case: its three blocks, one record, under the head's environment
    (kept,) = store.read(pytester.path / "hist").records
    assert kept.case == "test_my_pipeline-cpu-w0-bs8" and kept.environment.torch
    assert kept.metrics["samples_per_s"].lo < kept.metrics["samples_per_s"].value < kept.metrics["samples_per_s"].hi
    row = next(ln for ln in out.splitlines() if ln.strip().startswith("test:test_mine.py::test_my_pipeline "))
    assert "samples_per_s" in row and "slower" in row, row
    assert "2 deselected" in out and "Traceback" not in out + result.stderr.str()
    assert descendants() <= before


def test_cli_ab_runs_heads_pytest_and_hands_its_environment_to_the_base(tmp_path: Path) -> None:
    seen = tmp_path / "seen.json"
    recorder = tmp_path / "recorder.py"
    recorder.write_text(
        f"import json, os, sys\njson.dump([sys.argv[1:], dict(os.environ)], open({str(seen)!r}, 'w'))\nsys.exit(7)\n"
    )
    fake_head = tmp_path / "head.sh"  # answers the quick probe; as "pytest", records how it was called, exits 7
    fake_head.write_text(
        f"""#!/bin/sh
if [ "$1" = "-c" ]; then echo '{PROBE_MARK}[]'; exit 0; fi
export FROM_HEAD=1
exec "{sys.executable}" -S {recorder} "$@"
"""
    )
    fake_head.chmod(0o755)
    code = cli.main(["ab", sys.executable, str(fake_head), "--", "--loader-tier=standard", "-x"])
    assert code == 7  # pytest's exit status, passed through
    argv, env = json.loads(seen.read_text())
    assert argv == ["-m", "pytest", "--benchmark", f"--loader-ab={sys.executable}", "--loader-tier=standard", "-x"]
    handed = json.loads(env[BASE_ENVIRON])
    assert env["FROM_HEAD"] == "1" and "FROM_HEAD" not in handed


# --- errors ----------------------------------------------------------------------------------------------


def usage_error(project: pytest.Pytester, *args: str) -> str:
    before = descendants()
    result = project.runpytest("--benchmark", *FAST, *args)
    err = result.stderr.str()
    assert result.ret == 4, result.stdout.str() + err
    assert "Traceback" not in err + result.stdout.str()
    assert descendants() <= before
    return err


def test_a_missing_or_unusable_base_path_is_a_usage_error(project: pytest.Pytester) -> None:
    err = usage_error(project, "--loader-ab=no/such/python")
    assert "--loader-ab=no/such/python: " in err and "does not exist. Pass a Python interpreter" in err
    (project.path / "notexec").write_text("#!/bin/sh\n")
    err = usage_error(project, "--loader-ab=notexec")
    assert "notexec is not executable. Make it executable (chmod +x" in err


def test_ab_with_baseline_save_or_too_few_pairs_is_a_usage_error(project: pytest.Pytester) -> None:
    err = usage_error(project, f"--loader-ab={sys.executable}", "--loader-baseline-save")
    assert "records no baseline: drop --loader-baseline-save" in err
    err = usage_error(project, f"--loader-ab={sys.executable}", "--loader-ab-pairs=2")
    assert "--loader-ab-pairs='2' must be >= 3" in err


@pytest.mark.parametrize(
    "option",
    ["--loader-compare-anyway", "--loader-max-extra=5", "--loader-baseline-dir=elsewhere", "--loader-baseline-prune"],
)
def test_ab_with_an_option_of_the_stored_gate_is_a_usage_error(project: pytest.Pytester, option: str) -> None:
    err = usage_error(project, f"--loader-ab={sys.executable}", option)
    assert f"{option} belong(s) to the stored-baseline gate, which an A/B does not use" in err


def test_a_base_that_is_not_python_is_a_usage_error(project: pytest.Pytester) -> None:
    liar = project.path / "liar.sh"
    liar.write_text("#!/bin/sh\necho 'I am not python'\nexit 1\n")
    liar.chmod(0o755)
    err = usage_error(project, "--loader-ab=liar.sh")
    assert "liar.sh does not behave like a Python interpreter" in err and "exited with status 1" in err
    assert "I am not python" in err and 'exec python "$@"' in err


def test_a_base_without_loaderbench_is_a_usage_error(project: pytest.Pytester) -> None:
    bare = project.path / "bare.sh"  # no site-packages: neither loaderbench nor torch
    bare.write_text(f'#!/bin/sh\nexec "{sys.executable}" -I -S "$@"\n')
    bare.chmod(0o755)
    err = usage_error(project, "--loader-ab=bare.sh")
    assert "bare.sh cannot import loaderbench and torch. Install loaderbench" in err


def test_a_base_that_crashes_midway_is_a_usage_error_and_its_processes_are_killed(project: pytest.Pytester) -> None:
    answer = PROBE_MARK + json.dumps({"child": True, "loaderbench": "0.1.0", "torch": "2.13.0"})
    crash = project.path / "crash.sh"  # answers the probe, then dies in its first block, leaving a sleeper behind
    crash.write_text(
        textwrap.dedent(f"""\
        #!/bin/sh
        if [ "$1" = "-c" ]; then echo '{answer}'; exit 0; fi
        sleep 60 &
        echo $! > sleeper.pid
        echo "Segmentation fault (simulated)" >&2
        exit 139
        """)
    )
    crash.chmod(0o755)
    err = usage_error(project, "--loader-ab=crash.sh")
    assert "--loader-ab=crash.sh: the base arm (" in err and "in block 1 crashed: it exited with status 139" in err
    assert "Segmentation fault (simulated)" in err and "Run it alone to see why" in err
    sleeper = int((project.path / "sleeper.pid").read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            if psutil.Process(sleeper).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the crashed base's background process survived: its process group was not killed")


def test_cli_ab_checks_its_paths(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli.main(["ab", str(tmp_path / "nope"), sys.executable]) == 2
    err = capsys.readouterr().err
    assert "loaderbench ab: error: BASE=" in err and "does not exist. Pass a Python interpreter" in err
    liar = wrapper(tmp_path, "liar.sh", "echo nope; exit 1")
    assert cli.main(["ab", sys.executable, str(liar)]) == 2
    assert "HEAD=" in capsys.readouterr().err


def test_the_child_spec_carries_the_simulated_gpu_and_the_child_marks_its_cuda_cases() -> None:
    sim = dataclasses.replace(spec(), scenarios=str(data.WORKLOADS), device="cuda")
    sim = dataclasses.replace(sim, simulated_gpu=True)
    assert ChildSpec.from_json(sim.to_json()) == sim
    cases = select_cases(sim)
    assert cases and all(c.simulated_gpu is not None and c.id.endswith("-simgpu") for c in cases)
    plain = dataclasses.replace(sim, simulated_gpu=False)
    assert "simulated_gpu" not in plain.to_json() and all(c.simulated_gpu is None for c in select_cases(plain))


def test_a_metric_decided_at_a_look_stays_decided_while_the_case_runs_on() -> None:
    from loaderbench.ab.schedule import _keep_decided

    def v(metric: str, outcome: str, pairs: int) -> ABVerdict:
        return ABVerdict(metric=metric, outcome=outcome, pairs=pairs, **BLANK)  # type: ignore[arg-type]

    before = [v("samples_per_s", "regressed", 3), v("ttfb_s", "inconclusive", 3)]
    now = [v("samples_per_s", "inconclusive", 4), v("ttfb_s", "unchanged", 4)]
    kept = _keep_decided(before, now)
    expected = [("samples_per_s", "regressed", 3), ("ttfb_s", "unchanged", 4)]
    assert [(x.metric, x.outcome, x.pairs) for x in kept] == expected


BLANK = dict(case_id="c", baseline=1.0, current=2.0, ratio=2.0, slowdown=2.0, threshold=0.1, p_value=None, z=0.0,
             noise=0.01, resolves=0.1, mode="ab")  # fmt: skip
