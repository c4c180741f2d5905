"""``loaderbench tune``: find the fastest DataLoader settings for the user's own dataset, adaptively.

The search never brute-forces the factorial.  It measures, in order, while the
time budget lasts:

1. the DataLoader defaults (``num_workers=0``), always;
2. the two common heuristics, ``num_workers = os.cpu_count()`` and the
   Lightning-style ``affinity CPUs - 1`` (the answer compares against them);
3. a worker-count ladder 1, 2, 4, 8... up to ``max_workers``, stopping early
   once two rungs in a row fail to beat the fewer-worker rungs by ``tie`` (the
   region above is dominated), then the midpoints around the knee;
4. at the best worker count: ``prefetch_factor`` 4 (then 8 if 4 won),
   ``pin_memory`` (CUDA only), ``in_order=False``, and ``persistent_workers``
   (measured with a second epoch, for the stall it removes);
5. confirmation: while a contender is neither statistically separated from the
   best (one-sided Mann-Whitney U on the pooled per-round samples, p <= alpha,
   and at least ``tie`` slower) nor practically tied with it (within ``tie``),
   both are measured again and their rounds pooled.

Among the best and the configs tied with it, the cheapest is recommended
(fewest workers, smallest prefetch, in order, unpinned).  The search itself is
pure logic over an injectable ``measure`` function and clock, so it is
unit-tested without starting a worker.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from loaderbench import stats
from loaderbench.config import TORCH_HAS_IN_ORDER, LoaderConfig
from loaderbench.engine.workloads import affinity_cpus, import_callable
from loaderbench.errors import CaseFailed, UsageError, WorkloadError
from loaderbench.measurement import Measurement
from loaderbench.report.advice import mann_whitney_greater


@dataclass(frozen=True, slots=True)
class TuneSpec:
    """What to tune and how long to spend on it."""

    factory: str
    collate: str | None = None
    batch_size: int = 32
    device: str = "cpu"
    step_ms: float = 0.0
    budget_s: float = 60.0
    max_workers: int | None = None
    rounds: int = 5
    round_s: float = 0.1
    alpha: float = 0.05
    tie: float = 0.03

    def __post_init__(self) -> None:
        if not (isinstance(self.budget_s, (int, float)) and math.isfinite(self.budget_s) and self.budget_s > 0):
            raise UsageError(f"--budget={self.budget_s!r}: must be a positive number of seconds. Use e.g. --budget 60.")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size={self.batch_size!r}: must be at least 1. Use your training batch size.")
        if self.device not in ("cpu", "cuda"):
            raise UsageError(f"--device={self.device!r}: not a device. Use cpu or cuda.")
        if not (math.isfinite(self.step_ms) and self.step_ms >= 0):
            raise UsageError(f"--step-ms={self.step_ms!r}: must be >= 0 milliseconds. Use 0 for no consumer step.")
        if self.max_workers is not None and self.max_workers < 1:
            raise UsageError(f"--max-workers={self.max_workers!r}: must be at least 1.")

    @property
    def objective(self) -> str:
        """The per-round metric maximised: the GPU feed rate on CUDA, samples/s on CPU."""
        return "feed_samples_per_s" if self.device == "cuda" else "samples_per_s"

    @property
    def worker_cap(self) -> int:
        return self.max_workers or max(8, 2 * affinity_cpus())


def heuristics() -> dict[str, int]:
    """The common rules of thumb for num_workers on this machine."""
    return {
        "num_workers = CPU count (os.cpu_count())": os.cpu_count() or 1,
        "Lightning-style: affinity CPUs - 1": max(1, affinity_cpus() - 1),
    }


def load_callable(path: str, *, option: str) -> Callable[..., Any]:
    """Import ``module:function`` for ``option`` (e.g. ``--collate``) with a clear error."""
    try:
        return import_callable(path, argument=option, returns="a batch", form="module:function")
    except WorkloadError as exc:
        raise UsageError(str(exc)) from None


# --- the search ------------------------------------------------------------------------------------


@dataclass(slots=True)
class Trial:
    """One config and every measurement of it (their rounds pooled)."""

    config: LoaderConfig
    measurements: list[Measurement] = field(default_factory=list)
    objective: str = "samples_per_s"

    @property
    def samples(self) -> tuple[float, ...]:
        out: list[float] = []
        for m in self.measurements:
            out.extend(m.rounds.get(self.objective) or m.rounds.get("samples_per_s", ()))
        return tuple(out)

    @property
    def median(self) -> float:
        return stats.median(self.samples)

    @property
    def relative_iqr(self) -> float:
        return stats.relative_iqr(self.samples)

    def phase(self, name: str) -> float | None:
        values = [m.phases[name] for m in self.measurements if name in m.phases]
        return stats.median(values) if values else None

    @property
    def peak_memory_bytes(self) -> int | None:
        values = [m.peak_memory_bytes for m in self.measurements if m.peak_memory_bytes is not None]
        return max(values) if values else None


def cost(config: LoaderConfig) -> tuple[int, int, bool, bool, bool]:
    """Cheaper first: fewer workers, smaller prefetch, in order, unpinned, non-persistent."""
    return (
        config.num_workers,
        config.effective_prefetch_factor or 0,
        not config.in_order,
        config.pin_memory,
        config.persistent_workers,
    )


@dataclass(frozen=True, slots=True)
class Progress:
    """What the progress line shows after each measurement."""

    elapsed_s: float
    budget_s: float
    phase: str
    tried: int
    last: str
    last_rate: float
    best: str
    best_rate: float
    defaults_rate: float


MeasureFn = Callable[[LoaderConfig, bool], Measurement]


class Search:
    """The adaptive search over an injectable ``measure(config, next_epoch)`` and ``clock``."""

    def __init__(
        self,
        spec: TuneSpec,
        measure: MeasureFn,
        *,
        base: LoaderConfig,
        clock: Callable[[], float] = time.monotonic,
        progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self.spec, self._measure, self.base, self._clock = spec, measure, base, clock
        self._progress = progress
        self.trials: dict[LoaderConfig, Trial] = {}
        self.failures: dict[LoaderConfig, str] = {}
        self.stop_reason = ""
        self.phase = "defaults"
        self._start = clock()
        self._durations: list[float] = []
        self._out_of_budget = False
        self._reserve_reached = False

    # --- bookkeeping -------------------------------------------------------------------------------
    @property
    def elapsed_s(self) -> float:
        return self._clock() - self._start

    @property
    def stopped(self) -> bool:
        """The budget (less the reserve for the persistent_workers phase) is spent."""
        return self._out_of_budget or self._reserve_reached

    def _affordable(self) -> bool:
        estimate = stats.median(self._durations) if self._durations else 0.0
        late = self.phase == "persistent_workers"
        # the search keeps three measurements' worth (two of them with a second epoch) for the last phase
        reserve = 0.0 if late or not self.trials or self.top().config.num_workers == 0 else 3 * estimate
        if self.elapsed_s + estimate + reserve <= self.spec.budget_s:
            return True
        if reserve:
            self._reserve_reached = True
        else:
            self._out_of_budget = True
        return False

    def run(self, config: LoaderConfig, *, next_epoch: bool = False, force: bool = False) -> Trial | None:
        """Measure ``config`` (again) if the budget allows; failures are recorded, not raised."""
        if config in self.failures or (not force and not self._affordable()):
            return None
        t0 = self._clock()
        try:
            m = self._measure(config, next_epoch)
        except CaseFailed as exc:
            if config == self.base:
                raise
            self.failures[config] = str(exc)
            return None
        finally:
            self._durations.append(self._clock() - t0)
        trial = self.trials.setdefault(config, Trial(config, objective=self.spec.objective))
        trial.measurements.append(m)
        self._report(trial)
        return trial

    def _report(self, last: Trial) -> None:
        if self._progress is None:
            return
        best = self.top()
        defaults = self.trials.get(self.base)
        self._progress(
            Progress(
                elapsed_s=self.elapsed_s,
                budget_s=self.spec.budget_s,
                phase=self.phase,
                tried=len(self.trials),
                last=last.config.id,
                last_rate=last.median,
                best=best.config.id,
                best_rate=best.median,
                defaults_rate=defaults.median if defaults else math.nan,
            )
        )

    def top(self) -> Trial:
        """The trial with the highest median objective."""
        return max(self.trials.values(), key=lambda t: -math.inf if math.isnan(t.median) else t.median)

    def _rate(self, config: LoaderConfig) -> float:
        trial = self.trials.get(config)
        return trial.median if trial else math.nan

    def _better(self, a: float, b: float) -> bool:
        return not math.isnan(a) and (math.isnan(b) or a > b * (1 + self.spec.tie))

    # --- statistics --------------------------------------------------------------------------------
    def separated(self, best: Trial, other: Trial) -> bool:
        """``best`` is faster than ``other`` by at least ``tie`` and the rounds say so (p <= alpha)."""
        if not self._better(best.median, other.median):
            return False
        return mann_whitney_greater(best.samples, other.samples) <= self.spec.alpha

    def tied(self, best: Trial, other: Trial) -> bool:
        return not self._better(best.median, other.median)

    def recommended(self) -> Trial:
        """The cheapest trial that the fastest one is not statistically separated from: a worker, a
        deeper prefetch queue or ``in_order=False`` must earn its place with evidence."""
        best = self.top()
        eligible = [
            t for t in self.trials.values() if t is best or (not math.isnan(t.median) and not self.separated(best, t))
        ]
        return min(eligible, key=lambda t: (cost(t.config), -t.median))

    # --- phases ------------------------------------------------------------------------------------
    def _workers(self, n: int) -> LoaderConfig:
        cfg = self.base.replace(num_workers=n)
        if self.spec.device == "cuda" and n > 0:
            cfg = cfg.replace(multiprocessing_context="spawn")  # no fork from a CUDA parent (pytorch#68383)
        return cfg

    def ladder(self) -> None:
        """1, 2, 4, 8... workers, each compared with the best of the fewer worker counts measured; two rungs in
        a row without a gain of ``tie`` end the climb (what lies above them is dominated)."""
        self.phase = "workers"
        misses = 0
        n = 1
        while n <= self.spec.worker_cap:
            fewer = [t.median for t in self.trials.values() if self._plain(t.config) and t.config.num_workers < n]
            best_before = max(fewer, default=math.nan)
            config = self._workers(n)
            trial = self.trials.get(config) or self.run(config)
            if trial is None and self.stopped:
                return
            if trial is None:
                pass  # a failed rung is no evidence either way (its reason is in self.failures)
            elif self._better(trial.median, best_before):
                misses = 0
            else:
                misses += 1
                if misses >= 2:
                    return
            n *= 2

    def refine(self, rounds: int = 2) -> None:
        """Midpoints around the knee: the fewest workers that the fastest worker count is not separated from."""
        self.phase = "refine"
        for _ in range(rounds):
            plain = {t.config.num_workers: t for t in self.trials.values() if self._plain(t.config)}
            measured = sorted(plain)
            top = max(plain.values(), key=lambda t: t.median)
            best = min(n for n, t in plain.items() if t is top or not self.separated(top, t))
            i = measured.index(best)
            around = [measured[j] for j in (i - 1, i + 1) if 0 <= j < len(measured)]
            mids = [(best + other) // 2 for other in around if abs(best - other) > 1]
            if not mids:
                return
            for mid in mids:
                if self.run(self._workers(mid)) is None and self.stopped:
                    return

    def _plain(self, config: LoaderConfig) -> bool:
        return config == self._workers(config.num_workers)

    def heuristic_points(self) -> None:
        self.phase = "heuristics"
        for n in sorted(set(heuristics().values())):
            if self._workers(n) not in self.trials:
                self.run(self._workers(n))

    def knobs(self) -> None:
        best = self.top().config
        if best.num_workers == 0:
            return
        self.phase = "prefetch"
        four = self.run(best.replace(prefetch_factor=4))
        if four is not None and self._better(four.median, self._rate(best)):
            self.run(best.replace(prefetch_factor=8))
        best = self.top().config
        if self.spec.device == "cuda":
            self.phase = "pin_memory"
            self.run(best.replace(pin_memory=not best.pin_memory))
            best = self.top().config
        if TORCH_HAS_IN_ORDER and best.in_order:
            self.phase = "in_order"
            self.run(best.replace(in_order=False))

    def persistence(self) -> None:
        """Measure the recommended config with a second epoch, with and without persistent workers."""
        best = self.recommended().config
        if best.num_workers == 0:
            return
        self.phase = "persistent_workers"
        plain = best.replace(persistent_workers=False)
        self.run(plain.replace(persistent_workers=True), next_epoch=True)  # the new information first
        if self.trials.get(plain) is None or self.trials[plain].phase("epoch_stall_s") is None:
            self.run(plain, next_epoch=True)

    def confirm(self) -> None:
        self.phase = "confirm"
        while True:
            best = self.top()
            unsure = [t for t in self.trials.values() if t is not best and not self.separated(best, t)]
            unsure = [t for t in unsure if not self.tied(best, t)]
            if not unsure:
                runner = self._runner_up(best)
                if runner is None:
                    self.stop_reason = "only one configuration could be measured"
                elif self.tied(best, runner):
                    self.stop_reason = (
                        f"the best is within {self.spec.tie:.0%} of {runner.config.id}; the cheaper of the tied "
                        "configurations is recommended"
                    )
                else:
                    p = mann_whitney_greater(best.samples, runner.samples)
                    self.stop_reason = (
                        f"the best is statistically separated from the runner-up {runner.config.id} "
                        f"({best.median / runner.median:.2f}x, Mann-Whitney p={p:.2g})"
                    )
                return
            challenger = max(unsure, key=lambda t: t.median)
            for trial in sorted((best, challenger), key=lambda t: len(t.samples)):
                if self.run(trial.config) is None:
                    self.stop_reason = (
                        f"budget of {self.spec.budget_s:g} s spent before the best ({best.config.id}) was "
                        f"separated from {challenger.config.id} (p="
                        f"{mann_whitney_greater(best.samples, challenger.samples):.2g}); raise --budget"
                    )
                    return

    def _runner_up(self, best: Trial) -> Trial | None:
        others = [t for t in self.trials.values() if t is not best and not math.isnan(t.median)]
        return max(others, key=lambda t: t.median) if others else None

    def search(self) -> Trial:
        """Run every phase the budget allows; return the recommended trial."""
        self.run(self.base, force=True)
        if self.base not in self.trials:  # pragma: no cover - run() raises when the defaults fail
            raise WorkloadError("the DataLoader defaults could not be measured")
        try:
            # the heuristics first: the speed-up over them is part of the answer, whatever the budget
            for phase in (self.heuristic_points, self.ladder, self.refine, self.knobs):
                phase()
                if self.stopped:
                    break
            if not self.stopped:
                self.confirm()
            if not self._out_of_budget:
                self.persistence()
        except KeyboardInterrupt:
            self.stop_reason = "interrupted; the recommendation uses what was measured so far"
        if self.stopped and not self.stop_reason:
            self.stop_reason = f"budget of {self.spec.budget_s:g} s spent (last phase: {self.phase}); raise --budget"
        return self.recommended()


def ordered(trials: Sequence[Trial]) -> list[Trial]:
    """Fastest first."""
    return sorted(trials, key=lambda t: (math.isnan(t.median), -t.median if not math.isnan(t.median) else 0))


# --- the user's dataset ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Probe:
    """The dataset measured in this process before the search: the evidence for the bottleneck."""

    length: int | None
    iterable: bool
    sample_wall_s: float
    sample_cpu_s: float
    collate_s: float
    bytes_per_sample: int

    @property
    def cpu_fraction(self) -> float:
        return self.sample_cpu_s / self.sample_wall_s if self.sample_wall_s > 0 else math.nan


def probe(dataset: Any, spec: TuneSpec, collate: Callable[[Any], Any] | None) -> Probe:
    """Fetch one batch's samples in this process (wall and CPU time per sample), then collate them.

    Raises :class:`WorkloadError` naming the fix when a sample cannot be fetched or the batch cannot be collated.
    """
    import torch
    from torch.utils.data import IterableDataset, default_collate

    from loaderbench.engine.batches import tensor_bytes

    iterable = isinstance(dataset, IterableDataset)
    length = None if iterable else len(dataset)
    if length == 0:
        raise WorkloadError(f"factory={spec.factory!r}: the dataset is empty (len 0). Return a dataset with samples.")
    n = spec.batch_size if length is None else min(spec.batch_size, length)
    samples: list[Any] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the harness measures: process_time then counts this thread's work
    try:
        wall0, cpu0 = time.perf_counter(), time.process_time()
        source = iter(dataset) if iterable else None
        for i in range(n):
            try:
                samples.append(next(source) if source is not None else dataset[i])
            except StopIteration:
                break
            except Exception as exc:
                raise WorkloadError(
                    f"factory={spec.factory!r}: fetching sample {i} raised {type(exc).__name__}: {exc}. "
                    "Fix the dataset's __getitem__/__iter__."
                ) from None
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        if not samples:
            raise WorkloadError(f"factory={spec.factory!r}: the dataset yielded no sample. Return a non-empty one.")
        fn = collate or default_collate
        t0 = time.perf_counter()
        try:
            batch = fn(samples)
        except Exception as exc:
            first = str(exc).splitlines()[0] if str(exc) else ""
            where = f"--collate={spec.collate!r}" if spec.collate else "torch's default_collate"
            raise WorkloadError(
                f"factory={spec.factory!r}: {len(samples)} samples cannot be collated into a batch by {where} "
                f"({type(exc).__name__}: {first}). Return tensors, numbers or dicts/tuples of them with equal shapes, "
                "or pass --collate module:function that builds your batch."
            ) from None
        collate_s = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
    return Probe(
        length=length,
        iterable=iterable,
        sample_wall_s=wall / len(samples),
        sample_cpu_s=cpu / len(samples),
        collate_s=collate_s,
        bytes_per_sample=tensor_bytes(batch) // len(samples),
    )


def check_picklable(dataset: Any, spec: TuneSpec) -> None:
    """spawn workers (CUDA tuning) receive the dataset pickled."""
    import pickle

    try:
        pickle.dumps(dataset)
    except Exception as exc:
        raise WorkloadError(
            f"factory={spec.factory!r}: the dataset cannot be pickled ({type(exc).__name__}: {exc}), and CUDA "
            "tuning starts workers with spawn, which pickles it. Keep only picklable state (no lambdas, open "
            "files or locks) or open them lazily in __getitem__."
        ) from None


class StepConsumer:
    """CPU consumer with a simulated training step: sleeps ``step_ms`` per batch (releasing the GIL,
    as a step waiting on an accelerator does), so the loader's work overlaps it."""

    def __init__(self, step_ms: float) -> None:
        self.step_s = step_ms / 1e3
        self.id = f"cpustep{step_ms:g}ms"

    def consume(self, batch: Any) -> None:
        time.sleep(self.step_s)

    def sync(self) -> None:
        return None

    def round_metrics(self, samples: int, seconds: float) -> dict[str, float]:
        return {}

    def finish(self) -> dict[str, Any]:
        return {"step_ms": self.step_s * 1e3}


