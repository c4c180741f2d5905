"""The history page and its Markdown summary (loaderbench.history.page, .summary, ``loaderbench history``): what
the HTML holds without a browser, and a real headless Chromium (Debian's package) opening it from disk and
drawing every graph."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from loaderbench import cli
from loaderbench.errors import UsageError
from loaderbench.history import overview, page, store
from loaderbench.history.summary import markdown
from loaderbench.tools.simulate_history import simulate

pytest.importorskip("plotly", reason="plotly (the 'history' extra) is not installed")

#: Cases of the simulated history: an improvement (file), the torch-upgrade regression (io w2), a creep
#: (skewed w2), the memory regression (transfer w2), a regression 5 nights old (cpu w2) and a quiet case (cpu w0).
CASES = (
    "cpu-cpu-w0-bs32",
    "cpu-cpu-w2-bs32",
    "file-cpu-w0-bs16",
    "io-cpu-w2-bs32",
    "skewed-cpu-w2-bs4",
    "transfer-cpu-w2-bs32",
)
TITLE = "Simulated: six weeks of nightly runs"


@pytest.fixture(scope="module")
def history_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("history")
    simulate(directory, nights=42, cases=CASES)
    return directory


@pytest.fixture(scope="module")
def view(history_dir: Path) -> overview.Overview:
    return overview.build(store.read(history_dir))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, view: overview.Overview) -> Path:
    return page.write_page(view, tmp_path_factory.mktemp("site"), title=TITLE)


def test_the_open_regressions_are_the_simulated_ones(view: overview.Overview) -> None:
    found = {(r.series.case, r.series.metric.name): r for r in view.regressions}
    assert set(found) == {
        ("cpu-cpu-w2-bs32", "samples_per_s"),
        ("io-cpu-w2-bs32", "samples_per_s"),
        ("skewed-cpu-w2-bs4", "samples_per_s"),
        ("transfer-cpu-w2-bs32", "peak_memory_bytes"),
    }
    # the steps of 12-15% are beyond the 10% threshold; the creep (2% a night over 5 nights) is one change
    # point inside it, and the segment after it still holds part of the ramp, so its mean is about 10%
    assert all(r.beyond_threshold for key, r in found.items() if key[0] != "skewed-cpu-w2-bs4")
    assert 1.06 < found[("skewed-cpu-w2-bs4", "samples_per_s")].slowdown < 1.13
    # only the one a few nights old fails a nightly job (--loader-history-fail), and it is listed first
    assert [(r.series.case, r.fails_job) for r in view.regressions][:2] == [
        ("cpu-cpu-w2-bs32", True),
        ("skewed-cpu-w2-bs4", False),
    ]
    assert sum(r.fails_job for r in view.regressions) == 1
    torch = next(r for r in view.regressions if r.series.case == "io-cpu-w2-bs32")
    assert torch.environment_changes == ("torch 2.13.0+cpu -> 2.14.1+cpu",)
    assert -0.18 < torch.change_point.change < -0.10 and torch.first.run == "simulated-night-23"
    # an improvement is a change point, never an open regression
    file = next(s for s in view.series if s.case == "file-cpu-w0-bs16" and s.metric.name == "samples_per_s")
    assert [cp.index for cp in file.change_points] == [12] and 0.08 < file.change_points[0].change < 0.2
    assert not any(r.series is file for r in view.regressions)


def test_the_page_has_one_graph_per_case_and_metric_and_the_regressions_first(
    site: Path, view: overview.Overview
) -> None:
    text = site.read_text(encoding="utf-8")
    graphs = re.findall(
        r'<div class="graph" id="([^"]+)" data-workload="([^"]+)" data-device="cpu" '
        r'data-metric="samples_per_s"',
        text,
    )
    assert sorted(g[0] for g in graphs) == sorted(f"{c}--samples_per_s" for c in CASES)
    assert text.count('<div class="graph"') == len(view.series)
    assert text.index('id="regressions"') < text.index('id="filters"') < text.index('id="graphs"')
    table = text[text.index('id="regressions"') : text.index('id="filters"')]
    assert 'href="#io-cpu-w2-bs32--samples_per_s"' in table and "torch 2.13.0+cpu -&gt; 2.14.1+cpu" in table
    assert "file-cpu-w0-bs16" not in table  # it got faster
    assert "Simulated: the runs on this page were made up" in text


def test_the_figures_are_valid_plotly(view: overview.Overview) -> None:
    """The page writes plain dicts (fast); plotly's figure objects validate every property of them here."""
    go = pytest.importorskip("plotly.graph_objects")
    changed = [s for s in view.series if s.change_points]
    assert changed and all(s.environment for s in changed)
    for s in [*changed, view.series[0]]:
        figure = page.figure(s)
        go.Figure(figure)  # raises on a property plotly does not know or a value it refuses
        labels = [a["text"] for a in figure["layout"]["annotations"]]
        assert len(labels) == len(s.change_points) + len(s.environment)


