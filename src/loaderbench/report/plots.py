"""PNG plots of a run (an optional extra: ``pip install loaderbench[plot]``, i.e. matplotlib).

* ``throughput_vs_workers.png``: samples/s against num_workers, one panel per
  workload, one line per start method (the best config at each worker count,
  with its interquartile range), other configs as grey dots, the cost model's
  ideal dashed;
* ``prefetch_heatmap.png``: samples/s over prefetch_factor x num_workers;
* ``startup_and_stall.png``: time to first batch and the next-epoch stall by
  start method and persistent_workers;
* ``memory_vs_workers.png``: peak memory against num_workers;
* with CUDA cases: ``cuda_feed_rate.png``, ``cuda_au_vs_step.png`` and
  ``cuda_h2d_vs_limit.png``.

A plot whose data the run lacks is not drawn, and the reason is returned, so
the report can say so.  Figures are drawn with matplotlib's object API (no
pyplot, no global state, no display needed).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loaderbench import stats
from loaderbench.measurement import Measurement
from loaderbench.report.cases import extra_float, families, label

INSTALL_HINT = "plots not drawn: matplotlib is not installed; get them with `pip install loaderbench[plot]`"
_COLORS = {"in-process": "#444444", "fork": "#1f77b4", "spawn": "#d62728", "forkserver": "#2ca02c"}


@dataclass(frozen=True, slots=True)
class Plots:
    """The files drawn, and one note per plot that was not drawn (with the reason)."""

    files: tuple[Path, ...]
    notes: tuple[str, ...]


def available() -> bool:
    # matplotlib is an optional dependency (the plot extra), so it is imported only here and where a plot is drawn
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _measured(ms: Iterable[Measurement]) -> list[Measurement]:
    return [m for m in ms if not math.isnan(m.samples_per_s)]


def _series(m: Measurement) -> str:
    """A workload's name (or a user's test function: :func:`~loaderbench.report.cases.families`), with the device
    and consumer where they are not the plain CPU loop."""
    if m.device == "cpu" and not m.consumer:
        return m.family
    return f"{m.family} ({m.device}{', ' + m.consumer if m.consumer else ''})"


def _by_workload(ms: Iterable[Measurement]) -> dict[str, list[Measurement]]:
    out: dict[str, list[Measurement]] = {}
    for m in ms:
        out.setdefault(_series(m), []).append(m)
    return out


def _figure(panels: int, *, width: float = 5.0, height: float = 3.6) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure  # optional dependency (the plot extra): imported only to draw

    cols = min(3, panels)
    rows = math.ceil(panels / cols)
    fig = Figure(figsize=(max(8.0, width * cols), height * rows), layout="constrained", dpi=100)
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[panels:]:
        ax.set_visible(False)
    return fig, axes[:panels]


def _integer_x(ax: Any) -> None:
    """num_workers axes: integer ticks only."""
    from matplotlib.ticker import MaxNLocator  # optional dependency (the plot extra): imported only to draw

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, format="png")
    return path


def _method(m: Measurement) -> str:
    """How the case loads: its start method, "in-process" or "threads"; other pipelines than the DataLoader
    are named (their workers are not the DataLoader's)."""
    method = m.config.start_method or ("in-process" if m.config.num_workers == 0 else "threads")
    return method if m.config.pipeline == "dataloader" else f"{m.config.pipeline} {method}"


def _quartiles(m: Measurement) -> tuple[float, float]:
    q1, q3 = stats.quartiles(m.rounds.get("samples_per_s", ()))
    return m.samples_per_s - q1, q3 - m.samples_per_s


# --- the plots --------------------------------------------------------------------------------------


def throughput_vs_workers(ms: Sequence[Measurement], path: Path) -> Path | str:
    workloads = {w: g for w, g in _by_workload(_measured(ms)).items() if len({m.config.num_workers for m in g}) >= 2}
    if not workloads:
        return "throughput vs num_workers not drawn: no workload was measured at two or more worker counts"
    fig, axes = _figure(len(workloads))
    for ax, (name, group) in zip(axes, workloads.items(), strict=True):
        zero = [m for m in group if m.config.num_workers == 0]
        for method in sorted({_method(m) for m in group if m.config.num_workers > 0}):
            series = zero + [m for m in group if _method(m) == method]
            best: dict[int, Measurement] = {}
            for m in series:
                n = m.config.num_workers
                if n not in best or m.samples_per_s > best[n].samples_per_s:
                    best[n] = m
            xs = sorted(best)
            ys = [best[n].samples_per_s for n in xs]
            err = list(zip(*(_quartiles(best[n]) for n in xs), strict=True))
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, color=_COLORS.get(method), label=f"{method} workers")
        ax.scatter(
            [m.config.num_workers for m in group],
            [m.samples_per_s for m in group],
            s=12,
            color="#bbbbbb",
            zorder=0,
            label="every config measured",
        )
        ideal = sorted({(m.config.num_workers, m.ideal_samples_per_s) for m in group if m.ideal_samples_per_s})
        if len(ideal) >= 2:
            ax.plot([x for x, _ in ideal], [y for _, y in ideal], "k--", linewidth=1, label="cost model's ideal")
        _integer_x(ax)
        ax.set_title(name)
        ax.set_xlabel("num_workers")
        ax.set_ylabel("samples/s (median, IQR bars)")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize="small")
    fig.suptitle("Steady-state throughput vs num_workers, by start method (best config per point)")
    return _save(fig, path)


