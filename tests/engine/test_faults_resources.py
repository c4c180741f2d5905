"""Faults from the machine's resources and the user's set-up: a worker dying at exit, /dev/shm really full,
file descriptors running out, segments left under file_system sharing, a bad factory or batch timeout, and a
failing case inside the plugin.  Each fails its case with one clear paragraph (or a note, where the rounds
stand), and nothing is left behind (``leftovers`` and ``run_fault``, tests/engine/conftest.py).  The faults
injected into a dataset are in test_faults.py."""

from __future__ import annotations

import errno
import faulthandler
import json
import multiprocessing.process
import multiprocessing.util
import os
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil
import pytest
import torch
from torch.utils.data import Dataset, get_worker_info
from torch.utils.data._utils import signal_handling

from loaderbench import CaseFailed, CpuConsumer, LoaderConfig, Plan, UsageError, Workload, measure
from loaderbench.engine.cleanup import reap
from loaderbench.engine.explain import explain_failure
from loaderbench.pipelines.dataloader import DataLoaderPipeline

#: ``run_fault(workload, config, plan=..., consumer=..., kind=...)`` (tests/engine/conftest.py).
RunFault = Callable[..., str]
PLAN = Plan(rounds=2, round_s=0.02, batch_timeout_s=60)


# --- a worker dying as it exits --------------------------------------------------------------------------------


def _abort_quietly() -> None:
    faulthandler.disable()  # pytest's faulthandler would print every thread's stack first
    os.abort()


class AbortsAtExit(Dataset[torch.Tensor]):
    """Each worker aborts (SIGABRT) as it exits, after serving every batch: a death during shutdown."""

    def __init__(self, length: int) -> None:
        self.length, self.armed = length, False

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        if get_worker_info() is not None and not self.armed:
            self.armed = True
            multiprocessing.util.Finalize(None, _abort_quietly, exitpriority=100)  # runs as the worker exits
        return torch.zeros(4)


@dataclass(frozen=True, slots=True)
class AbortsAtExitWorkload(Workload):
    def build(self, length: int, workdir: Any = None) -> Dataset[Any]:
        return AbortsAtExit(length)


@pytest.mark.slow
def test_a_worker_that_dies_during_shutdown_is_a_note_not_an_unraisable_exception(leftovers: Callable[[], Any]) -> None:
    """torch raises "killed by signal: Aborted" from its SIGCHLD handler; in the iterator's ``__del__``
    that was an unraisable exception (which this suite's filterwarnings=error turns into a failure)."""
    before = leftovers()
    workload = AbortsAtExitWorkload(name="aborts-at-exit", kind="user", batch_size=4)
    for persistent in (True, False):
        config = LoaderConfig(batch_size=4, num_workers=1, persistent_workers=persistent)
        try:
            m = measure(workload, config, plan=PLAN)
        except CaseFailed as exc:  # torch noticed the death inside the epoch's last next(): one paragraph
            assert "killed by signal: Aborted" in str(exc) and exc.kind, exc
        else:  # noticed at the harness's own shutdown of the workers: a note on a case that measured
            assert len(m.rounds["samples_per_s"]) == PLAN.rounds
            # whether torch's SIGCHLD handler sees the death before the shutdown returns is a race: the note is
            # optional here, its wording is checked deterministically below; this test's point is no unraisable
            # exception (filterwarnings=error) and nothing left behind
            notes = [n for n in m.notes if "did not shut down cleanly" in n]
            assert all("killed by signal: Aborted" in n and "(the rounds stand)" in n for n in notes), m.notes
        before.assert_none_since()


class _DiesAtShutdown:
    """An iterator whose worker shutdown raises what torch's SIGCHLD handler raises for a worker's abort."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def _shutdown_workers(self) -> None:
        raise self.exc


@pytest.mark.parametrize("exc", [RuntimeError, ConnectionError, EOFError, OSError])
def test_a_death_at_shutdown_becomes_a_note_with_its_first_line(exc: type[BaseException]) -> None:
    notes: list[str] = []
    pipeline = DataLoaderPipeline([torch.zeros(1)], {"batch_size": 1})
    died = exc("DataLoader worker (pid(s) 4242) exited unexpectedly: killed by signal: Aborted.\nmore")
    pipeline.release(_DiesAtShutdown(died), notes, "the epoch's")
    assert notes == [
        "the epoch's workers did not shut down cleanly: DataLoader worker (pid(s) 4242) exited unexpectedly: "
        "killed by signal: Aborted. (the rounds stand)"
    ]


def test_an_error_at_shutdown_that_is_not_a_death_is_raised() -> None:
    pipeline = DataLoaderPipeline([torch.zeros(1)], {"batch_size": 1})
    with pytest.raises(ValueError, match="a bug"):
        pipeline.release(_DiesAtShutdown(ValueError("a bug")), [], "the epoch's")


# --- the machine's limits: /dev/shm, file descriptors, segments left behind ----------------------------------------


REAL_SHM_CHILD = """
import json, sys
from loaderbench import CaseFailed, LoaderConfig, Plan, Workload, measure
big = Workload(name="big", kind="tensor-fill", batch_size=16, params={"shape": [3, 224, 224]})  # 9.6 MB batches
config = LoaderConfig(batch_size=16, num_workers=2, multiprocessing_context="fork")
try:
    measure(big, config, plan=Plan(rounds=2, round_s=0.05, batch_timeout_s=60))
    print(json.dumps({"kind": None}))