def test_a_quiet_history_has_no_open_regression(tmp_path: Path) -> None:
    simulate(tmp_path / "h", nights=10, cases=("cpu-cpu-w0-bs32",))  # no event touches it; torch changes
    view = overview.build(store.read(tmp_path / "h"))
    assert view.regressions == () and all(not s.change_points for s in view.series)
    assert "No open regression" in markdown(view)
    text = page.render(view)
    assert "No open regression" in text and text.count('<div class="graph"') == len(view.series)
    torch = next(s for s in view.series if s.metric.name == "samples_per_s").environment
    assert [e.changes for e in torch] == [("Pillow 11.0.0 -> 12.0.0",), ("torch 2.13.0+cpu -> 2.14.1+cpu",)]


def test_cases_on_the_simulated_gpu_are_marked_and_filtered_by_device(history_dir: Path, tmp_path: Path) -> None:
    source = store.read(history_dir)
    gpu = [
        dataclasses.replace(r, case=r.case.replace("-cpu-", "-cuda-"), device="cuda", simulated=True)
        for r in source.runs("io-cpu-w2-bs32")
    ]
    store.append(tmp_path, source.hardware, [*source.runs("cpu-cpu-w0-bs32"), *gpu])
    view = overview.build(store.read(tmp_path))
    assert {(s.case, s.device, s.simulated) for s in view.series} == {
        ("cpu-cpu-w0-bs32", "cpu", False),
        ("io-cuda-w2-bs32", "cuda", True),
    }
    text = page.render(view)
    assert '<option value="cuda">cuda</option>' in text and '<option value="cpu">cpu</option>' in text
    assert text.count('data-device="cuda"') == text.count("simulated GPU</span>") > 0
    assert '"symbol":"circle-open"' in text


def test_without_plotly_the_page_is_a_usage_error_saying_what_to_install(
    view: overview.Overview, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "plotly", None)  # import plotly raises ImportError
    monkeypatch.setitem(sys.modules, "plotly.io", None)
    with pytest.raises(UsageError, match=r"--out: the history page needs plotly: pip install 'loaderbench\[history\]'"):
        page.render(view)
    assert "## Open regressions" in markdown(view)  # the summary needs no plotly


def test_the_page_needs_no_network(site: Path) -> None:
    text = site.read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]+src=", text)
    assert not re.search(r"<link[^>]+href=[\"']https?:", text)
    assert "Plotly.newPlot" in text and len(text) > 3_000_000  # plotly.js itself is inline


def test_the_markdown_summary(view: overview.Overview) -> None:
    text = markdown(view, title=TITLE)
    assert text.startswith(f"# {TITLE}\n")
    regressions = text[text.index("## Open regressions") : text.index("<details>")]
    assert "| io-cpu-w2-bs32 | samples_per_s | -1" in regressions and "beyond 10%" in regressions
    assert "file-cpu-w0-bs16" not in regressions
    assert "| file-cpu-w0-bs16 | samples_per_s |" in text[text.index("<details>") :]