def prefetch_heatmap(ms: Sequence[Measurement], path: Path) -> Path | str:
    grids: dict[str, dict[tuple[int, int], float]] = {}
    for name, group in _by_workload(_measured(ms)).items():
        cells: dict[tuple[int, int], float] = {}
        for m in group:
            pf = m.config.effective_prefetch_factor
            if pf is None:
                continue
            key = (pf, m.config.num_workers)
            cells[key] = max(cells.get(key, 0.0), m.samples_per_s)
        if len({k[0] for k in cells}) >= 2 and len({k[1] for k in cells}) >= 2:
            grids[name] = cells
    if not grids:
        return (
            "prefetch_factor x num_workers heatmap not drawn: no workload was measured at two or more "
            "prefetch factors and two or more worker counts"
        )
    import matplotlib  # optional dependency (the plot extra): imported only to draw

    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#eeeeee")
    fig, axes = _figure(len(grids), width=5.5, height=4.2)
    for ax, (name, cells) in zip(axes, grids.items(), strict=True):
        pfs = sorted({k[0] for k in cells})
        nws = sorted({k[1] for k in cells})
        grid = [[cells.get((pf, nw), math.nan) for nw in nws] for pf in pfs]
        image = ax.imshow(grid, origin="lower", aspect="auto", cmap=cmap)
        finite = [v for row in grid for v in row if not math.isnan(v)]
        middle = statistics.median(finite)
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                text = "not\nmeasured" if math.isnan(v) else f"{v:,.0f}"
                colour = "#777777" if math.isnan(v) else ("white" if v < middle else "black")
                ax.text(j, i, text, ha="center", va="center", fontsize="small", color=colour)
        ax.set_xticks(range(len(nws)), [str(n) for n in nws])
        ax.set_yticks(range(len(pfs)), [str(p) for p in pfs])
        ax.set_xlabel("num_workers")
        ax.set_ylabel("prefetch_factor (batches per worker)")
        ax.set_title(name)
        fig.colorbar(image, ax=ax, label="samples/s (best config per cell)")
    fig.suptitle("Throughput over prefetch_factor x num_workers")
    return _save(fig, path)


