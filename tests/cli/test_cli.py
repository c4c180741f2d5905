"""``loaderbench tune`` and ``loaderbench report``: the search logic on fakes, end to end through the
console script, and clear errors (exit 2, no traceback) on bad input."""

from __future__ import annotations

import functools
import io
import json
import math
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from loaderbench import cli
from loaderbench import config as config_module
from loaderbench.config import LoaderConfig
from loaderbench.errors import CaseFailed, UsageError
from loaderbench.tune import search as tune
from loaderbench.tune.probe import probe
from loaderbench.tune.progress import ProgressBar
from loaderbench.tune.run import load_callable, stall_without, with_persistence
from loaderbench.tune.run import tune as run_tune

DATASET = '''
import time

import torch
from torch.utils.data import Dataset


class Sleepy(Dataset):
    """0.3 ms of sleep per sample: I/O-bound, so workers help."""

    def __len__(self):
        return 200

    def __getitem__(self, i):
        time.sleep(0.0003)
        return torch.full((4,), float(i)), i


def make():
    return Sleepy()


class Ragged(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        return torch.zeros(i + 1)


def ragged():
    return Ragged()


def pad(batch):
    n = max(len(x) for x in batch)
    return torch.stack([torch.nn.functional.pad(x, (0, n - len(x))) for x in batch])


def broken():
    raise RuntimeError("the data server is down")


def not_a_dataset():
    return {"a": 1}


class BadItem(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        raise KeyError(i)


def bad_item():
    return BadItem()
'''


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """A directory holding a user module with a unique name (so tests never share a cached import)."""
    name = f"user_data_{uuid.uuid4().hex[:12]}"
    (tmp_path / f"{name}.py").write_text(DATASET)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path, name


def console() -> list[str]:
    """The ``loaderbench`` console script of this environment (``python -m loaderbench.cli`` until it is installed)."""
    script = Path(sys.executable).with_name("loaderbench")
    found = str(script) if script.exists() else shutil.which("loaderbench")
    return [found] if found else [sys.executable, "-m", "loaderbench.cli"]


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*console(), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


