"""The baseline store: round trips, merge rules, atomic and concurrent writes, clear errors."""

from __future__ import annotations

import json
import multiprocessing
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from loaderbench import data
from loaderbench.config import LoaderConfig
from loaderbench.errors import LoaderbenchError
from loaderbench.measurement import Measurement
from loaderbench.selection.tiers import build_tier
from loaderbench.store import baseline as bl
from loaderbench.store.baseline import MAX_SESSIONS, BaselineError, BaselineStore, CaseEntry, entries_from
from loaderbench.store.fingerprint import Fingerprint
from loaderbench.workloads.recipes import load_scenarios

FP = Fingerprint(
    machine="x86_64",
    cpu_model="Test CPU",
    affinity_cpus=2,
    cpu_quota=None,
    ram_bytes=8 * 2**30,
    gpus=(),
)
CONFIG = {"batch_size": 32, "num_workers": 0}


def entry(case_id: str, level: float = 1000.0, runs: int = 1, seed: int = 0) -> CaseEntry:
    rng = random.Random(seed)
    return CaseEntry(
        case_id=case_id,
        workload=case_id.split("-")[0],
        device="cpu",
        config=CONFIG,
        runs=tuple(
            Measurement.from_raw(
                {"samples_per_s": tuple(level * (1 + rng.gauss(0, 0.01)) for _ in range(5))},
                {"ttfb_s": 0.05, "peak_memory_bytes": 3e8},
                workload=case_id.split("-")[0],
                config=LoaderConfig(**CONFIG),
                recorded="2026-01-01T00:00:00+00:00",
                session=f"s{seed}",
            )
            for _ in range(runs)
        ),
        recorded="2026-01-01T00:00:00+00:00",
    )


def test_round_trip(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path / "new" / "dir")
    path = store.save(FP, [entry("io-cpu-w0-bs32", runs=3)])
    assert path == tmp_path / "new" / "dir" / f"{FP.key}.json"
    doc = store.load(FP)
    assert doc is not None
    assert doc.fingerprint == FP
    got = doc.cases["io-cpu-w0-bs32"]
    want = entry("io-cpu-w0-bs32", runs=3)
    assert got.runs == want.runs
    assert dict(got.config) == LoaderConfig(**CONFIG).as_dict()  # read back with every field, defaults filled
    data = json.loads(path.read_text())
    assert data["format"] == "loaderbench-baseline"
    assert data["version"] == bl.VERSION
    assert data["cases"]["io-cpu-w0-bs32"]["metrics"]["samples_per_s"]["runs"] == 3
    # number lists are written on one line, for readable diffs
    assert '"samples_per_s": [' in path.read_text()


def test_missing_store_is_no_baseline(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path / "absent")
    assert store.load(FP) is None
    assert store.documents() == []
    assert store.closest(FP) == (None, [], [])