def startup_and_stall(ms: Sequence[Measurement], path: Path) -> Path | str:
    workers = [m for m in _measured(ms) if m.config.num_workers > 0]
    if not workers:
        return "TTFB and epoch stall plot not drawn: no case with workers was measured"
    methods = [x for x in ("fork", "forkserver", "spawn") if any(_method(m) == x for m in workers)]
    fig, axes = _figure(2, width=6.0)
    for ax, phase, title in (
        (axes[0], "ttfb_s", "Time to first batch"),
        (axes[1], "epoch_stall_s", "Next-epoch stall (iter() to first batch)"),
    ):
        drawn: list[float] = []
        for k, persistent in enumerate((False, True)):
            xs, ys, ns = [], [], []
            for i, method in enumerate(methods):
                values = [
                    m.phases[phase]
                    for m in workers
                    if _method(m) == method and m.config.persistent_workers == persistent and phase in m.phases
                ]
                if values:
                    xs.append(i + (k - 0.5) * 0.38)
                    ys.append(statistics.median(values) * 1e3)
                    ns.append(len(values))
            if not ys:
                continue  # no case with this setting: no empty bar set in the legend
            drawn += [y for y in ys if y > 0]
            bars = ax.bar(
                xs,
                ys,
                width=0.36,
                label=f"persistent_workers={persistent}",
                color="#ff7f0e" if persistent else "#1f77b4",
            )
            ax.bar_label(bars, labels=[f"{y:.0f} ms\n(n={n})" for y, n in zip(ys, ns, strict=True)], fontsize="x-small")
        ax.set_xticks(range(len(methods)), methods)
        if drawn:
            ax.set_yscale("log")
            ax.set_ylim(min(drawn) / 2, max(drawn) * 4)  # room for the labels
        else:
            ax.text(0.5, 0.5, "not measured in this run", transform=ax.transAxes, ha="center", color="#777777")
        ax.set_xlabel("start method (multiprocessing_context)")
        ax.set_ylabel("milliseconds (median over cases, log scale)")
        ax.set_title(title)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    fig.suptitle("Worker start-up cost by start method and persistent_workers")
    return _save(fig, path)