def test_the_command(history_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step output\n")
    code = cli.main(
        [
            "history",
            str(history_dir),
            "--out",
            str(tmp_path / "site"),
            "--markdown",
            str(summary),
            "--metrics",
            "samples_per_s",
            "--threshold",
            "15%",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "6 graphs, 3 open regression(s)" in out
    text = summary.read_text()
    assert text.startswith("earlier step output\n# loaderbench history")  # appended, as GitHub expects
    assert "within 15%" in text  # the -13% torch regression is within a 15% threshold
    assert (tmp_path / "site" / "index.html").stat().st_mode & 0o777 == 0o644  # publishable as it is


@pytest.mark.parametrize(
    ("args", "expected"),
    [(["--metrics", "speed"], "--metrics='speed'"), (["--threshold", "many"], "--threshold='many'")],
)
def test_bad_options_are_usage_errors_naming_them(
    history_dir: Path, args: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["history", str(history_dir), *args])
    assert exc.value.code == 2
    assert expected in capsys.readouterr().err


def test_bad_paths_exit_2_naming_them(history_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["history", str(tmp_path / "none")]) == 2
    assert f"history={str(tmp_path / 'none')!r}" in capsys.readouterr().err
    assert cli.main(["history", str(history_dir), "--markdown", str(tmp_path / "no" / "dir.md")]) == 2
    assert f"--markdown={str(tmp_path / 'no' / 'dir.md')!r}" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert cli.main(["history", str(history_dir), "--out", str(tmp_path / "file")]) == 2
    assert f"--out={str(tmp_path / 'file')!r}" in capsys.readouterr().err


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=30, deadline=None)
@given(option=st.sampled_from(["--metrics", "--threshold", "--out", "--markdown", "--title"]), value=st.text())
def test_any_string_for_an_option_is_accepted_or_a_usage_error(
    history_dir: Path, tmp_path: Path, option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if option in ("--out", "--markdown") and value != "-":
        value = str(tmp_path / ("x" + value.replace("/", "_")))  # only ever under tmp_path (NUL bytes and all)
    try:
        code = cli.main(["history", str(history_dir), "--metrics", "samples_per_s", option, value])
    except SystemExit as exc:  # argparse: a usage error, exit 2
        code = exc.code if isinstance(exc.code, int) else 2
    err = capsys.readouterr().err
    assert code in (0, 2), (option, value, err)
    assert code == 0 or err.strip()


# --- in a real browser --------------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)"
)


def chromium(site: Path, tmp_path: Path, *args: str, query: str = "") -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=15000",
        *args,
        site.resolve().as_uri() + query,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)


def graphs_in(dom: str) -> dict[str, tuple[bool, bool]]:
    """Each graph of a dumped DOM: ``id -> (shown, drawn)`` (drawn: plotly's SVG is in it)."""
    out = {}
    for chunk in dom.split('<div class="graph" ')[1:]:
        opening = chunk[: chunk.index(">")]
        gid = re.search(r'id="([^"]+)"', opening)
        assert gid is not None
        out[gid.group(1)] = ("display: none" not in opening, "plot-container" in chunk and "main-svg" in chunk)
    return out


@needs_chromium
def test_chromium_draws_every_graph_from_disk(site: Path, tmp_path: Path, view: overview.Overview) -> None:
    proc = chromium(site, tmp_path, "--window-size=1400,2000", "--dump-dom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    graphs = graphs_in(proc.stdout)
    assert len(graphs) == len(view.series)
    shown = {gid for gid, (on, _) in graphs.items() if on}
    assert shown == {f"{c}--samples_per_s" for c in CASES}
    assert all(graphs[gid][1] for gid in shown), proc.stderr[-2000:]
    assert "6 graph(s) shown" in proc.stdout


@needs_chromium
def test_chromium_filters_by_the_query_and_takes_a_screenshot(site: Path, tmp_path: Path) -> None:
    dom = chromium(site, tmp_path, "--dump-dom", query="?metric=peak_memory_bytes&changed=1").stdout
    assert "1 graph(s) shown" in dom  # transfer's memory regression only
    shot = tmp_path / "page.png"
    proc = chromium(site, tmp_path, "--window-size=1400,1600", f"--screenshot={shot}", query="?changed=1")
    assert proc.returncode == 0 and shot.stat().st_size > 50_000, proc.stderr[-2000:]
    with Image.open(shot) as image:
        assert image.size == (1400, 1600)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 200  # text, lines and markers, not a blank page
