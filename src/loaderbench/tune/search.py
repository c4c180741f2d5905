"""``loaderbench tune``: find the fastest DataLoader settings for the user's own dataset, adaptively.

The search never brute-forces the factorial.  It measures, in order, while the
time budget lasts:

1. the DataLoader defaults (``num_workers=0``), always;
2. the two common heuristics, ``num_workers = os.cpu_count()`` and the
   Lightning-style ``affinity CPUs - 1`` (the answer compares against them);
3. a worker-count ladder 1, 2, 4, 8... that climbs until scaling stops: two
   rungs in a row that fail to beat the fewer-worker rungs by ``tie`` end it
   (the region above is dominated).  Its only ceiling is ``max_workers``, by
   default :func:`auto_worker_cap` (far above where an ordinary dataset stops
   scaling); a ladder still scaling at its ceiling says so in
   :attr:`Search.cap_note`, with the slope of its last rungs.  Then the
   midpoints around the knee;
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
from collections.abc import Callable
from dataclasses import dataclass

from loaderbench import stats
from loaderbench.config import TORCH_HAS_IN_ORDER, LoaderConfig
from loaderbench.errors import CaseFailed, UsageError
from loaderbench.machine import affinity_cpus
from loaderbench.measurement import Measurement
from loaderbench.tune.trials import Progress, Trial, cost, ordered

__all__ = ["MeasureFn", "Progress", "Search", "Trial", "TuneSpec", "cost", "heuristics", "ordered"]


@dataclass(frozen=True, slots=True)
class TuneSpec:
    """What to tune and how long to spend on it.  Bad values raise :class:`UsageError` naming the field."""

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
    ranks: int = 1  # data-parallel ranks sharing this machine's cores: the answer is workers per rank

    def __post_init__(self) -> None:
        if not (isinstance(self.budget_s, (int, float)) and math.isfinite(self.budget_s) and self.budget_s > 0):
            raise UsageError(f"budget_s={self.budget_s!r}: must be a positive number of seconds. Use e.g. budget_s=60.")
        if self.batch_size < 1:
            raise UsageError(f"batch_size={self.batch_size!r}: must be at least 1. Use your training batch size.")
        if self.device not in ("cpu", "cuda"):
            raise UsageError(f"device={self.device!r}: not a device. Use 'cpu' or 'cuda'.")
        if not (math.isfinite(self.step_ms) and self.step_ms >= 0):
            raise UsageError(f"step_ms={self.step_ms!r}: must be >= 0 milliseconds. Use 0 for no consumer step.")
        if isinstance(self.ranks, bool) or not isinstance(self.ranks, int) or self.ranks < 1:
            raise UsageError(f"ranks={self.ranks!r}: must be a positive integer. Use 1, or your ranks per node.")
        if self.max_workers is not None and self.max_workers < 1:
            raise UsageError(f"max_workers={self.max_workers!r}: must be at least 1. Use e.g. 16, or None.")

    @property
    def objective(self) -> str:
        """The per-round metric maximised: the GPU feed rate on CUDA, samples/s on CPU."""
        return "feed_samples_per_s" if self.device == "cuda" else "samples_per_s"

    @property
    def worker_cap(self) -> int:
        return self.max_workers or max(4, auto_worker_cap() // self.ranks)  # the ranks share the cores


def auto_worker_cap(cpus: int | None = None) -> int:
    """The ladder's ceiling without ``--max-workers``: ``max(64, 4 x affinity CPUs)``.

    The ladder normally stops well below it, where scaling stops; it is there for datasets that wait rather
    than compute (I/O, a remote store, a sleep), which scale far past the CPU count: a 2 ms-sleep dataset on
    2 CPUs still scales at 32 workers.  Above it, worker start-up and file descriptors cost more than more
    waiting can gain.
    """
    return max(64, 4 * (cpus if cpus is not None else affinity_cpus()))


def heuristics() -> dict[str, int]:
    """The common rules of thumb for num_workers on this machine."""
    return {
        "num_workers = CPU count (os.cpu_count())": os.cpu_count() or 1,
        "Lightning-style: affinity CPUs - 1": max(1, affinity_cpus() - 1),
    }


def rank_rules(ranks: int) -> dict[str, int]:
    """With ranks sharing the machine: the rule of thumb that splits the CPUs among them."""
    return {f"affinity CPUs / {ranks} ranks": max(1, affinity_cpus() // ranks)} if ranks > 1 else {}


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
        #: Set when the ladder stopped at its ceiling while still scaling: the cap, the slope and what to do.
        self.cap_note = ""
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
        best, defaults = self.top(), self.trials.get(self.base)
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

    def _better(self, a: float, b: float) -> bool:
        return not math.isnan(a) and (math.isnan(b) or a > b * (1 + self.spec.tie))

    # --- statistics: the one rule that tells two configs apart ----------------------------------------
    def p_value(self, a: Trial, b: Trial) -> float:
        """One-sided Mann-Whitney U p-value that ``a``'s pooled rounds are faster than ``b``'s."""
        return stats.mann_whitney_greater(a.samples, b.samples)

    def separated(self, best: Trial, other: Trial) -> bool:
        """``best`` is faster than ``other`` by more than ``tie`` and the rounds say so (p <= alpha):
        :func:`loaderbench.stats.clearly_greater`, the rule the report's advice uses too."""
        return stats.clearly_greater(best.samples, other.samples, by=self.spec.tie, alpha=self.spec.alpha)

    def tied(self, best: Trial, other: Trial) -> bool:
        """``best`` is not faster than ``other`` by more than ``tie``."""
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
    def workers(self, n: int) -> LoaderConfig:
        """The base config with ``n`` workers (spawned on CUDA)."""
        cfg = self.base.replace(num_workers=n)
        if self.spec.device == "cuda" and n > 0:
            cfg = cfg.replace(multiprocessing_context="spawn")  # no fork from a CUDA parent (pytorch#68383)
        return cfg

    def ladder(self) -> None:
        """1, 2, 4, 8... workers (then the cap itself), each compared with the best of the fewer worker counts
        measured; two rungs in a row without a gain of ``tie`` end the climb (what lies above them is dominated).
        Reaching the cap while still gaining sets :attr:`cap_note`."""
        self.phase = "workers"
        misses = 0
        n, cap = 1, self.spec.worker_cap
        while True:
            best_before = max((t.median for w, t in self.by_workers().items() if w < n), default=math.nan)
            trial = self.trials.get(self.workers(n)) or self.run(self.workers(n))
            if trial is None and self.stopped:
                return
            if trial is not None:  # a failed rung is no evidence either way (its reason is in self.failures)
                misses = 0 if self._better(trial.median, best_before) else misses + 1
                if misses >= 2:
                    return
            if n >= cap:
                break
            n = min(2 * n, cap)
        if misses == 0 and trial is not None:
            self.cap_note = self._cap_note(cap)

    def _cap_note(self, cap: int) -> str:
        """Why the ladder stopped at ``cap`` and how fast it was still climbing there."""
        rungs = sorted((n, t.median) for n, t in self.by_workers().items() if n > 0 and not math.isnan(t.median))
        (w1, r1), (w2, r2) = rungs[-2] if len(rungs) > 1 else (0, math.nan), rungs[-1]
        slope = ""
        if w1 and r1 > 0:
            slope = (
                f": {r1:,.0f} -> {r2:,.0f} samples/s from {w1} to {w2} workers "
                f"({(r2 - r1) / (w2 - w1):+,.0f} samples/s per added worker, {r2 / r1:.2f}x for {w2 / w1:.2g}x "
                "the workers)"
            )
        how = "raise --max-workers" if self.spec.max_workers else f"pass --max-workers above {cap}"
        return (
            f"the worker ladder reached its cap of {cap} workers while throughput was still scaling{slope}; "
            f"more workers may be faster still ({how} to search further)"
        )

    def refine(self, rounds: int = 2) -> None:
        """Midpoints around the knee: the fewest workers that the fastest worker count is not separated from."""
        self.phase = "refine"
        for _ in range(rounds):
            plain = self.by_workers()
            measured = sorted(plain)
            top = max(plain.values(), key=lambda t: t.median)
            best = min(n for n, t in plain.items() if t is top or not self.separated(top, t))
            i = measured.index(best)
            around = [measured[j] for j in (i - 1, i + 1) if 0 <= j < len(measured)]
            mids = [(best + other) // 2 for other in around if abs(best - other) > 1]
            if not mids:
                return
            for mid in mids:
                if self.run(self.workers(mid)) is None and self.stopped:
                    return

    def by_workers(self) -> dict[int, Trial]:
        """The trials of the plain worker-count configs (no other knob changed), by worker count."""
        return {t.config.num_workers: t for t in self.trials.values() if t.config == self.workers(t.config.num_workers)}

    def heuristic_configs(self) -> list[tuple[str, int, LoaderConfig]]:
        """(rule of thumb, its worker count, its config) for each of :func:`heuristics`."""
        return [(name, n, self.workers(n)) for name, n in {**heuristics(), **rank_rules(self.spec.ranks)}.items()]

    def heuristic_points(self) -> None:
        self.phase = "heuristics"
        for cfg in sorted({cfg for _, _, cfg in self.heuristic_configs()}, key=cost):
            if cfg not in self.trials:
                self.run(cfg)

    def knobs(self) -> None:
        best = self.top().config
        if best.num_workers == 0:
            return
        self.phase = "prefetch"
        four = self.run(best.replace(prefetch_factor=4))
        if four is not None and self._better(four.median, self.trials[best].median):
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
            unsure = [
                t for t in self.trials.values() if not (t is best or self.separated(best, t) or self.tied(best, t))
            ]
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
                    self.stop_reason = (
                        f"the best is statistically separated from the runner-up {runner.config.id} "
                        f"({best.median / runner.median:.2f}x, Mann-Whitney p={self.p_value(best, runner):.2g})"
                    )
                return
            challenger = max(unsure, key=lambda t: t.median)
            for trial in sorted((best, challenger), key=lambda t: len(t.samples)):
                if self.run(trial.config) is None:
                    self.stop_reason = (
                        f"budget of {self.spec.budget_s:g} s spent before the best ({best.config.id}) was separated "
                        f"from {challenger.config.id} (p={self.p_value(best, challenger):.2g}); raise --budget"
                    )
                    return

    def _runner_up(self, best: Trial) -> Trial | None:
        others = [t for t in self.trials.values() if t is not best and not math.isnan(t.median)]
        return max(others, key=lambda t: t.median) if others else None

    def search(self) -> Trial:
        """Run every phase the budget allows; return the recommended trial."""
        self.run(self.base, force=True)
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
        if self.cap_note:
            self.stop_reason = f"{self.cap_note}; {self.stop_reason}"
        return self.recommended()
