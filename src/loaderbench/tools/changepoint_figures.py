"""The change-point detector's published figures: ``python -m loaderbench.tools.changepoint_figures``.

Three tables, printed as Markdown (what ``docs/history.md`` shows):

1. **Data no one here wrote**: the 17 patterns of ``otava-test-data`` (a test-only dependency) with their
   ground truth, as the package's own visualizer defines them (its registry of generators and default
   parameters, read from ``otava_test_data/web/main.py`` without importing its web server), at lengths 50,
   200 and 500 and ``--seeds`` seeds each.  Precision, recall and F1 per pattern family; a detection counts
   when it lies within ``--tolerance`` points (default 5, the package's) of a true change point not matched
   yet; single outliers are not change points (the package's scoring excludes them too).
2. **Synthetic steps at the smoke workloads' noise**: each workload's between-process noise of samples/s
   from the noise priors (``loaderbench/data/noise.toml``), as
   multiplicative log-normal noise on nightly series of 60 runs with a step of -2, -5 or -10% after run 30;
   the share of series where a change point is found within 2 runs of the step, and the false change
   points per 100 runs of flat series of 100 runs.
3. **Incremental detection**: histories of 1,000 runs x 50 cases (a level change every 100 runs, or flat), one
   run appended to every case, re-scanned with :func:`~loaderbench.history.changepoints.update` against a
   full :func:`detect`; and how often ``update`` equals ``detect`` on ``--random`` random series.

Everything is seeded, so the figures repeat exactly (the timings excepted).
"""

from __future__ import annotations

import argparse
import ast
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loaderbench.data import NOISE
from loaderbench.gate.priors import load_priors
from loaderbench.history.changepoints import ALPHA, MIN_SIZE, WINDOW, detect, update
from loaderbench.report.table import Column, markdown_table
from loaderbench.store import fingerprint

#: The pattern families of otava-test-data's 17 patterns (every pattern in exactly one).
FAMILIES: dict[str, tuple[str, ...]] = {
    "steps": ("step_function", "step_function_clean", "multiple_changes", "multiple_changes_clean"),
    "regression and fix": ("regression_fix", "regression_fix_clean"),
    "no change: noise": ("constant", "noise_normal", "noise_uniform", "banding", "banding_clean"),
    "no change: outliers": ("outlier", "outlier_clean", "multiple_outliers"),
    "variance change (mean constant)": ("variance_change", "multiple_variance_changes"),
    "phase change (mean constant)": ("phase_change",),
}
LENGTHS = (50, 200, 500)
#: Nightly updates timed by the incremental benchmark.
REPEATS = 5
STEPS = (0.02, 0.05, 0.10)


@dataclass(frozen=True, slots=True)
class Pattern:
    """One of otava-test-data's patterns: its name and a generator of ``(values, true change points)``."""

    name: str
    make: Callable[[int, int], tuple[np.ndarray, list[int]]]


def otava_patterns() -> dict[str, Pattern]:
    """otava-test-data's 17 patterns, keyed by the visualizer's names, with its default parameters."""
    # a test-only dependency (the 'test' extra): imported where it is used
    import otava_test_data
    from otava_test_data.generators import advanced, basic

    source = Path(otava_test_data.__file__).parent / "web" / "main.py"
    tree = ast.parse(source.read_text(encoding="utf-8"))
    registry = next(
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "GENERATORS" for t in node.targets)
        and isinstance(node.value, ast.Dict)
    )
    out = {}
    for key, entry in zip(registry.keys, registry.values, strict=True):
        assert isinstance(key, ast.Constant) and isinstance(entry, ast.Dict)
        fields = {k.value: v for k, v in zip(entry.keys, entry.values, strict=True) if isinstance(k, ast.Constant)}
        func_node = fields["func"]
        assert isinstance(func_node, ast.Name)
        func = getattr(basic, func_node.id, None) or getattr(advanced, func_node.id)
        params = {name: spec["default"] for name, spec in ast.literal_eval(fields["params"]).items()}
        out[str(key.value)] = Pattern(str(key.value), _maker(func, params))
    return out


def _maker(func: Callable[..., Any], params: dict[str, Any]) -> Callable[[int, int], tuple[np.ndarray, list[int]]]:
    def make(length: int, seed: int) -> tuple[np.ndarray, list[int]]:
        series = func(length=length, seed=seed, **params)
        truth = sorted(int(cp.index) for cp in series.change_points if cp.change_type != "outlier")
        return np.asarray(series.data, dtype=np.float64), truth

    return make


def match(found: Sequence[int], truth: Sequence[int], tolerance: int) -> int:
    """True positives: detections within ``tolerance`` of a true change point, each truth matched once
    (nearest first)."""
    pairs = sorted(
        (abs(f - t), i, j) for i, f in enumerate(found) for j, t in enumerate(truth) if abs(f - t) <= tolerance
    )
    used_f: set[int] = set()
    used_t: set[int] = set()
    for _, i, j in pairs:
        if i not in used_f and j not in used_t:
            used_f.add(i)
            used_t.add(j)
    return len(used_f)


