"""Crash consistency of the baseline file: a saving process killed with SIGKILL at any point of a save.

One plain Python child (not pytest: it imports the store once) forks a saver per kill, kills it, and checks
the file with the store's own loader.  Kills come from two sources: the fault hook of
:mod:`loaderbench.jsondoc` (``LOADERBENCH_FAULT_STEP``: the saver kills itself at each step of the
locked atomic write), and seeded random delays from outside while a saver saves one case after another.
After every kill the document must load and be the old document or the new one: its cases are those before
the kill plus a prefix of the saves the killed process made.
"""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from loaderbench import jsondoc
from loaderbench.measurement import Measurement
from loaderbench.store.baseline import BaselineStore, CaseEntry
from loaderbench.store.fingerprint import Fingerprint

FP = Fingerprint(machine="x86_64", cpu_model="Test CPU", affinity_cpus=2, cpu_quota=None, ram_bytes=2**33, gpus=())


def entry(case_id: str) -> CaseEntry:
    return CaseEntry(case_id, "w", "cpu", {}, (Measurement.from_raw({"samples_per_s": (1000.0, 1010.0)}),))


#: The child: ``python -c CHILD DIR FINGERPRINT PLAN``; PLAN lists kills (a fault step, or a delay in
#: seconds); prints one JSON line per kill.
CHILD = textwrap.dedent(
    """
    import json, os, signal, sys, time
    from loaderbench.measurement import Measurement
    from loaderbench import jsondoc
    from loaderbench.store.baseline import BaselineError, BaselineStore, CaseEntry
    from loaderbench.store.fingerprint import Fingerprint

    directory, fingerprint, plan = sys.argv[1], Fingerprint.from_dict(json.loads(sys.argv[2])), json.loads(sys.argv[3])
    store = BaselineStore(directory, lock_timeout_s=10)

    def cases():
        try:
            doc = store.load(fingerprint)
        except BaselineError as exc:
            return "unloadable: " + str(exc)
        return sorted(doc.cases) if doc is not None else []

    def save(name):
        run = Measurement.from_raw({"samples_per_s": (1.0,)})
        store.save(fingerprint, [CaseEntry(name, "k", "cpu", {}, (run,))])

    for i, kill in enumerate(plan):
        before = cases()
        pid = os.fork()
        if pid == 0:
            if isinstance(kill, str):
                os.environ[jsondoc.FAULT_ENV] = kill
                save(f"k{i}-0")
            else:
                for j in range(100_000):  # save after save until the parent kills this process
                    save(f"k{i}-{j}")
            os._exit(0)
        if not isinstance(kill, str):
            time.sleep(kill)
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        names = os.listdir(directory)
        print(json.dumps({
            "kill": kill,
            "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            "before": before,
            "after": cases(),
            "prefix": f"k{i}-",
            "temporaries": sum(n.endswith(".tmp") for n in names),
        }), flush=True)
    """
)

#: Steps at which the new document is not yet in place (the old one must remain), and those after it.
OLD_STEPS = ("locked", "temp-created", "temp-half-written", "temp-written")
NEW_STEPS = ("replaced", "synced")


def run_child(directory: Path, plan: list[Any]) -> list[dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if k != jsondoc.FAULT_ENV}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(directory), json.dumps(FP.as_dict()), json.dumps(plan)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def saved_in_order(after: list[str], before: list[str], prefix: str) -> bool:
    """``after`` is ``before`` plus the first k saves of the killed process, for some k >= 0."""
    new = set(after) - set(before)
    return set(before) <= set(after) and new == {f"{prefix}{j}" for j in range(len(new))}


def test_the_fault_steps_are_those_of_a_locked_write() -> None:
    assert set(OLD_STEPS + NEW_STEPS) == set(jsondoc.FAULT_STEPS)


def test_a_save_killed_at_every_step_or_at_random_leaves_the_old_or_the_new_document(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = BaselineStore(tmp_path)
    store.save(FP, [entry("a-cpu-w0-bs1")])
    rng = random.Random(15)
    delays = [round(rng.uniform(0.0, 0.04), 4) for _ in range(20)]
    plan: list[Any] = [*jsondoc.FAULT_STEPS, *delays, "temp-written"]  # the last kill leaves a temporary file
    results = run_child(tmp_path, plan)
    assert [r["kill"] for r in results] == plan
    for r in results:
        assert r["signal"] == 9, r  # the saver was killed (by its own hook, or from outside)
        assert isinstance(r["after"], list), r  # the file loads with the store's own loader
        if r["kill"] in OLD_STEPS:
            assert r["after"] == r["before"], r  # the old document
        elif r["kill"] in NEW_STEPS:
            assert r["after"] == sorted([*r["before"], f"{r['prefix']}0"]), r  # the new document
        else:
            assert saved_in_order(r["after"], r["before"], r["prefix"]), r
    assert results[-1]["temporaries"] == 1  # killed between writing its temporary file and the rename
    # the next save cleans up after the dead savers, with a note, and keeps everything they saved
    survivors = set(results[-1]["after"])
    with caplog.at_level(logging.WARNING, logger="loaderbench.jsondoc"):
        store.save(FP, [entry("b-cpu-w0-bs1")])
    assert "killed mid-write" in caplog.text and "removed" in caplog.text
    doc = store.load(FP)
    assert doc is not None and set(doc.cases) == survivors | {"b-cpu-w0-bs1"}
    assert sorted(os.listdir(tmp_path)) == [f"{FP.key}.json"]  # no temporary file, no lock file


def test_readers_ignore_stale_temporaries_and_lock_files(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    path = store.save(FP, [entry("a-cpu-w0-bs1")])
    (tmp_path / f".{path.name}.dead1234.tmp").write_text('{"format": "loaderbench-base')  # torn
    (tmp_path / f".{path.name}.lock").write_text("999999\n")  # a killed holder's: nobody holds it
    assert store.documents() == [path]
    doc, differences, problems = store.closest(FP)
    assert doc is not None and differences == [] and problems == []
    assert isinstance(store.load(FP), type(doc))
    store.save(FP, [entry("c-cpu-w0-bs1")])
    assert sorted(os.listdir(tmp_path)) == [path.name]
