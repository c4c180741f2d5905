"""PNG plots from the fixed measurements of ``tests/golden/results_v1.json`` (needs the ``plot`` extra)."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest

from loaderbench.report import files, plots
from loaderbench.store import results

GOLDEN = Path(__file__).parent / "golden"
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
needs_matplotlib = pytest.mark.skipif(
    not HAS_MATPLOTLIB, reason="matplotlib is not installed (pip install loaderbench[plot])"
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def fixed() -> tuple[results.Measurement, ...]:
    return results.read_results(GOLDEN / "results_v1.json").measurements


@needs_matplotlib
def test_every_plot_is_drawn_from_a_run_with_cpu_and_cuda_cases(
    fixed: tuple[results.Measurement, ...], tmp_path: Path
) -> None:
    drawn = plots.write_plots(fixed, tmp_path)
    names = {p.name for p in drawn.files}
    assert names == {name for name, _ in plots.PLOTS}, drawn.notes
    for path in drawn.files:
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC), path
        assert len(data) > 10_000, path  # a real figure, not an empty canvas
    assert drawn.notes == ()


@needs_matplotlib
def test_plots_the_data_lacks_are_skipped_with_a_reason(fixed: tuple[results.Measurement, ...], tmp_path: Path) -> None:
    only_w0 = [m for m in fixed if m.device == "cpu" and m.config.num_workers == 0]
    drawn = plots.write_plots(only_w0, tmp_path)
    assert drawn.files == ()
    assert any("throughput vs num_workers not drawn" in n for n in drawn.notes)
    assert any("TTFB and epoch stall plot not drawn" in n for n in drawn.notes)
    # no CUDA case ran: the CUDA plots are left out without a note each
    assert not any("CUDA" in n or "H2D" in n for n in drawn.notes)


@needs_matplotlib
def test_report_files_include_the_plots(fixed: tuple[results.Measurement, ...], tmp_path: Path) -> None:
    written = files.write_report_files(tmp_path, fixed)
    assert len(written.plots) == len(plots.PLOTS)
    md = written.markdown.read_text()
    for p in written.plots:
        assert f"]({p.name})" in md
        assert p.stat().st_size > 0


def test_without_matplotlib_the_report_says_how_to_get_plots(
    fixed: tuple[results.Measurement, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plots, "available", lambda: False)
    written = files.write_report_files(tmp_path, fixed)
    assert written.plots == ()
    assert "pip install loaderbench[plot]" in written.markdown.read_text()
    assert not list(tmp_path.glob("*.png"))


@needs_matplotlib
def test_log_scale_plot_survives_a_single_case(fixed: tuple[results.Measurement, ...], tmp_path: Path) -> None:
    one = [dataclasses.replace(m) for m in fixed if m.case_id == "io-cpu-w2-bs32"]
    assert isinstance(plots.startup_and_stall(one, tmp_path / "s.png"), Path)


@needs_matplotlib
def test_startup_plot_without_any_epoch_stall(fixed: tuple[results.Measurement, ...], tmp_path: Path) -> None:
    no_stall = [
        dataclasses.replace(m, phases={k: v for k, v in m.phases.items() if k != "epoch_stall_s"}) for m in fixed
    ]
    assert isinstance(plots.startup_and_stall(no_stall, tmp_path / "s.png"), Path)


def test_a_failing_plot_becomes_a_note(
    fixed: tuple[results.Measurement, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(ms: object, path: Path) -> Path:
        raise ValueError("no luck")

    monkeypatch.setattr(plots, "available", lambda: True)
    monkeypatch.setattr(plots, "PLOTS", (("broken.png", broken),))
    drawn = plots.write_plots(fixed, tmp_path)
    assert drawn.files == ()
    assert drawn.notes == ("broken.png not drawn: matplotlib failed (ValueError: no luck)",)


def user_test_cases(fixed: tuple[results.Measurement, ...]) -> list[results.Measurement]:
    """The suite's io cases as a user's parametrized ``loader_benchmark`` test records them: one workload per
    parameter (the node's name), the test function as their group."""
    io = [m for m in fixed if m.workload == "io" and m.device == "cpu" and not m.consumer]
    return [dataclasses.replace(m, workload=f"test_mine-{m.config.id}", group="test_mine") for m in io]


@needs_matplotlib
def test_a_users_parametrized_configs_are_drawn_as_one_workload(
    fixed: tuple[results.Measurement, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = user_test_cases(fixed)
    assert len({m.config.num_workers for m in mine}) >= 2
    titles: list[str] = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: titles.extend(ax.get_title() for ax in fig.axes) or path)
    assert isinstance(plots.throughput_vs_workers(mine, tmp_path / "t.png"), Path)
    assert titles == ["test_mine"]  # one panel for the test function, not one per parameter
    ungrouped = [dataclasses.replace(m, group="") for m in mine]
    assert isinstance(plots.throughput_vs_workers(ungrouped, tmp_path / "u.png"), str)  # as before: not drawn


@needs_matplotlib
def test_the_startup_legend_names_only_the_settings_drawn(
    fixed: tuple[results.Measurement, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = [m for m in fixed if m.config.num_workers > 0 and not m.config.persistent_workers]
    legends: list[list[str]] = []

    def save(fig: object, path: Path) -> Path:
        for ax in fig.axes:  # type: ignore[attr-defined]
            legends.append([t.get_text() for t in ax.get_legend().get_texts()])
        return path

    monkeypatch.setattr(plots, "_save", save)
    plots.startup_and_stall(plain, tmp_path / "s.png")
    assert legends == [["persistent_workers=False"]] * 2
    legends.clear()
    plots.startup_and_stall([m for m in fixed if m.config.num_workers > 0], tmp_path / "s.png")
    assert legends == [["persistent_workers=False", "persistent_workers=True"]] * 2
