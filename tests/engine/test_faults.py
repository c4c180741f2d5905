"""Faults injected into benchmark cases: each fails its case with one clear paragraph, the next case still
runs, and nothing is left behind (no worker process, no /dev/shm segment, the baseline file untouched)."""

from __future__ import annotations

import ctypes
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch
from torch.utils.data import Dataset, get_worker_info

from loaderbench import CaseFailed, CpuConsumer, LoaderConfig, Plan, UsageError, Workload, measure
from loaderbench.engine.explain import explain_failure
from loaderbench.testing.strategies import Record2

SHM = Path("/dev/shm")
PLAN = Plan(rounds=2, round_s=0.02, batch_timeout_s=60)
HANG_PLAN = Plan(rounds=2, round_s=0.02, batch_timeout_s=1.0)
GOOD = Workload(name="good", kind="sleep", batch_size=4, params={"latency_s": 1e-4, "shape": [2]})
AT = 40  # the faulty index: past the pilot and the first batches, inside the measured rounds


# --- faulty datasets (module level: they must pickle under spawn) -------------------------------------------------


def _zeros(index: int) -> torch.Tensor:
    return torch.zeros(2)


LAMBDA = lambda index: torch.zeros(2)  # noqa: E731 - the point: a lambda cannot be pickled for spawn


class Faulty(Dataset[Any]):
    """``torch.zeros(2)`` everywhere except at index ``at``, where ``fault`` happens (in a worker only,
    unless ``in_main``: the harness's pilot fetches a few samples in the main process)."""

    def __init__(self, fault: str, *, at: int = AT, in_main: bool = False, length: int = 10_000) -> None:
        self.fault, self.at, self.in_main, self.length = fault, at, in_main, length
        self.hold = LAMBDA if fault == "unpicklable" else _zeros

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Any:
        if index == self.at and (self.in_main or get_worker_info() is not None):
            _inject(self.fault)
        if self.fault == "ragged":
            return torch.zeros(index % 3 + 1)
        if self.fault == "dataclass":
            return Record2(index, torch.zeros(2))
        return self.hold(index)


def _inject(fault: str) -> None:
    if fault == "raise":
        raise KeyError(f"sample {AT} is missing")
    if fault == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if fault == "segfault":
        ctypes.string_at(0)  # a real NULL dereference in native code
    if fault == "sigbus":  # what a worker gets when /dev/shm is full as it writes a batch
        os.kill(os.getpid(), signal.SIGBUS)
    if fault == "enospc":  # torch's own text when /dev/shm is full as a worker creates a segment
        raise RuntimeError(f"unable to write to file </torch_{os.getpid()}_1_0>: No space left on device (28)")
    if fault == "sleep":
        time.sleep(3600)
    if fault == "nap":  # longer than the case's timeout, short enough that shutdown need not wait long
        time.sleep(2.0)
    if fault == "spin":
        while True:
            pass


@dataclass(frozen=True, slots=True)
class FaultyWorkload(Workload):
    def build(self, length: int, workdir: Any = None) -> Dataset[Any]:
        return Faulty(self.params["fault"], in_main=bool(self.params.get("in_main", False)))


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


def faulty(fault: str, **params: Any) -> FaultyWorkload:
    return FaultyWorkload(
        name=f"faulty-{fault}", kind="sleep", batch_size=4, params={"latency_s": 1e-4, "fault": fault, **params}
    )


# --- what must hold after every fault ------------------------------------------------------------------------------


def _infrastructure(proc: psutil.Process, me: int) -> bool:
    """The forkserver server and multiprocessing's resource tracker: shared, they outlive cases by design."""
    try:
        return proc.ppid() == me and any(
            f"multiprocessing.{name} import main" in " ".join(proc.cmdline())
            for name in ("forkserver", "resource_tracker")
        )
    except psutil.Error:
        return False


def descendants() -> set[int]:
    me = psutil.Process()
    return {p.pid for p in me.children(recursive=True) if not _infrastructure(p, me.pid)}