# --- the bottleneck ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bottleneck:
    kind: str
    evidence: tuple[str, ...]


def _rate(value: float) -> str:
    from loaderbench.report.advice import fmt_rate

    return fmt_rate(value)


def classify(search: Search, pr: Probe, spec: TuneSpec) -> Bottleneck:
    """I/O-bound, CPU-bound, IPC/transfer-bound or consumer-bound, with the numbers that say so."""
    from loaderbench.report.terminal import extra_float, fmt_bytes

    best = search.recommended()
    cpus = affinity_cpus()
    plain = {t.config.num_workers: t for t in search.trials.values() if search._plain(t.config)}
    r0 = plain[0].median if 0 in plain else math.nan
    probe_line = (
        f"in this process a sample takes {pr.sample_wall_s * 1e3:.3g} ms, {pr.sample_cpu_s * 1e3:.3g} ms of it "
        f"on the CPU ({pr.cpu_fraction:.0%}); collating a batch takes {pr.collate_s * 1e3:.3g} ms; "
        f"{fmt_bytes(pr.bytes_per_sample)} per sample"
    )
    if spec.step_ms > 0:
        cap = spec.batch_size / (spec.step_ms / 1e3)
        au = None
        if best.measurements:
            au = extra_float(best.measurements[-1], "accelerator_utilization")
        if best.median >= 0.85 * cap or (au is not None and au >= 0.85):
            lines = [
                f"a {spec.step_ms:g} ms step per batch of {spec.batch_size} caps the pipeline at {_rate(cap)}; "
                f"the best config reaches {_rate(best.median)} ({best.median / cap:.0%} of it)"
            ]
            if au is not None:
                lines.append(f"accelerator utilisation {au:.0%}: the GPU, not the loader, sets the pace")
            return Bottleneck("consumer-bound", (*lines, probe_line))
    if spec.device == "cuda" and best.measurements:
        h2d = extra_float(best.measurements[-1], "h2d_bytes_per_s")
        limit = extra_float(best.measurements[-1], "h2d_limit_bytes_per_s")
        if h2d and limit and h2d >= 0.8 * limit:
            return Bottleneck(
                "IPC/transfer-bound",
                (
                    f"host-to-device copies run at {h2d / 1e9:.2f} GB/s, {h2d / limit:.0%} of the measured pinned "
                    f"limit {limit / 1e9:.2f} GB/s",
                    probe_line,
                ),
            )
    if 1 in plain and not math.isnan(r0) and plain[1].median < 0.8 * r0:
        return Bottleneck(
            "IPC/transfer-bound",
            (
                f"one worker delivers {_rate(plain[1].median)} against {_rate(r0)} in-process "
                f"({plain[1].median / r0:.2f}x): handing {fmt_bytes(pr.bytes_per_sample)} per sample between "
                "processes costs more than loading it",
                f"the best config, {best.config.id}, reaches {_rate(best.median)}",
                probe_line,
            ),
        )
    scaling = ""
    beyond = [n for n in plain if n > cpus and not math.isnan(plain[n].median)]
    at_cpus = [n for n in plain if 0 < n <= cpus]
    if beyond and at_cpus:
        hi, lo = max(beyond, key=lambda n: plain[n].median), max(at_cpus)
        scaling = (
            f"{hi} workers give {_rate(plain[hi].median)} against {_rate(plain[lo].median)} at {lo} "
            f"({plain[hi].median / plain[lo].median:.2f}x) on {cpus} CPUs"
        )
    if not math.isnan(pr.cpu_fraction) and pr.cpu_fraction < 0.5:
        lines = [probe_line, "the dataset mostly waits (I/O, sleeps, locks released), so workers overlap the waits"]
        return Bottleneck("I/O-bound", tuple(lines + ([scaling] if scaling else [])))
    lines = [probe_line, f"the dataset computes; workers can only run it in parallel on the {cpus} CPUs"]
    return Bottleneck("CPU-bound", tuple(lines + ([scaling] if scaling else [])))