except CaseFailed as exc:
    print(json.dumps({"kind": exc.kind, "text": str(exc)}))
"""


def _private_shm_possible() -> str:
    """Why a private, small /dev/shm cannot be mounted here ("" when it can)."""
    if os.geteuid() != 0:
        return "needs root to mount a private tmpfs on /dev/shm (unshare --mount)"
    if shutil.which("unshare") is None:
        return "needs util-linux's unshare"
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /dev/shm"],
        capture_output=True,
        check=False,
    )
    return "" if probe.returncode == 0 else f"cannot mount a tmpfs in a private mount namespace: {probe.stderr!r}"


def test_real_shared_memory_exhaustion_becomes_one_paragraph() -> None:
    """/dev/shm really full: a private mount namespace with a 4 MB tmpfs on /dev/shm, and a case whose workers
    put 9.6 MB batches there.  torch's own error (not a simulated one) must become our message."""
    why = _private_shm_possible()
    if why:
        pytest.skip(why)
    script = f"mount -t tmpfs -o size=4m tmpfs /dev/shm && exec {sys.executable} -c {shlex.quote(REAL_SHM_CHILD)}"
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["kind"] == "shm-exhausted", out
    assert "shared memory (/dev/shm) ran out" in out["text"] and "--shm-size" in out["text"], out["text"]
    assert out["text"].startswith("case big-cpu-w2-bs16-fork failed: ") and "\n" not in out["text"]


class ManyTensors(Dataset[Any]):
    """64 tensors per sample: under the file_descriptor strategy, 64 descriptors per sample in flight."""

    def __len__(self) -> int:
        return 100_000

    def __getitem__(self, index: int) -> list[torch.Tensor]:
        return [torch.zeros(1) for _ in range(64)]


@dataclass(frozen=True, slots=True)
class ManyTensorsWorkload(Workload):
    def build(self, length: int, workdir: Any = None) -> Dataset[Any]:
        return ManyTensors()


class SqueezeFds(CpuConsumer):
    """Keeps every batch (as a consumer that collects outputs would), and after the first one (the workers are
    running by then) lowers this process's open-files limit to just above what it uses: under the
    file_descriptor strategy each kept tensor holds a descriptor, so receiving the next batch fails for real."""

    def __init__(self) -> None:
        self.limits = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.kept: list[Any] = []
        self.batches = 0

    def consume(self, batch: Any) -> None:
        self.kept.append(batch)
        self.batches += 1
        if self.batches == 1:
            resource.setrlimit(resource.RLIMIT_NOFILE, (psutil.Process().num_fds() + 16, self.limits[1]))

    def restore(self) -> None:
        self.kept.clear()
        resource.setrlimit(resource.RLIMIT_NOFILE, self.limits)


def test_too_many_open_files(run_fault: RunFault) -> None:
    squeeze = SqueezeFds()
    plan = Plan(rounds=2, round_s=0.02, batch_timeout_s=30)
    workload = ManyTensorsWorkload(name="many-tensors", kind="sleep", batch_size=1, params={"latency_s": 1e-4})
    config = LoaderConfig(batch_size=None, num_workers=2, multiprocessing_context="fork", collate="list")
    try:
        text = run_fault(workload, config, plan=plan, consumer=squeeze, kind="too-many-open-files")
        assert 1 <= squeeze.batches <= 3, "the limit is lowered once the workers run, and bites within 2 batches"
    finally:
        squeeze.restore()
    assert "the process ran out of file descriptors" in text and "ulimit -n is" in text
    assert "file_system" in text and "set_sharing_strategy('file_system')" in text and "ulimit -n" in text


def test_torchs_own_too_many_open_files_message_names_file_system() -> None:
    torch_text = (
        "Too many open files. Communication with the workers is no longer possible. Please increase the limit "
        "using `ulimit -n` in the shell or change the sharing strategy by calling "
        "`torch.multiprocessing.set_sharing_strategy('file_system')` at the beginning of your code"
    )
    for exc in (RuntimeError(torch_text), OSError(errno.EMFILE, "Too many open files")):
        text = str(explain_failure("io-cpu-w2-bs32", exc))
        assert text.startswith("case io-cpu-w2-bs32 failed: the process ran out of file descriptors")
        assert "sharing_strategy='file_system'" in text and "\n" not in text


