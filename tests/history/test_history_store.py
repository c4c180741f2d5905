"""The history store: its format, appends, and what a crash, a bad line, a foreign or newer file, other hardware,
concurrent writers and merged runners leave a reader with."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loaderbench import jsondoc
from loaderbench.errors import HistoryError
from loaderbench.history import record, store
from loaderbench.history.record import Figure, RunRecord
from loaderbench.measurement import Measurement
from loaderbench.store.environment import Environment
from loaderbench.store.fingerprint import Fingerprint

FP = Fingerprint(machine="x86_64", cpu_model="Test CPU", affinity_cpus=2, cpu_quota=None, ram_bytes=2**33, gpus=())
OTHER = Fingerprint(machine="x86_64", cpu_model="Other CPU", affinity_cpus=4, cpu_quota=None, ram_bytes=2**33, gpus=())
CASE = "io-cpu-w2-bs32"


def rec(i: int, value: float = 1000.0, *, case: str = CASE, host: str = "h1", run: str | None = None) -> RunRecord:
    env = Environment(torch="2.13.0", git_commit=f"c{i:04d}", host_id=host)
    return RunRecord(
        run=run or f"{host}-r{i}",
        time=f"2026-11-{1 + i // 24:02d}T{i % 24:02d}:00:00+00:00",
        commit=env.git_commit,
        environment=env,
        case=case,
        workload="io",
        device="cpu",
        simulated=False,
        metrics={"samples_per_s": Figure(value, value * 0.99, value * 1.01)},
    )


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_the_format_header_then_one_line_per_run_of_a_case(tmp_path: Path) -> None:
    m = Measurement.from_raw({"samples_per_s": (990.0, 1000.0, 1010.0, 1005.0, 995.0)}, {"ttfb_s": 0.05})
    env = Environment(torch="2.13.0", git_commit="1a2b3c4d5e6f", distributions={"numpy": "2.4.6", "six": "1.0"})
    records = record.records_from(
        [m, m.stamped(session="s", recorded="")],
        run="r1",
        time="2026-12-01T02:00:00+00:00",
        environment=env,
        case_ids=["a-cpu-w0-bs1", "b-cpu-w0-bs1"],
    )
    path = store.append(tmp_path, FP, records)
    assert path == tmp_path / f"{FP.key}.jsonl"
    head, *rows = [json.loads(line) for line in lines(path)]
    assert {k: head[k] for k in ("format", "version", "hardware")} == {
        "format": "loaderbench-history",
        "version": 1,
        "hardware": FP.as_dict(),
    }
    assert [r["case"] for r in rows] == ["a-cpu-w0-bs1", "b-cpu-w0-bs1"]
    row = rows[0]
    assert {"run", "time", "commit", "environment", "case", "workload", "device", "simulated", "metrics"} <= set(row)
    assert (row["run"], row["commit"], row["simulated"]) == ("r1", "1a2b3c4d5e6f", False)
    # the environment keeps its fields and the workload packages, not every installed distribution
    assert row["environment"]["torch"] == "2.13.0" and row["environment"]["packages"] == {"numpy": "2.4.6"}
    assert row["environment"]["distributions"] is None
    sps, ttfb = row["metrics"]["samples_per_s"], row["metrics"]["ttfb_s"]
    assert sps["lo"] < sps["value"] == 1000.0 < sps["hi"]
    assert math.isclose(math.log(sps["value"] / sps["lo"]), math.log(sps["hi"] / sps["value"]))  # symmetric in log
    assert ttfb == {"value": 0.05, "lo": 0.05, "hi": 0.05}  # a one-off value has no within-run interval


def test_several_measurements_of_a_case_make_one_record_at_their_geometric_mean() -> None:
    a = Measurement.from_raw({"samples_per_s": (100.0, 100.0, 100.0)})
    b = Measurement.from_raw({"samples_per_s": (400.0, 400.0, 400.0)})
    (only,) = record.records_from([a, b], run="r", time="2026-12-01T02:00:00+00:00", environment=Environment())
    f = only.metrics["samples_per_s"]
    assert math.isclose(f.value, 200.0)
    assert f.lo < 200.0 < f.hi  # the spread between the measurements is the run's uncertainty


def test_read_gives_cases_and_series_ordered_by_time(tmp_path: Path) -> None:
    store.append(tmp_path, FP, [rec(2, 1020.0), rec(0, 1000.0, case="b-cpu")])
    store.append(tmp_path, FP, [rec(1, 1010.0)])
    h = store.read(tmp_path)
    assert h.hardware == FP and h.cases() == [CASE, "b-cpu"][::-1]
    series = h.series(CASE, "samples_per_s")
    assert [p.value for p in series] == [1010.0, 1020.0]  # by time, not by append order
    assert series[0] == record.Point("h1-r1", rec(1).time, "c0001", rec(1).environment, 1010.0, 999.9, 1020.1, False)
    assert h.series(CASE, "ttfb_s") == ()
    with pytest.raises(HistoryError, match=r"case='nope': no run of it .* Known cases: b-cpu, io-cpu"):
        h.series("nope", "samples_per_s")


def test_a_torn_last_line_is_skipped_with_a_warning_and_cut_off_by_the_next_append(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = store.append(tmp_path, FP, [rec(0), rec(1)])
    whole = rec(2).line()
    with path.open("a", encoding="utf-8") as fh:
        fh.write(whole[: len(whole) // 2])  # a run killed mid-append
    with caplog.at_level(logging.WARNING):
        h = store.read(path)
    assert len(h.records) == 2
    assert any("line 4: a torn last line" in n for n in h.notes)
    assert "torn last line" in caplog.text
    store.append(tmp_path, FP, [rec(3)])
    assert [r.run for r in store.read(path).records] == ["h1-r0", "h1-r1", "h1-r3"]
    assert store.read(path).notes == ()


def test_a_whole_last_record_without_its_newline_is_kept(tmp_path: Path) -> None:
    path = store.append(tmp_path, FP, [rec(0)])
    with path.open("a", encoding="utf-8") as fh:
        fh.write(rec(1).line().rstrip("\n"))
    assert len(store.read(path).records) == 2
    store.append(tmp_path, FP, [rec(2)])
    assert [r.run for r in store.read(path).records] == ["h1-r0", "h1-r1", "h1-r2"]


def test_an_append_killed_half_written_leaves_the_history_readable(tmp_path: Path) -> None:
    store.append(tmp_path, FP, [rec(0)])
    code = textwrap.dedent(
        """
        import json, sys
        from pathlib import Path
        from loaderbench.history import store
        from loaderbench.history.record import RunRecord
        from loaderbench.store.fingerprint import Fingerprint
        fp = Fingerprint.from_dict(json.loads(sys.argv[1]))
        store.append(Path(sys.argv[2]), fp, [RunRecord.from_json(json.loads(sys.argv[3]))] * 3)
        """
    )
    env = {**os.environ, jsondoc.FAULT_ENV: store.HALF_WRITTEN}
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(FP.as_dict()), str(tmp_path), rec(1).line()],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == -9, proc.stderr  # SIGKILL, half of the three lines written
    h = store.read(tmp_path)
    assert [r.run for r in h.records][:1] == ["h1-r0"] and any("torn last line" in n for n in h.notes)
    store.append(tmp_path, FP, [rec(2)])  # the lock was released by the kill; the torn line is cut off
    after = store.read(tmp_path)
    assert after.notes == () and after.records[-1].run == "h1-r2"
    assert sorted(os.listdir(tmp_path)) == [f"{FP.key}.jsonl"]  # no lock file left


def test_garbage_in_the_middle_is_an_error_naming_the_file_and_the_line(tmp_path: Path) -> None:
    path = store.append(tmp_path, FP, [rec(0), rec(1)])
    text = lines(path)
    path.write_text("\n".join([*text[:2], "{not json", *text[2:]]) + "\n", encoding="utf-8")
    with pytest.raises(HistoryError, match=rf"{path}: line 3: not valid JSON .* fix or delete that line"):
        store.read(path)
    h = store.read(path, skip_bad=True)  # the rest stays readable
    assert len(h.records) == 2 and "line 3 skipped" in h.notes[0]
    store.append(tmp_path, FP, [rec(2)])  # and new runs are still kept
    assert len(store.read(path, skip_bad=True).records) == 3


def test_a_record_with_a_missing_or_bad_field_is_an_error(tmp_path: Path) -> None:
    path = store.append(tmp_path, FP, [rec(0)])
    bad = rec(1).to_json()
    bad["metrics"]["samples_per_s"]["lo"] = 2000.0
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(bad) + "\n" + rec(2).line())
    with pytest.raises(HistoryError, match=r"line 3: metrics.samples_per_s: lo <= value <= hi does not hold"):
        store.read(path)
    path.write_text(lines(path)[0] + "\n" + json.dumps({"run": "x", "time": "yesterday"}) + "\n", encoding="utf-8")
    with pytest.raises(HistoryError, match=r"line 2: field 'time' is missing|line 2: field 'case'"):
        store.read(path)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ('{"format": "loaderbench-baseline", "version": 2}\n', "not a loaderbench history"),
        ("just some text\nmore\n", "not valid JSON"),
        (rec(0).line(), "no header line before it"),
    ],
)
def test_a_foreign_file_is_refused_at_line_1(tmp_path: Path, content: str, why: str) -> None:
    path = tmp_path / "foreign.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(HistoryError, match=rf"{path}: line 1: {why}.*This is not a loaderbench history file"):
        store.read(tmp_path)


def test_a_newer_version_is_refused_with_upgrade(tmp_path: Path) -> None:
    path = store.append(tmp_path, FP, [rec(0)])
    head, *rest = lines(path)
    newer = {**json.loads(head), "version": 2}
    path.write_text("\n".join([json.dumps(newer), *rest]) + "\n", encoding="utf-8")
    with pytest.raises(HistoryError, match=r"newer loaderbench \(history format version 2; this one reads 1\)"):
        store.read(path)
    with pytest.raises(HistoryError, match="Upgrade loaderbench"):
        store.append(tmp_path, FP, [rec(1)])
    assert len(lines(path)) == 2  # nothing appended


def test_a_history_of_other_hardware_is_refused_naming_what_differs(tmp_path: Path) -> None:
    store.append(tmp_path, OTHER, [rec(0)])
    with pytest.raises(HistoryError, match=r"other hardware than this machine \(CPU model: Other CPU .*Test CPU"):
        store.read(tmp_path, hardware=FP)
    # a file renamed to this machine's key is refused by the appender too
    os.replace(store.path_for(tmp_path, OTHER), store.path_for(tmp_path, FP))
    with pytest.raises(HistoryError, match=r"its header names other hardware than this machine \(CPU model"):
        store.append(tmp_path, FP, [rec(1)])


def test_a_directory_of_two_hardware_classes_needs_the_machine_named(tmp_path: Path) -> None:
    store.append(tmp_path, FP, [rec(0)])
    store.append(tmp_path, OTHER, [rec(1)])
    with pytest.raises(HistoryError, match="holds the histories of 2 hardware classes"):
        store.read(tmp_path)
    assert [h.hardware for h in store.histories(tmp_path)] == sorted([FP, OTHER], key=lambda f: f.key)
    assert store.read(tmp_path, hardware=FP).records[0].run == "h1-r0"


def test_a_header_of_other_hardware_in_the_middle_is_an_error(tmp_path: Path) -> None:
    a = store.append(tmp_path / "a", FP, [rec(0)])
    b = store.append(tmp_path / "b", OTHER, [rec(1)])
    merged = tmp_path / "merged.jsonl"
    merged.write_bytes(a.read_bytes() + b.read_bytes())
    with pytest.raises(HistoryError, match=r"line 3: a header of other hardware in the middle"):
        store.read(merged)


def test_an_empty_file_reads_as_no_runs_and_gets_its_header_on_the_next_append(tmp_path: Path) -> None:
    path = store.path_for(tmp_path, FP)
    path.write_bytes(b"")
    assert store.histories(tmp_path) == ()
    path.write_bytes(b'{"format":"loaderbench-hist')  # a header torn as the file was created
    store.append(tmp_path, FP, [rec(0)])
    assert [r.run for r in store.read(path).records] == ["h1-r0"]


def test_histories_of_several_runners_merge_into_one_series_per_case(tmp_path: Path) -> None:
    a = store.append(tmp_path / "runner-a", FP, [rec(i, 1000.0 + i, host="ha") for i in range(0, 6, 2)])
    b = store.append(tmp_path / "runner-b", FP, [rec(i, 1000.0 + i, host="hb") for i in range(1, 6, 2)])
    side_by_side = tmp_path / "merged"
    side_by_side.mkdir()
    shutil.copy(a, side_by_side / "runner-a.jsonl")
    shutil.copy(b, side_by_side / "runner-b.jsonl")
    concatenated = tmp_path / "all.jsonl"
    concatenated.write_bytes(a.read_bytes() + b.read_bytes() + a.read_bytes())  # a copy merged twice
    for source in (side_by_side, concatenated):
        h = store.read(source)
        assert h.cases() == [CASE]
        assert [p.value for p in h.series(CASE, "samples_per_s")] == [1000.0 + i for i in range(6)]
        assert {p.environment.host_id for p in h.series(CASE, "samples_per_s")} == {"ha", "hb"}
    assert any("seen more than once" in n for n in store.read(concatenated).notes)


#: ``python -c CHILD DIR FINGERPRINT APPENDS``: forks two writers, released together, each appending APPENDS
#: runs of its own case, one append at a time.
CHILD = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    from loaderbench.history import store
    from loaderbench.history.record import Figure, RunRecord
    from loaderbench.store.environment import Environment
    from loaderbench.store.fingerprint import Fingerprint

    directory, fp, appends = Path(sys.argv[1]), Fingerprint.from_dict(json.loads(sys.argv[2])), int(sys.argv[3])
    start_r, start_w = os.pipe()
    pids = []
    for w in range(2):
        pid = os.fork()
        if pid == 0:
            os.close(start_w)
            os.read(start_r, 1)
            for i in range(appends):
                r = RunRecord(f"w{w}-{i}", "2026-12-01T02:00:00+00:00", None, Environment(), f"case{w}", "io", "cpu",
                              False, {"samples_per_s": Figure(1.0, 1.0, 1.0)}, config={"pad": "x" * 3000})
                store.append(directory, fp, [r], lock_timeout_s=60)
            os._exit(0)
        pids.append(pid)
    os.close(start_r)
    os.close(start_w)
    sys.exit(max(os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids))
    """
)