# --- putting it together -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TuneResult:
    spec: TuneSpec
    search: Search
    recommended: LoaderConfig
    defaults: LoaderConfig
    probe: Probe
    bottleneck: Bottleneck
    elapsed_s: float

    @property
    def measurements(self) -> list[Measurement]:
        return [m for t in self.search.trials.values() for m in t.measurements]

    def trial(self, config: LoaderConfig) -> Trial | None:
        return self.search.trials.get(config)

    def persistence_gain(self) -> tuple[float, float, bool] | None:
        """(without, with persistent workers, whether "without" is a measured next-epoch stall) for the
        recommended worker count; see :func:`stall_without`."""
        plain = self.search.trials.get(self.recommended.replace(persistent_workers=False))
        kept = self.search.trials.get(self.recommended.replace(persistent_workers=True))
        if self.recommended.num_workers == 0 or plain is None or kept is None:
            return None
        without, measured = stall_without(plain)
        with_ = kept.phase("epoch_stall_s")
        return (without, with_, measured) if without is not None and with_ is not None else None


def stall_without(plain: Trial) -> tuple[float | None, bool]:
    """The next-epoch stall without persistent workers: measured when it was, else the time to the first
    batch, a lower bound (a new epoch starts the workers again and waits for their first batch)."""
    stall = plain.phase("epoch_stall_s")
    return (stall, True) if stall is not None else (plain.phase("ttfb_s"), False)