#: Every process this test process started (DataLoader workers included), recorded by ``record_started``.
STARTED: set[int] = set()


@pytest.fixture(autouse=True)
def record_started(monkeypatch: pytest.MonkeyPatch) -> None:
    """Record the pid of every process started here (fork, spawn or forkserver alike), so a leak check can tell
    this test's shared-memory segments from another program's: torch names a segment ``torch_<creator pid>_...``.
    Counting every ``torch_*`` in /dev/shm made these tests fail whenever another torch job (a second pytest, a
    benchmark) on the machine held a segment for longer than the check's grace period."""
    start = multiprocessing.process.BaseProcess.start

    def recording(self: multiprocessing.process.BaseProcess) -> None:
        start(self)
        if self.pid is not None:
            STARTED.add(self.pid)

    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", recording)


def _ours(name: str) -> bool:
    creator = name.split("_")[1] if name.count("_") >= 1 else ""
    return creator.isdigit() and (int(creator) == os.getpid() or int(creator) in STARTED)


def torch_segments() -> set[str]:
    """This process's and its started processes' torch segments in /dev/shm."""
    return {p.name for p in SHM.glob("torch_*") if _ours(p.name)} if SHM.is_dir() else set()


@dataclass
class Leftovers:
    processes: set[int]
    segments: set[str]

    @classmethod
    def snapshot(cls) -> Leftovers:
        return cls(descendants(), torch_segments())

    def assert_none_since(self) -> None:
        assert descendants() <= self.processes, "worker processes remain after the case"
        new = torch_segments() - self.segments
        if new:  # ignore another program's short-lived segments: a leak is one that stays
            time.sleep(0.5)
            new &= torch_segments()
        assert not new, f"shared-memory segments leaked in /dev/shm: {sorted(new)}"


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A real baseline file (the store's format), recorded from a good case before the faults."""
    from loaderbench.store.baseline import BaselineStore, entries_from
    from loaderbench.store.fingerprint import current

    store = BaselineStore(tmp_path_factory.mktemp("baselines"))
    m = measure(GOOD, LoaderConfig(batch_size=4), plan=PLAN)
    yield store.save(current(), entries_from([m]))


def run_fault(
    baseline: Path,
    workload: Workload,
    config: LoaderConfig,
    *,
    plan: Plan = PLAN,
    consumer: Any = None,
    kind: str = "",
) -> str:
    """Measure the faulty case, then a good one; check the message's form, the data the exception carries
    (case, phase, fault kind), the leftovers and the baseline."""
    before = Leftovers.snapshot()
    stored = baseline.read_bytes()
    with pytest.raises(CaseFailed) as info:
        measure(workload, config, plan=plan, consumer=consumer)
    if hasattr(consumer, "restore"):
        consumer.restore()
    text = str(info.value)
    assert text.startswith(f"case {workload.name}-cpu-{config.id} failed: "), text
    assert info.value.case == f"{workload.name}-cpu-{config.id}"
    assert info.value.phase and info.value.phase in text, (info.value.phase, text)
    assert info.value.kind == kind if kind else info.value.kind, info.value.kind
    assert "\n" not in text and text.count(" Remedy: ") == 1 and text.endswith("."), text
    before.assert_none_since()
    good = measure(GOOD, LoaderConfig(batch_size=4, num_workers=2, multiprocessing_context="fork"), plan=PLAN)
    assert len(good.rounds["samples_per_s"]) == PLAN.rounds and good.samples_per_s > 0
    before.assert_none_since()
    assert baseline.read_bytes() == stored
    return text


W2 = LoaderConfig(batch_size=4, num_workers=2, multiprocessing_context="fork")


# --- the faults ----------------------------------------------------------------------------------------------------


def test_an_exception_in_a_worker(baseline: Path) -> None:
    text = run_fault(baseline, faulty("raise"), W2, kind="dataset")
    assert f"the dataset or collate raised KeyError: 'sample {AT} is missing' (in DataLoader worker process" in text
    assert "Remedy: fix the dataset; run it with num_workers=0" in text


def test_an_exception_at_zero_workers_is_not_told_to_rerun_at_zero_workers(baseline: Path) -> None:
    text = run_fault(baseline, faulty("raise", in_main=True), LoaderConfig(batch_size=4), kind="dataset")
    assert f"the dataset or collate raised KeyError: 'sample {AT} is missing'" in text
    assert "it raised in this process (num_workers=0): call its __getitem__" in text
    assert "run it with num_workers=0" not in text


@pytest.mark.parametrize("sharing", ["file_descriptor", "file_system"])
def test_a_worker_killed_with_sigkill(baseline: Path, sharing: str) -> None:
    """Under file_system the dead worker's segments stay in /dev/shm unless the harness removes them."""
    text = run_fault(baseline, faulty("sigkill"), W2.replace(sharing_strategy=sharing), kind="worker-killed")
    # torch says "is killed by signal: Killed" or, when it notices the dead worker first, "exited unexpectedly"
    # (then the harness adds "died of SIGKILL" from the worker's exit code)
    assert "a worker process was killed with SIGKILL" in text
    assert "is killed by signal: Killed" in text or "died of SIGKILL" in text
    assert "OOM killer" in text and "lower num_workers" in text


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


def test_a_worker_that_dies_during_shutdown_is_a_note_not_an_unraisable_exception() -> None:
    """torch raises "killed by signal: Aborted" from its SIGCHLD handler; in the iterator's ``__del__``
    that was an unraisable exception (which this suite's filterwarnings=error turns into a failure)."""
    before = Leftovers.snapshot()
    workload = AbortsAtExitWorkload(name="aborts-at-exit", kind="user", batch_size=4)
    for persistent in (True, False):
        config = LoaderConfig(batch_size=4, num_workers=1, persistent_workers=persistent)
        try:
            m = measure(workload, config, plan=PLAN)
        except CaseFailed as exc:  # torch noticed the death inside the epoch's last next(): one paragraph
            assert "killed by signal: Aborted" in str(exc) and exc.kind, exc
        else:  # noticed at the harness's own shutdown of the workers: a note on a case that measured
            assert len(m.rounds["samples_per_s"]) == PLAN.rounds
            notes = [n for n in m.notes if "did not shut down cleanly" in n]
            assert all("killed by signal: Aborted" in n and "(the rounds stand)" in n for n in notes), m.notes
        before.assert_none_since()


def test_a_worker_that_segfaults(baseline: Path) -> None:
    text = run_fault(baseline, faulty("segfault"), W2, kind="segfault")
    assert "crashed in native code with a segmentation fault" in text
    assert "num_workers=0" in text and "faulthandler" in text


@pytest.mark.parametrize("fault", ["sigbus", "enospc"])
def test_shared_memory_exhaustion(baseline: Path, fault: str) -> None:
    text = run_fault(baseline, faulty(fault), W2, kind="shm-exhausted")
    assert "shared memory (/dev/shm) ran out" in text and "/dev/shm:" in text and "bytes free" in text
    assert "--shm-size" in text and "num_workers=0" in text and "prefetch_factor" in text


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


def test_too_many_open_files(baseline: Path) -> None:
    squeeze = SqueezeFds()
    plan = Plan(rounds=2, round_s=0.02, batch_timeout_s=30)
    workload = ManyTensorsWorkload(name="many-tensors", kind="sleep", batch_size=1, params={"latency_s": 1e-4})
    config = LoaderConfig(batch_size=None, num_workers=2, multiprocessing_context="fork", collate="list")
    try:
        text = run_fault(baseline, workload, config, plan=plan, consumer=squeeze, kind="too-many-open-files")
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


@pytest.mark.parametrize("context", ["spawn", "forkserver"])
def test_a_dataset_that_cannot_be_pickled_under_spawn(baseline: Path, context: str) -> None:
    config = LoaderConfig(batch_size=4, num_workers=2, multiprocessing_context=context)
    text = run_fault(baseline, faulty("unpicklable"), config, kind="pickling")
    assert "could not be pickled to start a spawn or forkserver worker" in text and "<lambda>" in text
    assert "while starting the workers" in text
    assert "module level" in text and "multiprocessing_context='fork'" in text


def test_a_hung_worker_is_killed(baseline: Path) -> None:
    text = run_fault(baseline, faulty("sleep"), W2, plan=HANG_PLAN, kind="hang")
    assert "no batch arrived and no phase began for 1 s (Plan.batch_timeout_s)" in text
    assert "the dataset hangs; worker process(es)" in text and "so the harness killed them" in text
    assert "timeout is 0 (wait forever)" in text and "raise Plan.batch_timeout_s" in text


def test_the_cases_own_dataloader_timeout(baseline: Path) -> None:
    text = run_fault(baseline, faulty("nap"), W2.replace(timeout=1.0), kind="timeout")
    assert "no batch arrived within the case's DataLoader timeout (RuntimeError: DataLoader timed out after 1" in text
    assert "raise timeout" in text


def test_file_system_sharing_leaves_no_segment_behind() -> None:
    """Batches in flight when a loader is released stay in /dev/shm under file_system; the harness removes
    the ones its exited workers made (and says so)."""
    before = Leftovers.snapshot()
    config = LoaderConfig(batch_size=32, num_workers=2, persistent_workers=True, sharing_strategy="file_system")
    transfer = Workload(name="transfer", kind="tensor-fill", batch_size=32, params={"shape": [3, 64, 64]})
    m = measure(transfer, config, plan=PLAN)
    assert m.rounds["samples_per_s"]
    before.assert_none_since()


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


@pytest.mark.parametrize("fault", ["sleep", "spin"])
def test_a_hang_in_the_main_process_is_interrupted(baseline: Path, fault: str) -> None:
    """num_workers=0: the dataset hangs in this very process; the watchdog interrupts it (main thread only)."""
    text = run_fault(baseline, faulty(fault, in_main=True), LoaderConfig(batch_size=4), plan=HANG_PLAN)
    assert "the main process was stuck at" in text and "in _inject, so the harness interrupted it" in text


@dataclass(frozen=True, slots=True)
class PilotHangWorkload(Workload):
    """A user workload (no cost model), whose sample 0 hangs in the main process."""

    def build(self, length: int, workdir: Any = None) -> Dataset[Any]:
        return Faulty("sleep", at=0, in_main=True)


def test_a_hang_while_the_harness_sizes_the_epoch(baseline: Path) -> None:
    """Without a cost model the harness first fetches a few samples in the main process."""
    workload = PilotHangWorkload(name="faulty-pilot", kind="user", batch_size=4)
    text = run_fault(baseline, workload, W2, plan=HANG_PLAN)
    assert "while sizing the epoch" in text and "the main process was stuck at" in text


@pytest.mark.parametrize("workers", [0, 2])
def test_samples_that_cannot_be_stacked_name_their_shapes(baseline: Path, workers: int) -> None:
    config = LoaderConfig(batch_size=4, num_workers=workers, multiprocessing_context="fork" if workers else None)
    text = run_fault(baseline, faulty("ragged"), config)
    assert (
        "samples in one batch cannot be collated: they differ: entry 0 holds a float32 tensor of shape [1] "
        "and entry 1 holds a float32 tensor of shape [2]"
    ) in text
    assert "pad_collate" in text and "collate='list'" in text


def test_a_sample_type_default_collate_cannot_batch(baseline: Path) -> None:
    text = run_fault(baseline, faulty("dataclass"), W2)
    assert "samples cannot be collated: they hold a <class 'loaderbench.testing.datasets.Record2'>" in text
    assert "dataclasses.astuple" in text and "collate='list'" in text


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
