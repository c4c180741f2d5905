"""``--loader-history`` and ``--loader-history-fail`` through pytest (pytester), on a user's tiny ``loader_benchmark``
test: the file after two runs, a failed test kept out, bad options and files as usage errors, and the exit status
on a flat history and on a step (the history before the newest run written directly, not measured)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loaderbench.history import store
from loaderbench.history.record import Figure, RunRecord
from loaderbench.store.environment import Environment
from loaderbench.store.fingerprint import Fingerprint

USER_TESTS = """
import time

import torch
from torch.utils.data import Dataset

from loaderbench.config import LoaderConfig


class Tiny(Dataset):
    def __len__(self):
        return 64

    def __getitem__(self, i):
        time.sleep(0.0005)
        return torch.zeros(4)


def test_kept(loader_benchmark):
    loader_benchmark(Tiny, LoaderConfig(batch_size=8))


def test_fails_after_measuring(loader_benchmark):
    loader_benchmark(Tiny, LoaderConfig(batch_size=4))
    assert False, "a check on the figures failed"
"""
KEPT = "test_kept-cpu-w0-bs8"


def run(p: pytest.Pytester, *args: str) -> pytest.RunResult:
    return p.runpytest(
        "--benchmark",
        "--loader-rounds=3",
        "--loader-round-seconds=0.02",
        "--loader-baseline-dir=baselines",
        "-p",
        "no:cacheprovider",
        "-k",
        "test_kept",
        *args,
    )


def history_file(p: pytest.Pytester) -> Path:
    (path,) = (p.path / "hist").glob("*.jsonl")
    return path


@pytest.mark.slow
def test_two_runs_append_one_record_each_and_a_failed_test_is_not_kept(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mine=USER_TESTS)
    for _ in range(2):
        result = run(pytester, "--loader-history=hist", "-k", "test_kept or test_fails")
        result.assert_outcomes(passed=1, failed=1)
        result.stdout.fnmatch_lines(["*loaderbench history: appended 1 case(s) as run * to *hist*.jsonl*"])
    path = history_file(pytester)
    head, *rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert head["format"] == "loaderbench-history" and head["version"] == 1
    assert path.name == f"{Fingerprint.from_dict(head['hardware']).key}.jsonl"
    assert [r["case"] for r in rows] == [KEPT, KEPT]  # the failed test's measurement is not a run to keep
    assert rows[0]["run"] != rows[1]["run"]
    for r in rows:
        assert r["simulated"] is False and r["commit"] is None  # pytester's directory is not a git checkout
        assert r["environment"]["torch"] and r["workload"] == "test_kept" and r["device"] == "cpu"
        f = r["metrics"]["samples_per_s"]
        assert 0 < f["lo"] <= f["value"] <= f["hi"]
    h = store.read(pytester.path / "hist")
    assert h.cases() == [KEPT] and len(h.series(KEPT, "samples_per_s")) == 2


@pytest.mark.slow
def test_an_interrupted_run_appends_nothing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_mine=USER_TESTS,
        test_zz_stop="def test_ctrl_c(loader_benchmark):\n    raise KeyboardInterrupt\n",
    )
    result = pytester.runpytest_subprocess(  # in-process, the KeyboardInterrupt would stop this session too
        "--benchmark", "--loader-rounds=3", "--loader-round-seconds=0.02", "--loader-baseline-dir=baselines",
        "-p", "no:cacheprovider", "--loader-history=hist", "-k", "test_kept or test_ctrl_c",
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*loaderbench history: the run was interrupted; nothing appended*"])
    assert not list((pytester.path / "hist").glob("*.jsonl"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--loader-history-fail"], "--loader-history-fail: there is no history to look at. Add --loader-history=DIR"),
        (["--loader-history=test_mine.py"], "--loader-history='test_mine.py' is a file, not a directory"),
        (["--loader-history="], "--loader-history='' is empty"),
    ],
)
def test_bad_history_options_are_usage_errors(pytester: pytest.Pytester, args: list[str], message: str) -> None:
    pytester.makepyfile(test_mine=USER_TESTS)
    result = run(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()
    assert "Traceback" not in result.stderr.str()


def write_history(
    p: pytest.Pytester, values: list[float], *, torch_from: int | None = None, runner: str | None = None
) -> Path:
    """The history of :data:`KEPT` on this machine, one run per value (times in the past), as if measured: in its
    own file, or (``runner``) in ``hist/RUNNER.jsonl``, as copied there from another runner of the class, beside
    this machine's file with its one real run and another machine's history."""
    result = run(p, "--loader-history=hist")  # one real run: this machine's file, its hardware and its level
    assert result.ret == 0, result.stdout.str()
    path = history_file(p)
    head, (real,) = path.read_text().splitlines()[0], path.read_text().splitlines()[1:]
    level = json.loads(real)["metrics"]["samples_per_s"]["value"]
    records = []
    for i, v in enumerate(values):
        env = Environment(torch="2.14.1" if torch_from is not None and i >= torch_from else "2.13.0",
                          git_commit=f"c{i:04d}")  # fmt: skip
        value = level * v
        records.append(
            RunRecord(f"old{i}", f"2026-10-{1 + i // 24:02d}T{i % 24:02d}:00:00+00:00", env.git_commit, env, KEPT,
                      "test_kept", "cpu", False, {"samples_per_s": Figure(value, value * 0.995, value * 1.005)})
        )  # fmt: skip
    if runner is None:
        path.write_text(head + "\n" + "".join(r.line() for r in records), encoding="utf-8")
        return path
    other = Fingerprint.from_dict({**json.loads(head)["hardware"], "cpu_model": "Another CPU"})
    store.append(p.path / "hist", other, records[:3])  # another machine's history: left alone
    copied = p.path / "hist" / f"{runner}.jsonl"
    copied.write_text(head + "\n" + "".join(r.line() for r in records), encoding="utf-8")
    return copied


WOBBLE = [1 + 0.002 * ((i * 7) % 5 - 2) for i in range(40)]


@pytest.mark.slow
def test_history_fail_passes_on_a_flat_history(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mine=USER_TESTS)
    write_history(pytester, WOBBLE[:20])
    result = run(pytester, "--loader-history=hist", "--loader-history-fail")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*loaderbench history: the drift of 1 case(s), measured over their runs in *, is pooled with the gate's*",
            "*loaderbench history: no regression opened by the newest runs in 1 case(s)*",
        ]
    )


@pytest.mark.slow
def test_history_fail_fails_on_a_step_naming_case_size_commits_and_environment(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mine=USER_TESTS)
    # 20 runs twice as fast as today, then 4 at today's level under a new torch, from another runner of the class;
    # this runner's first real run and today's are the 5th and 6th after it
    write_history(pytester, [2 * w for w in WOBBLE[:20]] + WOBBLE[20:24], torch_from=20, runner="runner-b")
    result = run(pytester, "--loader-history=hist", "--loader-history-fail")
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED, out
    result.stdout.fnmatch_lines(
        [
            "*HISTORY REGRESSIONS (--loader-history-fail): 1*",
            f"*{KEPT} samples_per_s: *x slower (95% CI *; threshold 10%; p=*) since run old20 at *, 6 run(s) ago; "
            "commits c0019..c0020; environment changes: torch 2.13.0 -> 2.14.1*",
        ]
    )
    result.stdout.fnmatch_lines(["*1 passed*1 history regressed*"])
    fingerprint = store.read(pytester.path / "hist" / "runner-b.jsonl").hardware
    assert len(store.read(pytester.path / "hist", hardware=fingerprint).records) == 26  # kept, then judged


def test_a_corrupt_history_is_a_usage_error_before_anything_is_measured(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mine=USER_TESTS)
    path = write_history(pytester, WOBBLE[:3])
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines[:2], "garbage", *lines[2:]]) + "\n", encoding="utf-8")
    result = run(pytester, "--loader-history=hist")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert f"{path.name}: line 3: not valid JSON" in err and "fix or delete that line" in err
    assert "Traceback" not in err
    assert len(path.read_text().splitlines()) == 5  # untouched


SIMULATED = """
import torch
from torch.utils.data import TensorDataset

from loaderbench.config import LoaderConfig


def test_gpu_feed(loader_benchmark):
    loader_benchmark(lambda: TensorDataset(torch.zeros(128, 3, 8, 8)), LoaderConfig(batch_size=16), device="cuda")
"""


@pytest.mark.slow
def test_a_case_on_the_simulated_gpu_is_marked_simulated_in_a_history_of_its_own(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_sim=SIMULATED)
    result = pytester.runpytest_subprocess(
        "--benchmark", "--loader-simulated-gpu", "--loader-rounds=2", "--loader-round-seconds=0.02",
        "--loader-baseline-dir=baselines", "--loader-history=hist", "-p", "no:cacheprovider",
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    (h,) = store.histories(pytester.path / "hist")
    assert h.hardware.gpus[0] == "loaderbench simulated GPU"  # keyed apart from any real GPU's history
    (kept,) = h.records
    assert kept.simulated is True and kept.device == "cuda" and kept.case.endswith("-simgpu")
    assert "feed_samples_per_s" in kept.metrics