def _cuda_consumer(spec: TuneSpec) -> Callable[[], Any]:
    try:
        from loaderbench.cuda import CudaConsumer, CudaSpec, cuda_available
    except ImportError as exc:
        raise UsageError(
            f"--device=cuda: this loaderbench has no CUDA consumer ({exc}). Use --device cpu or upgrade loaderbench."
        ) from None
    ok, why = cuda_available()
    if not ok:
        raise UsageError(f"--device=cuda: {why}. Run on a machine with a CUDA GPU, or use --device cpu.")
    cuda_spec = CudaSpec(step_ms=spec.step_ms)
    return lambda: CudaConsumer(cuda_spec, batch_size=spec.batch_size)


def tune(
    spec: TuneSpec,
    *,
    progress: Callable[[Progress], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> TuneResult:
    """Tune ``spec.factory``'s DataLoader settings on this machine.

    Raises :class:`UsageError` / :class:`WorkloadError` for bad input (before anything is measured)
    and :class:`CaseFailed` when even the DataLoader defaults cannot be measured.
    """
    from loaderbench import config as config_module
    from loaderbench.engine.consumers import CpuConsumer
    from loaderbench.engine.harness import measure
    from loaderbench.engine.plan import Plan
    from loaderbench.engine.workloads import Workload, load_factory

    start = clock()
    cuda_consumer = _cuda_consumer(spec) if spec.device == "cuda" else None  # no GPU: say so before anything else
    dataset = load_factory(spec.factory)
    collate = load_callable(spec.collate, option="--collate") if spec.collate else None
    pr = probe(dataset, spec, collate)
    if cuda_consumer is not None:
        make_consumer = cuda_consumer
        check_picklable(dataset, spec)
    elif spec.step_ms > 0:
        step = spec.step_ms
        make_consumer = lambda: StepConsumer(step)  # noqa: E731
    else:
        make_consumer = CpuConsumer
    del dataset
    base = LoaderConfig(batch_size=spec.batch_size)
    if collate is not None:
        # LoaderConfig names its collate; the user's is registered under "user" for this process
        config_module.COLLATES["user"] = collate
        base = base.replace(collate="user")
    name = spec.factory.replace(":", ".")
    workload = Workload(name=name, kind="user", batch_size=spec.batch_size, params={"factory": spec.factory})

    def run(cfg: LoaderConfig, next_epoch: bool) -> Measurement:
        queue = (cfg.effective_prefetch_factor or 0) * cfg.num_workers
        plan = Plan(
            rounds=spec.rounds + 1,
            round_s=spec.round_s,
            next_epoch=next_epoch,
            min_batches_per_round=max(4, queue),  # round 1 (dropped) then absorbs what the warm-up left queued
        )
        m = measure(workload, cfg, device=spec.device, plan=plan, consumer=make_consumer(), runner=back_to_back)
        return drop_first_round(m)

    search = Search(spec, run, base=base, clock=clock, progress=progress)
    best = with_persistence(search, search.search().config)
    return TuneResult(
        spec=spec,
        search=search,
        recommended=best,
        defaults=base,
        probe=pr,
        bottleneck=classify(search, pr, spec),
        elapsed_s=clock() - start,
    )


def back_to_back(round_fn: Callable[[], None], rounds: int, between: Callable[[], None]) -> None:
    """Rounds with nothing between them: ``between`` (the memory sampler's process-tree rescan, which
    reads every worker's smaps) runs once before the first, so the workers cannot refill their prefetch
    queues outside the timed region and make the next round look faster than the steady state."""
    between()
    for _ in range(rounds):
        round_fn()


def drop_first_round(m: Measurement) -> Measurement:
    """Discard the first timed round: it starts with the prefetch queue the warm-up left full."""
    import dataclasses

    rounds = {k: v[1:] for k, v in m.rounds.items()}
    per_round = len(next(iter(m.rounds.values()), ())) or 1
    steady = m.steady_batches - m.steady_batches // per_round
    return dataclasses.replace(m, rounds=rounds, steady_batches=steady)


def with_persistence(search: Search, best: LoaderConfig) -> LoaderConfig:
    """``best`` with ``persistent_workers=True`` when that was measured to at least halve the next-epoch
    stall without a significant loss of throughput."""
    if best.num_workers == 0 or best.persistent_workers:
        return best
    plain = search.trials.get(best)
    kept = search.trials.get(best.replace(persistent_workers=True))
    if plain is None or kept is None:
        return best
    a, b = stall_without(plain)[0], kept.phase("epoch_stall_s")
    if a is not None and b is not None and b <= a / 2 and not search.separated(plain, kept):
        return kept.config
    return best