@dataclass(frozen=True, slots=True)
class Score:
    series: int
    truth: int
    found: int
    hits: int
    points: int = 0

    @property
    def precision(self) -> float:
        return self.hits / self.found if self.found else float("nan")

    @property
    def recall(self) -> float:
        return self.hits / self.truth if self.truth else float("nan")

    @property
    def f1(self) -> float:
        if not self.truth:
            return float("nan")
        return 2 * self.hits / (self.found + self.truth)


def score_family(
    patterns: dict[str, Pattern], names: Sequence[str], lengths: Sequence[int], seeds: int, tolerance: int
) -> Score:
    series = truth_n = found_n = hits = points = 0
    for name in names:
        for length in lengths:
            for seed in range(seeds):
                values, truth = patterns[name].make(length, seed)
                found = [cp.index for cp in detect(values)]
                series += 1
                points += values.size
                truth_n += len(truth)
                found_n += len(found)
                hits += match(found, truth, tolerance)
    return Score(series, truth_n, found_n, hits, points)


def _ratio(value: float) -> str:
    return "-" if value != value else f"{value:.2f}"


def otava_table(seeds: int, tolerance: int) -> list[str]:
    patterns = otava_patterns()
    rows = []
    for family, names in FAMILIES.items():
        s = score_family(patterns, names, LENGTHS, seeds, tolerance)
        rows.append([family, ", ".join(names), str(s.series), str(s.truth), str(s.found), str(s.hits)])
        false = 100 * (s.found - s.hits) / s.points
        rows[-1] += [_ratio(s.precision), _ratio(s.recall), _ratio(s.f1), f"{false:.2f}"]
    columns = [Column("family"), Column("patterns"), Column("series", "r"), Column("true", "r"), Column("found", "r")]
    columns += [Column("matched", "r"), Column("precision", "r"), Column("recall", "r"), Column("F1", "r")]
    columns += [Column("false per 100 points", "r")]
    return markdown_table(columns, rows)


def step_series(rng: np.random.Generator, sigma: float, step: float, before: int, after: int) -> np.ndarray:
    """Nightly samples/s: log-normal noise of ``sigma`` around 1, scaled by ``1 + step`` after ``before``."""
    level: np.ndarray = np.concatenate((np.ones(before), np.full(after, 1.0 + step)))
    return level * np.exp(rng.normal(0.0, sigma, before + after))


def found_step(values: np.ndarray, at: int, tolerance: int = 2) -> tuple[bool, bool]:
    """Whether a drop is found within ``tolerance`` runs of ``at``, and anywhere."""
    drops = [cp.index for cp in detect(values) if cp.change < 0]
    return any(abs(i - at) <= tolerance for i in drops), bool(drops)


def runs_to_find(sigma: float, step: float, reps: int, *, before: int = 30, most: int = 30) -> str:
    """Median runs after a step until the nightly re-scan (:func:`update`, one run at a time) first finds it
    within 2 runs of where it is; ``> most`` when more than half the series never show it."""
    waits = []
    for rep in range(reps):
        values = step_series(np.random.default_rng(20_000 + rep), sigma, step, before, most)
        result = detect(values[: before + 1])
        wait = most + 1
        for k in range(2, most + 1):
            result = update(result, values[: before + k], previous_length=before + k - 1)
            if any(abs(cp.index - before) <= 2 and cp.change < 0 for cp in result):
                wait = k
                break
        waits.append(wait)
    median = statistics.median(waits)
    return f"> {most}" if median > most else f"{median:g}"