# --- end to end ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_tune_end_to_end_then_report(app: tuple[Path, str]) -> None:
    where, module = app
    proc = run(
        [
            "tune",
            f"{module}:make",
            "--budget=5",
            "--batch-size=16",
            "--rounds=3",
            "--round-seconds=0.02",
            "--max-workers=2",
            "--report=out",
        ],
        where,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for text in ("Recommended DataLoader settings:", "Bottleneck: ", "vs the DataLoader defaults", "Lightning-style"):
        assert text in out, out
    assert "best" in proc.stderr  # the progress line
    assert "Traceback" not in proc.stderr

    # the snippet is Python that builds a working DataLoader
    lines = out.splitlines()
    start = lines.index("Recommended DataLoader settings:") + 2
    end = lines.index("    )", start)
    code = textwrap.dedent("\n".join(lines[start : end + 1]))
    scope: dict[str, object] = {}
    exec(compile(code, "<snippet>", "exec"), scope)
    batch = next(iter(scope["loader"]))  # type: ignore[call-overload]
    assert isinstance(batch[0], torch.Tensor) and batch[0].shape == (16, 4)

    report_dir = where / "out"
    doc = json.loads((report_dir / "results.json").read_text())
    assert doc["context"]["tune"]["factory"] == f"{module}:make"
    assert doc["cases"], "no measurement was written"
    assert "## Recommendation for" in (report_dir / "report.md").read_text()

    again = run(["report", "out/results.json", "--out=again", "--no-plots"], where)
    assert again.returncode == 0, again.stderr
    assert f"{module}.make on cpu" in again.stdout
    assert "## Recommendation for" in (where / "again" / "report.md").read_text()
    assert (where / "again" / "results.json").exists()


def test_bad_input_through_the_console_script(app: tuple[Path, str]) -> None:
    where, _ = app
    proc = run(["tune", "no_such_module_here:make"], where)
    assert proc.returncode == 2
    assert "factory='no_such_module_here:make': cannot import" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- bad input, in-process -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["tune", "{m}"], "not a 'module:factory' path"),
        (["tune", "{m}:nope"], "has no callable 'nope'"),
        (["tune", "{m}:broken"], "the factory raised RuntimeError: the data server is down"),
        (["tune", "{m}:not_a_dataset"], "returned dict, not a sized torch Dataset"),
        (["tune", "{m}:ragged"], "cannot be collated into a batch by torch's default_collate"),
        (["tune", "{m}:bad_item"], "fetching sample 0 raised KeyError"),
        (["tune", "{m}:make", "--collate={m}:missing"], "--collate='{m}:missing': {m} has no callable 'missing'"),
        (["tune", "{m}:make", "--collate=nowhere_at_all:f"], "--collate='nowhere_at_all:f': cannot import"),
        (["report", "does-not-exist.json"], "results='does-not-exist.json': file not found"),
        # before tuning, not a traceback after it
        (["tune", "{m}:make", "--report=/dev/null/out"], "--report=/dev/null/out: cannot create or write files"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(
    app: tuple[Path, str], capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    where, module = app
    argv = [a.format(m=module) for a in args] + (["--app-dir", str(where)] if args[0] == "tune" else [])
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert expected.format(m=module) in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("option", "expected", "fix"),
    [
        ("--budget=0", "--budget='0' must be positive", "e.g. --budget 60"),
        ("--budget=-5", "--budget='-5' must be positive", "e.g. --budget 60"),
        ("--budget=soon", "--budget='soon' is not a number", "e.g. --budget 60"),
        ("--batch-size=0", "--batch-size='0' must be >= 1", "Use your training batch size"),
        ("--rounds=1", "--rounds='1' must be >= 2", "Use e.g. 5"),
        ("--device=tpu", "--device='tpu' is not one of cpu, cuda", ""),
    ],
)
def test_bad_options_exit_2(capsys: pytest.CaptureFixture[str], option: str, expected: str, fix: str) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["tune", "m:f", option])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"Could not parse value: {expected}" in err and fix in err


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("budget_s", 0, "budget_s=0: must be a positive number of seconds. Use e.g. budget_s=60."),
        ("batch_size", 0, "batch_size=0: must be at least 1"),
        ("device", "tpu", "device='tpu': not a device. Use 'cpu' or 'cuda'."),
        ("step_ms", -1.0, "step_ms=-1.0: must be >= 0 milliseconds"),
        ("max_workers", 0, "max_workers=0: must be at least 1"),
    ],
)
def test_tune_spec_errors_name_the_field_not_a_flag(field: str, value: object, expected: str) -> None:
    with pytest.raises(UsageError) as info:
        tune.TuneSpec(factory="m:f", **{field: value})  # type: ignore[arg-type]
    assert expected in str(info.value) and "--" not in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_device_cuda_without_a_gpu_exits_2(app: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    where, module = app
    assert cli.main(["tune", f"{module}:make", "--device=cuda", "--app-dir", str(where)]) == 2
    err = capsys.readouterr().err
    assert "--device=cuda: no CUDA GPU" in err and "use --device cpu" in err


def test_user_collate_is_used(app: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    _, module = app
    spec = tune.TuneSpec(factory=f"{module}:ragged", collate=f"{module}:pad", batch_size=4)
    dataset = __import__(module).ragged()
    pr = probe(dataset, spec, load_callable(spec.collate or "", option="--collate"))
    assert pr.bytes_per_sample == 4 * 4  # padded to 4 floats per sample


def test_tune_with_a_collate_leaves_the_collate_registry_alone(app: tuple[Path, str]) -> None:
    _, module = app
    before = dict(config_module.COLLATES)
    spec = tune.TuneSpec(
        factory=f"{module}:ragged", collate=f"{module}:pad", batch_size=4, budget_s=0.01, rounds=2, round_s=0.01
    )
    result = run_tune(spec)
    assert before == config_module.COLLATES  # no "user" entry left behind
    assert result.defaults.collate == "user"  # resolved from the workload by the harness
    assert result.trial(result.defaults) is not None  # ragged samples: measured only through the user's pad


# --- the search, on fakes --------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def fixed_heuristics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        tune, "heuristics", lambda: {"num_workers = CPU count": 2, "Lightning-style: affinity CPUs - 1": 1}
    )


Searcher = Callable[..., tune.Search]


@pytest.fixture
def search(fake_search: Searcher) -> Searcher:
    """``search(rate, budget=100, max_workers=16)``: a whole search at batch size 8 whose measure gives
    ``rate(config)`` samples/s (NaN: the case fails)."""
    return functools.partial(
        fake_search, batch_size=8, budget=100.0, max_workers=16, failure="could not pickle the collate function"
    )


def io_bound(cfg: LoaderConfig) -> float:
    """Scales to 8 workers, then flat; prefetch, in_order and persistence change nothing."""
    return 1000.0 * max(1, min(cfg.num_workers, 8))


def test_io_bound_climbs_to_the_plateau_and_prunes_above_it(search: Searcher) -> None:
    s = search(io_bound)
    best = with_persistence(s, s.recommended().config)
    assert best.num_workers == 8
    assert best.prefetch_factor is None and best.in_order  # knobs that did not help stay at their defaults
    assert best.persistent_workers  # it halved the next-epoch stall
    counts = {c.num_workers for c in s.trials}
    assert 16 in counts and 32 not in counts  # two rungs without gain end the ladder
    assert "separated" in s.stop_reason or "within" in s.stop_reason


def test_ipc_bound_keeps_zero_workers(search: Searcher) -> None:
    rates = {0: 10_000.0, 1: 2_000.0, 2: 3_500.0, 4: 5_000.0}
    s = search(lambda c: rates.get(c.num_workers, 5_000.0))
    assert s.recommended().config.num_workers == 0
    assert {c.num_workers for c in s.trials} == {0, 1, 2}  # w1 and w2 both lose: no need to try 4
    assert "separated" in s.stop_reason


def test_ties_go_to_the_cheaper_config(search: Searcher) -> None:
    s = search(lambda c: 1000.0 * min(max(1, c.num_workers), 4) * (1.01 if c.num_workers >= 8 else 1.0))
    assert s.recommended().config.num_workers == 4


def test_the_budget_stops_the_search_but_the_defaults_are_always_measured(search: Searcher) -> None:
    s = search(io_bound, budget=0.5)
    assert list(s.trials) == [LoaderConfig(batch_size=8)]
    assert "budget" in s.stop_reason and "raise --budget" in s.stop_reason


def test_a_failing_config_is_recorded_and_skipped(search: Searcher) -> None:
    s = search(lambda c: math.nan if c.num_workers == 2 else io_bound(c))
    assert LoaderConfig(batch_size=8, num_workers=2) in s.failures
    assert s.recommended().config.num_workers == 8


def test_failing_defaults_raise(search: Searcher) -> None:
    with pytest.raises(CaseFailed):
        search(lambda c: math.nan)


def test_progress_reports_the_current_best(fake_run: Callable[..., Any]) -> None:
    fake = fake_run(io_bound)
    seen: list[tune.Progress] = []
    spec = tune.TuneSpec(factory="m:f", budget_s=100, max_workers=4, batch_size=8)
    tune.Search(spec, fake, base=LoaderConfig(batch_size=8), clock=fake.clock, progress=seen.append).search()
    assert seen[0].best == "w0-bs8" and seen[-1].best_rate == pytest.approx(4000, rel=0.01)
    stream = io.StringIO()
    bar = ProgressBar(stream)
    bar(seen[-1])
    bar.close()
    assert "best w4-bs8 4k/s (4.00x defaults)" in stream.getvalue()


def test_progress_off_a_terminal_writes_the_first_and_the_final_state_only(fake_run: Callable[..., Any]) -> None:
    fake = fake_run(io_bound)
    seen: list[tune.Progress] = []
    spec = tune.TuneSpec(factory="m:f", budget_s=100, max_workers=4, batch_size=8)
    tune.Search(spec, fake, base=LoaderConfig(batch_size=8), clock=fake.clock, progress=seen.append).search()
    stream = io.StringIO()  # not a TTY, as a CI log
    bar = ProgressBar(stream)
    for p in seen:
        bar(p)
    bar.close()
    out = stream.getvalue()
    assert len(seen) > 2 and out.count(" tried | ") == 2
    assert out.endswith("\n") and f"best {seen[-1].best}" in out.rsplit("\r", 1)[-1]


def test_persistence_without_a_measured_plain_stall_compares_with_the_first_batch(fake_run: Callable[..., Any]) -> None:
    fake = fake_run(io_bound)
    spec = tune.TuneSpec(factory="m:f", budget_s=100, max_workers=4, batch_size=8)
    s = tune.Search(spec, fake, base=LoaderConfig(batch_size=8), clock=fake.clock)
    plain = LoaderConfig(batch_size=8, num_workers=4)
    s.run(LoaderConfig(batch_size=8), force=True)
    s.run(plain)  # no second epoch: its stall is unknown, its time to first batch (50 ms) is a lower bound
    s.run(plain.replace(persistent_workers=True), next_epoch=True)  # stall 5 ms
    assert with_persistence(s, plain).persistent_workers
    assert stall_without(s.trials[plain]) == (0.05, False)
