"""Reports rendered from fixed measurements (``tests/golden/results_v1.json``) against golden files.

To accept an intended change of the output, regenerate the golden files with
``LOADERBENCH_UPDATE_GOLDEN=1 pytest tests/report/test_report.py`` and review the diff.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import pytest

from loaderbench import formatting as fmt
from loaderbench.config import LoaderConfig
from loaderbench.errors import ReportError, UsageError
from loaderbench.measurement import Measurement
from loaderbench.report import advice, cases, files, markdown, table, terminal
from loaderbench.store import results
from loaderbench.tools import selfcheck, soak, spread

GOLDEN = Path(__file__).parent / "golden"
REPORT_PACKAGE = Path(__file__).parents[2] / "src" / "loaderbench" / "report"
UPDATE = os.environ.get("LOADERBENCH_UPDATE_GOLDEN") == "1"


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"{path} is missing; create it with LOADERBENCH_UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8"), f"{name} differs from the golden file (see module docstring)"


@pytest.fixture(scope="module")
def fixed() -> tuple[Measurement, ...]:
    return results.read_results(GOLDEN / "results_v1.json").measurements


VERDICTS = {
    "io-cpu-w4-bs32": "regressed: samples_per_s 1.23x slower",
    "io-cpu-w2-bs32-spawn": "inconclusive: ttfb_s 1.08x slower",
    "io-cpu-w2-bs32": "unchanged",
    "cpu-cpu-w2-bs32": "improved: samples_per_s 1.12x faster",
}


def test_terminal_report_matches_golden(fixed: tuple[Measurement, ...]) -> None:
    lines = terminal.terminal_report(fixed, width=120)
    assert all(len(line) <= 120 for line in lines), [line for line in lines if len(line) > 120]
    check_golden("terminal.txt", "\n".join(lines) + "\n")


def test_terminal_report_with_verdicts_matches_golden(fixed: tuple[Measurement, ...]) -> None:
    lines = terminal.terminal_report(fixed, width=120, verdicts=VERDICTS)
    assert all(len(line) <= 120 for line in lines)
    text = "\n".join(lines) + "\n"
    assert "REGRESSED: samples_per_s 1.23x slower" in text
    assert "not compared" in text
    check_golden("terminal_verdicts.txt", text)


@pytest.mark.parametrize("width", [80, 100, 200])
def test_terminal_report_fits_the_width(fixed: tuple[Measurement, ...], width: int) -> None:
    assert all(len(line) <= width for line in terminal.terminal_report(fixed, width=width, verdicts=VERDICTS))


def test_each_group_is_sorted_by_throughput_with_the_best_marked(fixed: tuple[Measurement, ...]) -> None:
    for ms in cases.groups(fixed).values():
        rates = [m.samples_per_s for m in ms]
        assert rates == sorted(rates, reverse=True)
    lines = terminal.terminal_report(fixed)
    io = lines.index(next(line for line in lines if line.startswith("io on cpu")))
    assert lines[io + 2].startswith("* w4-bs32 ")
    assert "3.85x the num_workers=0 case" in lines[io]


def test_markdown_report_matches_golden(fixed: tuple[Measurement, ...]) -> None:
    text = markdown.markdown_report(
        fixed,
        verdicts=VERDICTS,
        plots=[Path("throughput_vs_workers.png")],
        plot_notes=["prefetch_factor x num_workers heatmap not drawn: (example note)"],
    )
    check_golden("report.md", text)


def test_markdown_without_measurements_says_so() -> None:
    assert "No benchmark case was measured." in markdown.markdown_report([])
    assert terminal.terminal_report([]) == ["no benchmark case was measured"]


def test_markdown_escapes_pipes_in_cells() -> None:
    assert table.markdown_table([table.Column("a")], [["x|y"]])[-1] == "| x\\|y |"


def test_results_round_trip(fixed: tuple[Measurement, ...], tmp_path: Path) -> None:
    path = results.write_results(tmp_path / "r" / "results.json", fixed, verdicts=VERDICTS, context={"tier": "smoke"})
    back = results.read_results(path)
    assert back.measurements == fixed
    assert back.verdicts == VERDICTS
    assert back.context == {"tier": "smoke"}
    doc = json.loads(path.read_text())
    assert doc["format"] == results.FORMAT and doc["version"] == results.VERSION
    first = doc["cases"][0]
    for key in ("samples_per_s", "ttfb_s", "peak_memory_bytes", "ideal_samples_per_s", "efficiency", "warnings"):
        assert key in first["metrics"], key


def test_results_write_nan_as_null(tmp_path: Path) -> None:
    m = Measurement(
        workload="w",
        device="cpu",
        config=LoaderConfig(),
        rounds={"samples_per_s": ()},
        phases={},
        steady_batches=0,
        bytes_per_sample=0,
        peak_memory_bytes=None,
        memory_kind="pss",
        ideal_samples_per_s=None,
        torch_threads=1,
        cpus=2,
        extra={"x": math.nan},
    )
    path = results.write_results(tmp_path / "results.json", [m])
    assert "NaN" not in path.read_text()
    assert results.read_results(path).measurements[0].extra == {"x": None}


def test_pytest_benchmark_json_reads_back(fixed: tuple[Measurement, ...], tmp_path: Path) -> None:
    doc = {
        "machine_info": {},
        "datetime": "2025-01-01",
        "benchmarks": [{"name": f"test_pipeline[{m.case_id}]", "extra_info": m.extra_info()} for m in fixed]
        + [{"name": "test_harness_overhead", "extra_info": {"workload": "near-zero"}}],
    }
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(doc))
    back = results.read_results(path)
    assert back.source == "pytest-benchmark"
    assert len(back.measurements) == len(fixed)
    for a, b in zip(back.measurements, fixed, strict=True):
        assert a.case_id == b.case_id
        assert a.rounds == b.rounds
        assert a.notes == b.notes
        assert a.warnings == b.warnings
        assert a.phases == {k: v for k, v in b.phases.items() if k != "epoch_shutdown_s"}
        assert dict(a.extra) == dict(b.extra)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "file not found"),
        ("not json", "not valid JSON"),
        ('{"format": "loaderbench-results", "version": 99}', "format version 99"),
        ('{"hello": 1}', "not a loaderbench document"),
        ('{"format": "loaderbench-results", "version": 1, "cases": [{"workload": "x"}]}', "malformed case"),
    ],
)
def test_bad_results_files_are_usage_errors(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "results.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UsageError, match=message) as info:
        results.read_results(path)
    assert str(path) in str(info.value)


@dataclasses.dataclass(frozen=True)
class FakeVerdict:
    case_id: str
    metric: str
    outcome: str
    change: str


def test_verdict_texts_keep_the_worst_metric_per_case() -> None:
    texts = terminal.verdict_texts(
        [
            FakeVerdict("a", "ttfb_s", "unchanged", "same"),
            FakeVerdict("a", "samples_per_s", "regressed", "1.30x slower"),
            FakeVerdict("a", "peak_memory_bytes", "improved", "1.10x smaller"),
            FakeVerdict("b", "samples_per_s", "unchanged", "same"),
            FakeVerdict("c", "samples_per_s", "improved", "1.20x faster"),
            FakeVerdict("c", "ttfb_s", "inconclusive", "1.05x slower"),
        ]
    )
    assert texts == {
        "a": "regressed: samples_per_s 1.30x slower",
        "b": "unchanged",
        "c": "inconclusive: ttfb_s 1.05x slower",
    }


def test_write_report_files(fixed: tuple[Measurement, ...], tmp_path: Path) -> None:
    summary = tmp_path / "step_summary.md"
    summary.write_text("earlier step\n")
    written = files.write_report_files(tmp_path / "out", fixed, verdicts=VERDICTS, plots=False, step_summary=summary)
    assert written.results is not None and results.read_results(written.results).measurements == fixed
    md = written.markdown.read_text()
    assert md.startswith("# loaderbench report")
    assert "plots not drawn: turned off" in md
    text = summary.read_text()
    assert text.startswith("earlier step\n# loaderbench report")


# --- advice claims ---------------------------------------------------------------------------------------------


def test_advice_claims_on_the_fixed_measurements(fixed: tuple[Measurement, ...]) -> None:
    verdicts = {r.key: r.verdict for r in advice.evaluate(fixed)}
    assert verdicts == {
        "more_workers": advice.HOLDS,
        "oversubscribe": advice.DEPENDS,
        "small_tensor": advice.HOLDS,
        "pin_memory": advice.HOLDS,
        "spawn": advice.HOLDS,
        "persistent": advice.HOLDS,
    }
    check_golden("advice.txt", "\n".join(advice.table(advice.evaluate(fixed), width=120)) + "\n")


def _only(fixed: tuple[Measurement, ...], workload: str, ids: set[str]) -> list[Measurement]:
    return [m for m in fixed if m.workload == workload and m.config.id in ids]


def test_advice_verdicts_that_do_not_hold(fixed: tuple[Measurement, ...]) -> None:
    # transfer: workers only lose, so "more workers is faster" fails when it is the only sleep-bound evidence
    renamed = [dataclasses.replace(m, workload="io") for m in _only(fixed, "transfer", {"w0-bs32", "w1-bs32"})]
    assert advice.more_workers_faster(renamed).verdict == advice.DOES_NOT_HOLD
    # persistent workers that do not halve the stall
    io = _only(fixed, "io", {"w2-bs32", "w2-bs32-persist"})
    slow = [dataclasses.replace(m, phases={**m.phases, "epoch_stall_s": 0.08}) for m in io]
    assert advice.persistent_stall(slow).verdict == advice.DOES_NOT_HOLD


def test_advice_depends_names_the_peak(fixed: tuple[Measurement, ...]) -> None:
    io = _only(fixed, "io", {"w0-bs32", "w1-bs32", "w2-bs32"})
    flat = [*io, dataclasses.replace(io[-1], config=io[-1].config.replace(num_workers=4))]
    result = advice.more_workers_faster(flat)
    assert result.verdict == advice.DEPENDS
    assert "faster up to 2 workers" in result.evidence


def test_advice_without_data_is_not_measured() -> None:
    results_ = advice.evaluate([])
    assert {r.verdict for r in results_} == {advice.NOT_MEASURED}
    assert all(r.evidence for r in results_)
    assert advice.table(results_, only_measured=True) == []


def test_advice_16_workers_on_a_big_machine_is_not_measured(fixed: tuple[Measurement, ...]) -> None:
    big = [dataclasses.replace(m, cpus=32) for m in fixed]
    result = advice.oversubscription(big)
    assert result.verdict == advice.NOT_MEASURED and "32 CPUs" in result.evidence


# --- formatting and tables -------------------------------------------------------------------------------------


def test_flag_letters_come_from_the_measurement(fixed: tuple[Measurement, ...]) -> None:
    by_id = {m.case_id: m for m in fixed}
    assert fmt.flags(by_id["io-cpu-w4-bs32"]) == "ON"
    assert fmt.flags(by_id["io-cpu-w2-bs32-pf4"]) == "U"
    assert fmt.flags(by_id["io-cpu-w2-bs32"]) == ""
    assert cases.flagged_cases(fixed) == {
        "U": ["io-cpu-w2-bs32-pf4", "transfer-cpu-w2-bs32"],
        "F": ["io-cpu-w2-bs32-pf1"],
        "O": ["io-cpu-w4-bs32", "cpu-cpu-w4-bs32"],
    }


def test_wrap_keeps_a_number_with_its_bytes_unit() -> None:
    assert fmt.wrap("abcdefghij klm 356.4 MB x", 20, indent=0) == ["abcdefghij klm", "356.4 MB x"]
    assert fmt.wrap("abcdefghij klm 11.9 GB/s", 20, indent=2) == ["  abcdefghij klm", "  11.9 GB/s"]
    assert fmt.wrap("", 20, indent=2) == []


def test_text_table_widths() -> None:
    cols = [table.Column("case", min_width=6), table.Column("n", "r"), table.Column("note", fill=True)]
    assert table.text_table(cols, [["a", "12", "a long note here"]], width=20) == [
        "case    n note",
        "a      12 a long no~",
    ]


def test_soak_table_renders_a_snapshot_per_column() -> None:
    snaps = [soak.Snapshot(10, 0, 1, 1000, 0, 0, 200_000_000), soak.Snapshot(12, 2, 1, 1000, 1, 4096, 250_000_000)]
    lines = soak.table(["before", "after pass 1"], snaps)
    assert lines[0] == f"{'':30}{'before':>18}{'after pass 1':>18}{'last pass grew':>15}"
    assert lines[1] == f"{'open fds':30}{10:>18}{12:>18}{'+2.0':>15}"
    assert lines[-1] == f"{'main-process RSS (MB)':30}{'200.0':>18}{'250.0':>18}{'+50.0':>15}"


def test_spread_render_keeps_long_case_ids() -> None:
    long_id = "advice-tensor-10000x10-cpu-w2-bs32-pf2-pin-persist-spawn"
    lines = spread.render({"io-cpu-w0-bs32": [100.0, 110.0, 105.0], long_id: [1.0, 1.0]})
    assert lines[0] == f"{'case':<{len(long_id)}} {'median samples/s':>16} {'max/min':>8} {'CV':>6} n"
    assert lines[1].startswith(long_id + " ")  # sorted by case id
    assert lines[2] == f"{'io-cpu-w0-bs32':<{len(long_id)}} {'105.0':>16} {'1.100':>8} {'4.8%':>6} 3"


def test_selfcheck_render_aligns_the_columns() -> None:
    row = {
        "case": "io-cpu-w0-bs32",
        "relative_iqr": 0.012,
        "run_to_run": 0.034,
        "resolves": 0.08,
        "aa_false": 0,
        "aa_runs": 10,
        "power_0.1": {"detected": 9, "runs": 10, "achieved": 1.1},
        "aa_extra_time": 0.25,
        "note": "",
        "aa_false_metrics": [],
    }
    lines = selfcheck.render({"cases": [row], "wall_s": 12.0}, [0.1])
    assert lines == [
        "case            rel IQR  run noise  resolves  A/A false  10%: flagged (achieved)  A/A extra time",
        "io-cpu-w0-bs32  1.2%     3.4%       8%        0/10       9/10 (1.10x)             +25%",
        "total wall time: 12 s",
    ]


# --- the package's layout ------------------------------------------------------------------------------------


def test_a_users_test_function_groups_its_configs_unless_two_share_a_config(fixed: tuple[Measurement, ...]) -> None:
    """Each parametrized ``loader_benchmark`` config is its own workload (its baseline key); the reports group
    them by the test function, so ``vs w0`` compares them, except where the test is parametrized over datasets
    too (two cases with one config): those keep their own workloads, since they are not one dataset's configs."""
    io = [m for m in fixed if m.workload == "io" and m.device == "cpu" and not m.consumer]
    mine = [dataclasses.replace(m, workload=f"test_mine-{m.config.id}", group="test_mine") for m in io]
    grouped = cases.groups(mine)
    assert list(grouped) == [("test_mine", "cpu")]
    group = grouped[("test_mine", "cpu")]
    w2 = next(m for m in group if m.config.id == "w2-bs32")
    w0 = next(m for m in group if m.config.id == "w0-bs32")
    assert cases.speedup(w2, group) == pytest.approx(w2.samples_per_s / w0.samples_per_s)
    assert [m.case_id for m in cases.families(mine)] == [m.case_id for m in mine]  # the baseline keys stay
    twice = [*mine, dataclasses.replace(w0, workload="test_mine-w0-bs32-other")]
    assert ("test_mine", "cpu") not in cases.groups(twice) and len(cases.groups(twice)) == len(twice)
    table = "\n".join(terminal.terminal_report(mine))
    assert f"test_mine on cpu: {len(mine)} case(s)" in table
    assert f"{w2.samples_per_s / w0.samples_per_s:.2f}x" in table


def test_a_report_directory_that_cannot_be_written_is_a_usage_error_at_once(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    assert files.prepare_report_dir(tmp_path / "new" / "dir", option="--report").is_dir()
    with pytest.raises(UsageError, match=r"--report=.*a-file/out: cannot create or write files in this directory"):
        files.prepare_report_dir(tmp_path / "a-file" / "out", option="--report")


def test_a_report_that_cannot_be_written_after_measuring_is_a_report_error(
    fixed: tuple[Measurement, ...], tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ReportError, match=r"the report was not written to .*a-file/out: .*The measurements and"):
        files.write_report_files(tmp_path / "a-file" / "out", fixed, plots=False)
