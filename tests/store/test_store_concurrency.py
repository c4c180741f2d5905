"""Concurrent writers of one baseline file: every append lands, or a writer that cannot take the lock in
time fails with a clear message and writes nothing; and the lock leaves no file behind.

The writers are forked from one plain Python child (it imports the store once) and released together.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from loaderbench import jsondoc
from loaderbench.errors import BaselineError
from loaderbench.measurement import Measurement
from loaderbench.store.baseline import MAX_SESSIONS, BaselineStore, CaseEntry
from loaderbench.store.fingerprint import Fingerprint

FP = Fingerprint(machine="x86_64", cpu_model="Test CPU", affinity_cpus=2, cpu_quota=None, ram_bytes=2**33, gpus=())
WRITERS, SESSIONS = 4, 2

#: ``python -c CHILD DIR FINGERPRINT WRITERS SESSIONS``: forks WRITERS processes, releases them at once; each
#: appends SESSIONS sessions to the shared case and saves a case of its own; exits with the first failure.
CHILD = textwrap.dedent(
    """
    import json, os, sys
    from loaderbench.measurement import Measurement
    from loaderbench.store.baseline import BaselineStore
    from loaderbench.store.fingerprint import Fingerprint

    directory, fingerprint = sys.argv[1], Fingerprint.from_dict(json.loads(sys.argv[2]))
    writers, sessions = int(sys.argv[3]), int(sys.argv[4])
    start_r, start_w = os.pipe()
    pids = []
    for w in range(writers):
        pid = os.fork()
        if pid == 0:
            os.close(start_w)
            os.read(start_r, 1)  # wait for the start: every writer is forked by then
            store = BaselineStore(directory, lock_timeout_s=60)
            run = Measurement.from_raw({"samples_per_s": (1000.0 + w,)})
            for _ in range(sessions):
                store.record(fingerprint, [run], append=True, case_ids=["shared-cpu-w0-bs1"])
            store.record(fingerprint, [run], case_ids=[f"own{w}-cpu-w0-bs1"])
            os._exit(0)
        pids.append(pid)
    os.close(start_r)
    os.close(start_w)  # end of file: every writer starts now
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    sys.exit(max(codes, key=abs))
    """
)


def entry(case_id: str) -> CaseEntry:
    return CaseEntry(case_id, "w", "cpu", {}, (Measurement.from_raw({"samples_per_s": (1000.0, 1010.0)}),))


def test_concurrent_appends_all_land(tmp_path: Path) -> None:
    assert WRITERS * SESSIONS <= MAX_SESSIONS  # so that the rolling baseline keeps every session
    argv = [str(tmp_path), json.dumps(FP.as_dict()), str(WRITERS), str(SESSIONS)]
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, *argv], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    doc = BaselineStore(tmp_path).load(FP)
    assert doc is not None
    assert set(doc.cases) == {"shared-cpu-w0-bs1", *(f"own{w}-cpu-w0-bs1" for w in range(WRITERS))}
    shared = {r.session for r in doc.cases["shared-cpu-w0-bs1"].runs}
    assert len(shared) == WRITERS * SESSIONS  # no append was lost
    assert shared <= set(doc.sessions)  # and every session kept its description
    assert sorted(os.listdir(tmp_path)) == [f"{FP.key}.json"]  # no lock file, no temporary file left


def test_a_writer_that_cannot_take_the_lock_in_time_fails_clearly_and_writes_nothing(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path, lock_timeout_s=0.2)
    path = store.save(FP, [entry("a-cpu-w0-bs1")])
    before = path.read_bytes()
    held = jsondoc.locked(path, timeout_s=1, error=BaselineError)  # another save in progress (flock: per open)
    with held, pytest.raises(BaselineError, match=r"held the lock for 0\.2 s") as caught:
        store.save(FP, [entry("b-cpu-w0-bs1")])
    assert f"(pid {os.getpid()})" in str(caught.value) and "Wait for the other save" in str(caught.value)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == [path.name]  # the holder removed its lock file on release
    store.save(FP, [entry("b-cpu-w0-bs1")])  # and the next writer goes through
    doc = store.load(FP)
    assert doc is not None and set(doc.cases) == {"a-cpu-w0-bs1", "b-cpu-w0-bs1"}


def test_a_custom_baseline_directory_keeps_no_lock_file(tmp_path: Path) -> None:
    directory = tmp_path / "my-baselines"
    store = BaselineStore(directory)
    store.save(FP, [entry("a-cpu-w0-bs1")])
    store.record(FP, [Measurement.from_raw({"samples_per_s": (1.0,)})], append=True, case_ids=["a-cpu-w0-bs1"])
    assert sorted(p.name for p in directory.iterdir()) == [f"{FP.key}.json"]


def test_a_waiter_whose_lock_file_was_removed_locks_the_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race that deleting lock files opens: a waiter opened the file, then its holder removed it and
    released.  The waiter's lock is then on a file nobody else can see; it must start over on the new one."""
    path = tmp_path / "doc.json"
    lock_path = tmp_path / ".doc.json.lock"
    real_flock = fcntl.flock
    raced: list[int] = []

    def flock_after_the_holder_left(fd: int, operation: int) -> None:
        if not raced:  # the holder unlinks the file between the waiter's open and its flock
            raced.append(os.fstat(fd).st_ino)
            os.unlink(lock_path)
        real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock_after_the_holder_left)
    with jsondoc.locked(path, timeout_s=1, error=BaselineError):
        monkeypatch.undo()
        with pytest.raises(BlockingIOError):  # the file at the path now is the one this writer holds
            fd = os.open(lock_path, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            finally:
                os.close(fd)
    assert raced
    assert not lock_path.exists()


def test_a_lock_in_an_unwritable_directory_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "not-there" / "doc.json"
    lock = jsondoc.locked(missing, timeout_s=0.1, error=BaselineError)
    with pytest.raises(BaselineError, match=r"cannot take the lock .*Check the directory is writable"), lock:
        pass