def synthetic_table(reps: int) -> list[str]:
    priors = load_priors(NOISE)
    offset = priors.offset("samples_per_s")
    rows = []
    for workload in sorted(priors.workloads):
        sigma = priors.get(workload, "samples_per_s").sigma
        for label, total in (("process", sigma), ("+ offset", float(np.hypot(sigma, offset.sigma if offset else 0)))):
            cells = [workload, label, f"{100 * total:.1f}%"]
            for step in STEPS:
                hits = [
                    found_step(step_series(np.random.default_rng(r), total, -step, 30, 30), 30) for r in range(reps)
                ]
                cells.append(
                    f"{100 * sum(h[0] for h in hits) / reps:.0f}% ({100 * sum(h[1] for h in hits) / reps:.0f}%)"
                )
            cells += [runs_to_find(total, -step, max(20, reps // 4)) for step in STEPS[1:]]
            false = sum(
                len(detect(step_series(np.random.default_rng(10_000 + r), total, 0.0, 100, 0))) for r in range(reps)
            )
            cells.append(f"{100 * false / (reps * 100):.2f}")
            rows.append(cells)
    columns = [Column("workload"), Column("noise"), Column("sd", "r")]
    columns += [Column(f"-{100 * s:.0f}% found", "r") for s in STEPS]
    columns += [Column(f"-{100 * s:.0f}%: runs to find", "r") for s in STEPS[1:]]
    columns += [Column("false per 100 runs", "r")]
    return markdown_table(columns, rows)


def _incremental_rows(label: str, series: list[np.ndarray], runs: int, repeats: int) -> list[list[str]]:
    start = time.perf_counter()
    results = [detect(s[:runs]) for s in series]
    full_s = time.perf_counter() - start
    times, equal = [], 0
    for k in range(1, repeats + 1):
        start = time.perf_counter()
        results = [update(r, s[: runs + k], previous_length=runs + k - 1) for r, s in zip(results, series, strict=True)]
        times.append(time.perf_counter() - start)
        equal += sum(r == detect(s[: runs + k]) for r, s in zip(results, series, strict=True))
    return [
        [label, "full detect, every case", f"{full_s:.3f} s", ""],
        [
            label,
            "one run appended, update, every case",
            f"{statistics.median(times):.3f} s",
            f"{equal} of {repeats * len(series)}",
        ],
    ]


def incremental_table(runs: int, cases: int, repeats: int) -> list[str]:
    """A history of ``runs`` x ``cases``: a full scan, then ``repeats`` nightly updates (median time)."""
    rng = np.random.default_rng(7)
    steps, flat = [], []
    for _ in range(cases):
        levels = np.repeat(rng.normal(1.0, 0.05, 10), runs // 10 + 1)[: runs + repeats]
        steps.append(levels * np.exp(rng.normal(0.0, 0.015, levels.size)))
        flat.append(np.exp(rng.normal(0.0, 0.015, runs + repeats)))
    rows = _incremental_rows(f"{runs} runs x {cases} cases, a step every {runs // 10} runs", steps, runs, repeats)
    rows += _incremental_rows(f"{runs} runs x {cases} cases, flat", flat, runs, repeats)
    columns = [Column("history"), Column("scan"), Column("time", "r"), Column("same as full", "r")]
    return markdown_table(columns, rows)


def random_equivalence(count: int) -> tuple[int, int]:
    """On ``count`` random series (20-400 runs, 1-39 appended, 0.3-10% noise, a level change every 3-80 runs,
    NaN values in a tenth): in how many ``update`` equals ``detect``."""
    rng = np.random.default_rng(123)
    same = 0
    for _ in range(count):
        n, k = int(rng.integers(20, 400)), int(rng.integers(1, 40))
        levels = np.repeat(rng.normal(1.0, 0.05, 20), rng.integers(3, 80, 20))
        levels = np.r_[levels, np.full(max(0, n - levels.size), levels[-1])][:n]
        values = levels * np.exp(rng.normal(0.0, rng.choice([0.003, 0.01, 0.02, 0.05, 0.1]), n))
        if rng.random() < 0.1:
            values[rng.integers(0, n, 5)] = np.nan
        cut = max(0, n - k)
        same += update(detect(values[:cut]), values, previous_length=cut) == detect(values)
    return same, count


def machine_line() -> str:
    hw = fingerprint.current()
    return f"{hw.cpu_model}, {hw.affinity_cpus} CPUs ({hw.machine})"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loaderbench.tools.changepoint_figures", description=__doc__)
    parser.add_argument("--seeds", type=int, default=10, help="seeds per otava-test-data pattern and length")
    parser.add_argument("--tolerance", type=int, default=5, help="points between a detection and the truth")
    parser.add_argument("--reps", type=int, default=200, help="series per synthetic cell")
    parser.add_argument("--runs", type=int, default=1000, help="runs per case of the incremental benchmark")
    parser.add_argument("--cases", type=int, default=50, help="cases of the incremental benchmark")
    parser.add_argument("--random", type=int, default=1500, help="random series of the update == detect check")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    print(
        f"detector: alpha={ALPHA}, min_size={MIN_SIZE}, window={WINDOW}; machine: {machine_line()}; load {load:.2f}\n"
    )
    print(
        f"## otava-test-data (lengths {', '.join(map(str, LENGTHS))}; {args.seeds} seeds; tolerance {args.tolerance})\n"
    )
    print("\n".join(otava_table(args.seeds, args.tolerance)) + "\n")
    print(f"## Synthetic steps at the smoke workloads' samples/s noise ({args.reps} series per cell)\n")
    print("\n".join(synthetic_table(args.reps)) + "\n")
    print(f"## Incremental detection (median of {REPEATS} nightly updates)\n")
    print("\n".join(incremental_table(args.runs, args.cases, repeats=REPEATS)))
    same, count = random_equivalence(args.random)
    print(f"\nupdate == detect on {same} of {count} random series")
    print(f"\n1-minute load average at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