def memory_vs_workers(ms: Sequence[Measurement], path: Path) -> Path | str:
    series: dict[str, dict[int, list[float]]] = {}
    for m in _measured(ms):
        if m.peak_memory_bytes:
            series.setdefault(_series(m), {}).setdefault(m.config.num_workers, []).append(m.peak_memory_bytes / 1e6)
    series = {w: s for w, s in series.items() if len(s) >= 2}
    if not series:
        return "memory vs num_workers not drawn: no workload has peak memory at two or more worker counts"
    kinds = sorted({m.memory_kind.upper() for m in ms if m.memory_kind})
    fig, axes = _figure(1, width=7.0, height=4.5)
    ax = axes[0]
    for name, points in series.items():
        xs = sorted(points)
        ax.plot(xs, [statistics.median(points[x]) for x in xs], marker="o", label=name)
    _integer_x(ax)
    ax.set_title("Peak memory of the main process and all workers")
    ax.set_xlabel("num_workers")
    ax.set_ylabel(f"MB (10^6 bytes, {'/'.join(kinds) or 'resident'}; median over configs)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize="small")
    return _save(fig, path)


def _cuda(ms: Iterable[Measurement], key: str) -> list[Measurement]:
    return [m for m in ms if extra_float(m, key) is not None]


def cuda_feed_rate(ms: Sequence[Measurement], path: Path) -> Path | str:
    cases = _cuda(ms, "feed_samples_per_s")
    if not cases:
        return "CUDA feed-rate plot not drawn: no CUDA case ran"
    fig, axes = _figure(1, width=8.0, height=4.5)
    ax = axes[0]
    lines: dict[str, list[Measurement]] = {}
    for m in cases:
        lines.setdefault(f"{m.family} {m.consumer}", []).append(m)
    for name, group in lines.items():
        best: dict[int, float] = {}
        for m in group:
            v = extra_float(m, "feed_samples_per_s") or 0.0
            best[m.config.num_workers] = max(best.get(m.config.num_workers, 0.0), v)
        xs = sorted(best)
        ax.plot(xs, [best[x] for x in xs], marker="o", label=name)
    _integer_x(ax)
    ax.set_title("GPU feed rate: samples made ready on the GPU")
    ax.set_xlabel("num_workers")
    ax.set_ylabel("samples/s on the GPU (best config per point)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize="small")
    return _save(fig, path)


def cuda_au_vs_step(ms: Sequence[Measurement], path: Path) -> Path | str:
    """AU against the simulated step time; against num_workers when the run used a single step time."""
    cases = [m for m in _cuda(ms, "accelerator_utilization") if isinstance(m.extra.get("cuda_step_ms"), (int, float))]
    if not cases:
        return "AU vs step time plot not drawn: no CUDA case with simulated compute (step_ms > 0) ran"
    steps = sorted({float(m.extra["cuda_step_ms"]) for m in cases})
    by_step = len(steps) >= 2
    fig, axes = _figure(1, width=8.0, height=4.5)
    ax = axes[0]
    lines: dict[str, dict[float, float]] = {}
    for m in cases:
        au = extra_float(m, "accelerator_utilization") or 0.0
        pipeline = m.extra.get("cuda_pipeline", "")
        step = float(m.extra["cuda_step_ms"])
        if by_step:
            key, x = f"{m.family} {m.config.id} {pipeline}", step
        else:
            key, x = f"{m.family} {pipeline}", float(m.config.num_workers)
        points = lines.setdefault(key, {})
        points[x] = max(points.get(x, 0.0), au)
    for name, points in lines.items():
        xs = sorted(points)
        ax.plot(xs, [points[x] * 100 for x in xs], marker="o", label=name)
    if by_step:
        ax.set_title("Accelerator utilisation vs simulated step time")
        ax.set_xlabel("simulated compute per step (ms)")
    else:
        ax.set_title(f"Accelerator utilisation vs num_workers (simulated step {steps[0]:g} ms)")
        ax.set_xlabel("num_workers")
        _integer_x(ax)
    ax.set_ylabel("accelerator utilisation (%, best config per point)")
    ax.set_ylim(0, 105)
    ax.legend(fontsize="small")
    return _save(fig, path)


def cuda_h2d_vs_limit(ms: Sequence[Measurement], path: Path) -> Path | str:
    cases = _cuda(ms, "h2d_bytes_per_s")
    if not cases:
        return "H2D vs limit plot not drawn: no CUDA case recorded host-to-device bandwidth"
    cases = cases[:30]
    fig, axes = _figure(1, width=9.0, height=max(3.0, 0.35 * len(cases) + 1.5))
    ax = axes[0]
    names = [f"{m.family} {label(m)}" for m in cases]
    h2d = [(extra_float(m, "h2d_bytes_per_s") or 0.0) / 1e9 for m in cases]
    ax.barh(range(len(cases)), h2d, color="#1f77b4", label="pipeline H2D (sustained)")
    limits = [(i, (extra_float(m, "h2d_limit_bytes_per_s") or math.nan) / 1e9) for i, m in enumerate(cases)]
    limits = [(i, v) for i, v in limits if not math.isnan(v)]
    if limits:
        ax.scatter(
            [v for _, v in limits],
            [i for i, _ in limits],
            marker="|",
            s=300,
            color="black",
            label="pinned copy limit (measured)",
        )
    ax.set_yticks(range(len(cases)), names, fontsize="x-small")
    ax.set_xlabel("GB/s (10^9 bytes per second)")
    ax.set_title("Host-to-device bandwidth vs the measured pinned-copy limit")
    ax.legend(fontsize="small")
    return _save(fig, path)


PLOTS: tuple[tuple[str, Callable[[Sequence[Measurement], Path], Path | str]], ...] = (
    ("throughput_vs_workers.png", throughput_vs_workers),
    ("prefetch_heatmap.png", prefetch_heatmap),
    ("startup_and_stall.png", startup_and_stall),
    ("memory_vs_workers.png", memory_vs_workers),
    ("cuda_feed_rate.png", cuda_feed_rate),
    ("cuda_au_vs_step.png", cuda_au_vs_step),
    ("cuda_h2d_vs_limit.png", cuda_h2d_vs_limit),
)


def write_plots(measurements: Sequence[Measurement], directory: str | Path) -> Plots:
    """Draw every plot the data allows into ``directory``; notes say why the others were not drawn."""
    if not available():
        return Plots((), (INSTALL_HINT,))
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    notes: list[str] = []
    measurements = families(measurements)  # a user's test function groups its configs, as a workload does
    cuda_ran = any(extra_float(m, "feed_samples_per_s") is not None for m in measurements)
    for name, draw in PLOTS:
        if name.startswith("cuda_") and not cuda_ran:
            continue  # CUDA plots only when CUDA cases ran
        try:
            result = draw(measurements, out / name)
        except Exception as exc:  # a plot must never cost the measurements: say why and go on
            result = f"{name} not drawn: matplotlib failed ({type(exc).__name__}: {exc})"
        if isinstance(result, Path):
            files.append(result)
        else:
            notes.append(result)
    return Plots(tuple(files), tuple(notes))