def test_file_system_sharing_leaves_no_segment_behind(leftovers: Callable[[], Any]) -> None:
    """Batches in flight when a loader is released stay in /dev/shm under file_system; the harness removes
    the ones its exited workers made (and says so)."""
    before = leftovers()
    config = LoaderConfig(batch_size=32, num_workers=2, persistent_workers=True, sharing_strategy="file_system")
    transfer = Workload(name="transfer", kind="tensor-fill", batch_size=32, params={"shape": [3, 64, 64]})
    m = measure(transfer, config, plan=PLAN)
    assert m.rounds["samples_per_s"]
    before.assert_none_since()


# --- the user's set-up: a bad factory or batch timeout, a failing case in the plugin --------------------------------


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        ("userdata.good", "factory='userdata.good': not a 'module:factory' path. Write it as e.g. mypkg.data:"),
        ("nosuchmodule:make", "factory='nosuchmodule:make': cannot import 'nosuchmodule'"),
        (
            "loaderbench.engine.explain:shm_usage",
            "factory='loaderbench.engine.explain:shm_usage': returned str, not a sized torch",
        ),
        ("loaderbench.engine.cleanup:reap", "factory='loaderbench.engine.cleanup:reap': the factory raised TypeError"),
    ],
)
def test_a_bad_user_factory_fails_its_case_naming_the_argument(factory: str, message: str) -> None:
    workload = Workload(name="mine", kind="user", batch_size=4, params={"factory": factory})
    with pytest.raises(CaseFailed) as info:
        measure(workload, LoaderConfig(batch_size=4), plan=PLAN)
    assert str(info.value).startswith(f"case mine-cpu-w0-bs4 failed: {message}")


def test_a_bad_batch_timeout_is_refused() -> None:
    with pytest.raises(UsageError, match=r"Plan\(batch_timeout_s=0\): must be positive"):
        Plan(batch_timeout_s=0)


@pytest.mark.slow
def test_a_failing_case_in_the_plugin_fails_only_that_case(pytester: pytest.Pytester) -> None:
    pytester.makefile(
        ".toml",
        workloads="""
[[workload]]
name = "broken"
kind = "user"
factory = "brokendata:make"
batch_size = 8
tiers = ["smoke"]

[[workload]]
name = "fine"
kind = "sleep"
latency_s = 0.0002
shape = [4]
batch_size = 8
tiers = ["smoke"]
""",
    )
    pytester.makepyfile(
        brokendata="""
import torch
from torch.utils.data import Dataset

class Broken(Dataset):
    def __len__(self):
        return 64

    def __getitem__(self, index):
        if index == 20:
            raise KeyError(f"sample {index} is missing")
        return torch.zeros(4)

def make():
    return Broken()
""",
        test_bench="""
def test_pipeline(loaderbench_case, loaderbench_session, benchmark):
    m = loaderbench_session.run(loaderbench_case, benchmark)
    assert m.rounds["samples_per_s"]
""",
    )
    baselines = pytester.mkdir("baselines")
    stored = baselines / "some-machine.json"
    stored.write_text('{"format": "loaderbench-baseline", "version": 1}\n')
    before = stored.read_bytes()
    result = pytester.runpytest_subprocess(
        "--benchmark",
        "--loader-scenarios=workloads.toml",
        "--loader-config=w2-bs8-fork",
        "--loader-rounds=2",
        "--loader-round-seconds=0.02",
        f"--loader-baseline-dir={baselines}",
        "-v",
    )
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["*::test_pipeline?broken-cpu-w2-bs8-fork? FAILED*", "*::test_pipeline?fine-*PASSED*"])
    result.stdout.fnmatch_lines(
        [
            "*case broken-cpu-w2-bs8-fork failed: the dataset or collate raised KeyError: 'sample 20 is missing' "
            "(in DataLoader worker process *Remedy:*",
        ]
    )
    assert "Traceback" not in result.stdout.str()
    assert stored.read_bytes() == before


def test_killing_workers_torch_still_watches_raises_nothing_in_the_clean_up() -> None:
    """Ctrl-C (or pytest-timeout's alarm) while ``iter()`` starts the workers leaves them registered with torch's
    SIGCHLD check, whose "worker is killed by signal" error, raised inside the harness's kill, would replace the
    interruption (the run then went on as a failed case instead of stopping)."""
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    previous = signal.getsignal(signal.SIGCHLD)
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    signal_handling._set_worker_pids(id(worker), (worker.pid,))
    signal_handling._set_SIGCHLD_handler()
    try:
        assert reap(me, before, timeout_s=0.05) == 1
        time.sleep(0.2)  # a SIGCHLD still to be handled would raise here
        assert not psutil.pid_exists(worker.pid)  # killed and reaped
        assert worker.wait(timeout=5) == 0  # Popen learns it was reaped elsewhere (ECHILD reads as 0)
        assert signal.getsignal(signal.SIGCHLD) is not signal.SIG_DFL  # torch's handler is back
    finally:
        signal_handling._remove_worker_pids(id(worker))
        signal.signal(signal.SIGCHLD, previous)