def test_rerecording_replaces_and_keeps_absent_cases(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    store.save(FP, [entry("a-cpu-w0-bs1", 100.0), entry("b-cpu-w0-bs1", 200.0)])
    store.save(FP, [entry("a-cpu-w0-bs1", 300.0)])
    doc = store.load(FP)
    assert doc is not None
    assert set(doc.cases) == {"a-cpu-w0-bs1", "b-cpu-w0-bs1"}
    assert doc.cases["a-cpu-w0-bs1"].runs[0].rounds["samples_per_s"][0] == pytest.approx(300.0, rel=0.05)


def test_prune_drops_absent_cases(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    store.save(FP, [entry("a-cpu-w0-bs1"), entry("b-cpu-w0-bs1")])
    store.save(FP, [entry("a-cpu-w0-bs1")], prune=True)
    doc = store.load(FP)
    assert doc is not None and set(doc.cases) == {"a-cpu-w0-bs1"}


def test_append_adds_sessions_up_to_the_cap(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    for i in range(MAX_SESSIONS + 2):
        store.save(FP, [entry("a-cpu-w0-bs1", 100.0 + i, runs=2, seed=i)], append=True)
    doc = store.load(FP)
    assert doc is not None
    runs = doc.cases["a-cpu-w0-bs1"].runs
    assert len(runs) == 2 * MAX_SESSIONS
    assert [r.session for r in runs[::2]] == [f"s{i}" for i in range(2, MAX_SESSIONS + 2)]
    assert runs[-1].rounds["samples_per_s"][0] == pytest.approx(100.0 + MAX_SESSIONS + 1, rel=0.05)
    data = json.loads((tmp_path / f"{FP.key}.json").read_text())
    assert data["cases"]["a-cpu-w0-bs1"]["metrics"]["samples_per_s"]["sessions"] == MAX_SESSIONS


# --- atomicity ---------------------------------------------------------------------------------------


def test_failed_write_leaves_the_original_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = BaselineStore(tmp_path)
    path = store.save(FP, [entry("a-cpu-w0-bs1")])
    before = path.read_bytes()

    def crash(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bl.os, "fsync", crash)
    with pytest.raises(OSError, match="No space left"):
        store.save(FP, [entry("b-cpu-w0-bs1")])
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []


def test_process_killed_mid_write_leaves_the_original_intact(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    path = store.save(FP, [entry("a-cpu-w0-bs1")])
    before = path.read_bytes()
    child = textwrap.dedent(
        """
        import os, sys, json
        from pathlib import Path
        from loaderbench.store import baseline as bl
        from loaderbench.store.fingerprint import Fingerprint
        from loaderbench.measurement import Measurement
        fp = Fingerprint.from_dict(json.loads(sys.argv[2]))
        real_fsync = os.fsync
        def die(fd):
            real_fsync(fd)
            os._exit(9)  # killed after the temp file is written, before the rename
        bl.os.fsync = die
        entry = bl.CaseEntry("b-cpu-w0-bs1", "b", "cpu", {}, (Measurement.from_raw({"samples_per_s": (1.0,)}),))
        bl.BaselineStore(sys.argv[1]).save(fp, [entry])
        """
    )
    proc = subprocess.run([sys.executable, "-c", child, str(tmp_path), json.dumps(FP.as_dict())], check=False)
    assert proc.returncode == 9
    assert path.read_bytes() == before
    doc = store.load(FP)
    assert doc is not None and set(doc.cases) == {"a-cpu-w0-bs1"}
    # the next save cleans up the dead writer's temporary file
    store.save(FP, [entry("c-cpu-w0-bs1")])
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def _save_many(directory: str, worker: int, count: int) -> None:
    store = BaselineStore(directory)
    for i in range(count):
        store.save(FP, [entry(f"w{worker}-cpu-w0-bs{i + 1}", seed=i)])


@pytest.mark.slow
def test_concurrent_savers_lose_nothing(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_save_many, args=(str(tmp_path), w, 12)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    doc = BaselineStore(tmp_path).load(FP)
    assert doc is not None
    assert set(doc.cases) == {f"w{w}-cpu-w0-bs{i + 1}" for w in range(2) for i in range(12)}


# --- errors -----------------------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / f"{FP.key}.json"
    path.write_text(text)
    return path


def valid_text() -> str:
    return bl.dumps(bl.BaselineDoc(path=Path("x"), fingerprint=FP, cases={"a": entry("a")}))


@pytest.mark.parametrize(
    ("mangle", "needle"),
    [
        (lambda t: t[: len(t) // 2], "not valid JSON"),
        (lambda t: "", "empty"),
        (lambda t: "[1, 2]", 'not a loaderbench document of format "loaderbench-baseline"'),
        (lambda t: t.replace('"version": 2', '"version": 3'), "newer loaderbench (format version 3"),
        (lambda t: t.replace('"version": 2', '"version": 0'), "reads only 1, 2"),
        (lambda t: t.replace('"cases"', '"kases"'), "field 'cases' is missing"),
        (lambda t: t.replace('"ttfb_s": 0.05', '"ttfb_s": "fast"'), "phases.ttfb_s is not a finite number"),
        (lambda t: t.replace('"cpu_model"', '"cpu"'), "fingerprint field 'cpu_model' is missing"),
    ],
)
def test_unusable_files_name_the_file_and_the_problem(tmp_path: Path, mangle: object, needle: str) -> None:
    path = write(tmp_path, mangle(valid_text()))  # type: ignore[operator]
    with pytest.raises(BaselineError) as info:
        BaselineStore(tmp_path).load(FP)
    message = str(info.value)
    assert message.startswith(str(path))
    assert needle in message
    assert isinstance(info.value, LoaderbenchError)


def test_unreadable_file(tmp_path: Path) -> None:
    (tmp_path / f"{FP.key}.json").mkdir()  # a directory where the file should be: cannot be read
    with pytest.raises(BaselineError, match="is a directory, not a file"):
        BaselineStore(tmp_path).load(FP)


def test_save_refuses_to_overwrite_a_corrupt_file(tmp_path: Path) -> None:
    path = write(tmp_path, "{ truncated")
    with pytest.raises(BaselineError, match="not valid JSON"):
        BaselineStore(tmp_path).save(FP, [entry("a")])
    assert path.read_text() == "{ truncated"


def test_a_file_whose_fingerprint_does_not_match_its_name(tmp_path: Path) -> None:
    text = valid_text().replace('"cpu_model": "Test CPU"', '"cpu_model": "Other CPU"')
    write(tmp_path, text)
    with pytest.raises(BaselineError, match="does not match its file name"):
        BaselineStore(tmp_path).load(FP)


def test_closest_skips_other_machines_broken_files(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    store.save(FP, [entry("a")])
    (tmp_path / "other-machine.json").write_text("garbage")
    other = Fingerprint(**{**FP.as_dict(), "gpus": (), "affinity_cpus": 4})
    doc, differences, problems = store.closest(other)
    assert doc is not None and doc.fingerprint == FP
    assert differences == ["CPUs in the affinity mask: 2 (baseline) vs 4 (this machine)"]
    assert len(problems) == 1 and "other-machine.json" in problems[0]


def test_save_into_an_uncreatable_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(BaselineError, match=r"baseline_dir=.*cannot create it"):
        BaselineStore(blocker / "sub").save(FP, [entry("a")])


def measurement(rng: random.Random, workers: int = 0) -> Measurement:
    return Measurement(
        workload="io",
        device="cpu",
        config=LoaderConfig(batch_size=32, num_workers=workers),
        rounds={"samples_per_s": tuple(1000 * (1 + rng.gauss(0, 0.01)) for _ in range(5))},
        phases={"ttfb_s": 0.05},
        steady_batches=100,
        bytes_per_sample=4,
        peak_memory_bytes=300 * 2**20,
        memory_kind="pss",
        ideal_samples_per_s=None,
        torch_threads=1,
        cpus=2,
    )


def test_entries_from_measurements_group_by_case() -> None:
    rng = random.Random(1)
    entries = {e.case_id: e for e in entries_from([measurement(rng), measurement(rng), measurement(rng, workers=2)])}
    assert set(entries) == {"io-cpu-w0-bs32", "io-cpu-w2-bs32"}
    assert len(entries["io-cpu-w0-bs32"].runs) == 2
    assert len({r.session for e in entries.values() for r in e.runs}) == 1  # one save, one session
    assert entries["io-cpu-w2-bs32"].config["num_workers"] == 2
    assert entries["io-cpu-w0-bs32"].runs[0].peak_memory_bytes == 300 * 2**20
    assert entries["io-cpu-w0-bs32"].runs[0].recorded


# --- format 1 ---------------------------------------------------------------------------------------------


def test_a_format_1_baseline_is_read_and_rewritten_as_format_2(tmp_path: Path) -> None:
    """The committed 2-core baseline was written in format 1: it reads, its runs become records with the
    raw values it holds, and the next save writes format 2 with the same runs."""
    committed = Path(__file__).parents[2] / "fixtures" / "baselines" / "x86_64-2cpu-24gib-cpu-9573dfdfea2d.json"
    data = json.loads(committed.read_text())
    assert data["version"] == 1
    doc = bl.read(committed)
    assert doc.version == 1 and doc.cases
    cid, entry = next(iter(doc.cases.items()))
    first = data["cases"][cid]["runs"][0]
    run = entry.runs[0]
    assert isinstance(run, Measurement)
    assert list(run.rounds["samples_per_s"]) == first["rounds"]["samples_per_s"]
    assert run.session == first["session"] and run.recorded == first["recorded"]
    if "ttfb_s" in first["values"]:
        assert run.value("ttfb_s") == first["values"]["ttfb_s"]
    assert entry.sessions == len({r["session"] for r in data["cases"][cid]["runs"]})
    store = BaselineStore(tmp_path)
    path = store.save(doc.fingerprint, [entry], sessions_info=doc.sessions)
    again = store.load(doc.fingerprint)
    assert again is not None and again.version == bl.VERSION == 2
    assert json.loads(path.read_text())["version"] == 2
    assert [r.rounds for r in again.cases[cid].runs] == [r.rounds for r in entry.runs]
    assert [r.session for r in again.cases[cid].runs] == [r.session for r in entry.runs]
    env = again.environment  # the format-1 software became the sessions' environment
    assert (
        env.kernel == "6.18.44-fc-v669"
        and env.torch == "2.13.0+cpu"
        and env.os == "Linux (Debian GNU/Linux 12 (bookworm))"
    )


def test_a_format_1_file_is_found_by_its_hardware_and_replaced_on_save(tmp_path: Path) -> None:
    """Its name hashed the software too, so it is found by reading it; the next save writes the new name."""
    committed = Path(__file__).parents[2] / "fixtures" / "baselines" / "x86_64-2cpu-24gib-cpu-9573dfdfea2d.json"
    old = tmp_path / committed.name
    old.write_bytes(committed.read_bytes())
    doc = bl.read(old)
    store = BaselineStore(tmp_path)
    assert store.path_for(doc.fingerprint) != old
    found = store.load(doc.fingerprint)
    assert found is not None and found.path == old and found.version == 1
    path = store.record(doc.fingerprint, [measurement(random.Random(5))], append=True)
    assert path == store.path_for(doc.fingerprint) and not old.exists()
    again = store.load(doc.fingerprint)
    assert again is not None and again.version == 2
    assert set(again.cases) == set(doc.cases) | {"io-cpu-w0-bs32"}
    assert len(again.sessions) == len({r.session for e in again.cases.values() for r in e.runs})


def test_each_session_keeps_its_environment_and_calibration(tmp_path: Path) -> None:
    from loaderbench.store.environment import Environment, changes

    store = BaselineStore(tmp_path)
    first = Environment(torch="2.13.0+cpu", kernel="6.1-a", host_id="h1")
    second = Environment(torch="2.14.1+cpu", kernel="6.1-a", host_id="h1")
    store.record(FP, [measurement(random.Random(1))], environment=first, calibration={"spin_loops_per_s": 1.4e7})
    store.record(
        FP, [measurement(random.Random(2))], append=True, environment=second, calibration={"spin_loops_per_s": 1.6e7}
    )
    doc = store.load(FP)
    assert doc is not None and len(doc.sessions) == 2
    assert doc.environment == second and doc.hosts == {"h1"}
    assert doc.calibration("spin_loops_per_s") == pytest.approx(1.5e7)
    assert changes(first, second) == ["torch 2.13.0+cpu -> 2.14.1+cpu"]


def test_a_saved_run_is_the_measurement_record_itself(tmp_path: Path) -> None:
    rng = random.Random(3)
    m = measurement(rng)
    store = BaselineStore(tmp_path)
    store.record(FP, [m])
    doc = store.load(FP)
    assert doc is not None
    (run,) = doc.cases[m.case_id].runs
    assert run == m.stamped(session=run.session, recorded=run.recorded)
    assert run.session  # one save is one recording session


# --- configs recorded before a LoaderConfig field existed ------------------------------------------------

COMMITTED = sorted((Path(__file__).parents[2] / "fixtures" / "baselines").glob("*.json"))
SMOKE = {c.id: c for c in build_tier("smoke", load_scenarios(data.WORKLOADS)).cases}


def test_the_old_committed_2_core_baseline_lacks_the_later_fields() -> None:
    """The committed AMD 2-core baseline was recorded before ``pipeline`` and ``ranks``: the next test
    therefore checks that such entries still compare."""
    assert any(p.name == "x86_64-2cpu-24gib-cpu-9573dfdfea2d.json" for p in COMMITTED)
    data = json.loads((COMMITTED[0].parent / "x86_64-2cpu-24gib-cpu-9573dfdfea2d.json").read_text())
    assert all("pipeline" not in e["config"] and "ranks" not in e["config"] for e in data["cases"].values())


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.stem)
def test_every_committed_baseline_entry_matches_the_config_its_smoke_case_builds(path: Path) -> None:
    data = json.loads(path.read_text())
    doc = bl.read(path)
    compared = []
    for cid, entry in doc.cases.items():
        case = SMOKE.get(cid)
        if case is None:
            continue  # a case the smoke tier no longer has
        assert case.config.matches_stored(data["cases"][cid]["config"]), cid  # as stored, fields missing
        assert case.config.matches_stored(entry.config), cid  # as read
        assert LoaderConfig.from_stored(entry.config) == case.config
        assert all(run.config == case.config for run in entry.runs), cid
        compared.append(cid)
    assert compared, f"{path.name}: no entry is a smoke case"


def test_appending_to_an_entry_recorded_before_a_field_existed_keeps_its_sessions(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    store.save(FP, [entry("io-cpu-w0-bs32", seed=1)])  # its config lacks pipeline, ranks and the rest
    assert set(json.loads((tmp_path / f"{FP.key}.json").read_text())["cases"]["io-cpu-w0-bs32"]["config"]) == set(
        CONFIG
    )
    store.record(FP, [measurement(random.Random(2))], append=True)  # today's config: every field
    doc = store.load(FP)
    assert doc is not None and doc.cases["io-cpu-w0-bs32"].sessions == 2