def test_concurrent_appends_from_two_processes_all_land_whole(tmp_path: Path) -> None:
    appends = 25
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), json.dumps(FP.as_dict()), str(appends)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    h = store.read(tmp_path)  # every line whole: no error, no torn line
    assert h.notes == ()
    assert sorted(r.run for r in h.records) == sorted(f"w{w}-{i}" for w in range(2) for i in range(appends))
    assert len(lines(store.path_for(tmp_path, FP))) == 1 + 2 * appends  # one header
    assert sorted(os.listdir(tmp_path)) == [f"{FP.key}.jsonl"]  # no lock file left


def test_a_missing_path_or_an_unwritable_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(HistoryError, match=r"history='.*nowhere': no such file or directory"):
        store.read(tmp_path / "nowhere")
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    with pytest.raises(HistoryError, match=r"--loader-history='.*file/sub': cannot create it"):
        store.append(blocker / "sub", FP, [rec(0)])


JSON_LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12)
)
JSON_VALUES = st.recursive(
    JSON_LEAVES, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
)
FIELDS = ["run", "time", "commit", "environment", "case", "workload", "device", "simulated", "metrics", "config"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    field=st.sampled_from(FIELDS), value=JSON_VALUES, cut=st.integers(min_value=0, max_value=400), where=st.booleans()
)
def test_a_fuzzed_line_reads_or_is_an_error_naming_the_line(
    tmp_path: Path, field: str, value: object, cut: int, where: bool
) -> None:
    """A record with one field replaced by any JSON value, or a line cut anywhere: it reads, or it is a
    HistoryError naming the line (or skipped as a torn last line); never another exception."""
    directory = tmp_path / f"h{abs(hash((field, repr(value), cut, where)))}"
    path = store.append(directory, FP, [rec(0)])
    bad = rec(1).to_json()
    bad[field] = value
    line = json.dumps(bad)
    text = line[:cut] if where else line
    with path.open("a", encoding="utf-8") as fh:
        fh.write(text + ("\n" + rec(2).line() if where else "\n"))
    try:
        h = store.read(path)
    except HistoryError as exc:
        assert ": line 3: " in str(exc)
    else:
        assert h.records[0].run == "h1-r0"
    store.append(directory, FP, [rec(3)])  # appending never trips over it
