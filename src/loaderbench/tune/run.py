"""``tune()``: the search wired to the harness, and what it returns.

:func:`tune` imports the user's factory (and collate), probes the dataset in
this process, then runs :class:`loaderbench.tune.search.Search` with a measure
function that drives :func:`loaderbench.engine.harness.measure` rounds back to
back, drops each measurement's first round, and finally decides on
``persistent_workers`` (:func:`with_persistence`).  The user's workload is a
``kind="user"`` :class:`~loaderbench.workloads.recipes.Workload`; its collate is
``collate="user"``, resolved by the harness from the workload, so nothing
global changes.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loaderbench.config import USER_COLLATE, LoaderConfig
from loaderbench.cuda import CudaConsumer, CudaSpec, cuda_available
from loaderbench.engine.case import Case
from loaderbench.engine.consumers import Consumer, CpuConsumer, StepConsumer, back_to_back
from loaderbench.engine.harness import measure
from loaderbench.engine.plan import Plan
from loaderbench.errors import UsageError, WorkloadError
from loaderbench.measurement import Measurement
from loaderbench.ranks.launch import launch
from loaderbench.tune.pipelines import Rivals, compare_pipelines
from loaderbench.tune.probe import Bottleneck, Probe, check_picklable, classify, probe
from loaderbench.tune.search import Progress, Search, Trial, TuneSpec
from loaderbench.workloads.recipes import Workload, import_callable, load_factory


@dataclass(frozen=True, slots=True)
class TuneResult:
    spec: TuneSpec
    search: Search
    recommended: LoaderConfig
    defaults: LoaderConfig
    probe: Probe
    bottleneck: Bottleneck
    elapsed_s: float
    #: With ``pipelines``: the recommended setting on each other pipeline (None: none was asked for).
    rivals: Rivals | None = None

    @property
    def measurements(self) -> list[Measurement]:
        out = [m for t in self.search.trials.values() for m in t.measurements]
        rivals = [] if self.rivals is None else [r.trial for r in self.rivals.rivals if r.trial is not None]
        return out + [m for t in rivals for m in t.measurements]  # the report's "which pipeline" table shows them

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


def drop_first_round(m: Measurement) -> Measurement:
    """Discard the first timed round: it starts with the prefetch queue the warm-up left full."""
    rounds = {k: v[1:] for k, v in m.rounds.items()}
    per_round = len(next(iter(m.rounds.values()), ())) or 1
    steady = m.steady_batches - m.steady_batches // per_round
    return dataclasses.replace(m, rounds=rounds, steady_batches=steady)


def load_callable(path: str, *, option: str) -> Callable[..., Any]:
    """Import ``module:function`` for ``option`` (e.g. ``--collate``) with a clear error."""
    try:
        return import_callable(path, argument=option, returns="a batch", form="module:function")
    except WorkloadError as exc:
        raise UsageError(str(exc)) from None


def consumer_factory(spec: TuneSpec) -> Callable[[], Consumer]:
    """A new consumer per measurement: the GPU feed on CUDA, else a simulated step, else nothing.

    Raises :class:`UsageError` for ``device="cuda"`` on a machine without a usable GPU.
    """
    if spec.device == "cuda":
        ok, why = cuda_available()
        if not ok:
            raise UsageError(f"device='cuda': {why}. Run on a machine with a CUDA GPU, or tune with device='cpu'.")
        cuda_spec, batch_size = CudaSpec(step_ms=spec.step_ms), spec.batch_size
        return lambda: CudaConsumer(cuda_spec, batch_size=batch_size)
    if spec.step_ms > 0:
        step_ms = spec.step_ms
        return lambda: StepConsumer(step_ms)
    return CpuConsumer


def tune(
    spec: TuneSpec,
    *,
    progress: Callable[[Progress], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    pipelines: tuple[str, ...] = (),
) -> TuneResult:
    """Tune ``spec.factory``'s DataLoader settings on this machine; then, for each of ``pipelines`` (see
    :mod:`loaderbench.tune.pipelines`), try the recommended setting on that pipeline.

    Raises :class:`UsageError` / :class:`WorkloadError` for bad input (before anything is measured)
    and :class:`CaseFailed` when even the DataLoader defaults cannot be measured.
    """
    start = clock()
    make_consumer = consumer_factory(spec)  # no GPU: say so before anything else
    dataset = load_factory(spec.factory)
    collate = load_callable(spec.collate, option="collate") if spec.collate else None
    pr = probe(dataset, spec, collate)
    if spec.device == "cuda":
        check_picklable(dataset, spec)
    del dataset
    params: dict[str, Any] = {"factory": spec.factory}
    base = LoaderConfig(batch_size=spec.batch_size, ranks=spec.ranks)
    if spec.collate:
        params["collate"] = spec.collate
        base = base.replace(collate=USER_COLLATE)  # the harness resolves it through Workload.user_collate()
    name = spec.factory.replace(":", ".")
    workload = Workload(name=name, kind="user", batch_size=spec.batch_size, params=params)

    def measure_one(cfg: LoaderConfig, next_epoch: bool) -> Measurement:
        queue = (cfg.effective_prefetch_factor or 0) * cfg.num_workers
        plan = Plan(
            rounds=spec.rounds + 1,
            round_s=spec.round_s,
            next_epoch=next_epoch,
            min_batches_per_round=max(4, queue),  # round 1 (dropped) then absorbs what the warm-up left queued
        )
        if spec.ranks > 1:  # the job's rate, in ranks that share this machine's cores
            cuda = CudaSpec(step_ms=spec.step_ms) if spec.device == "cuda" else None
            return drop_first_round(launch(Case(workload, cfg, spec.device, cuda), plan, step_ms=spec.step_ms))
        m = measure(workload, cfg, device=spec.device, plan=plan, consumer=make_consumer(), runner=back_to_back)
        return drop_first_round(m)

    search = Search(spec, measure_one, base=base, clock=clock, progress=progress)
    best = with_persistence(search, search.search().config)
    rivals = compare_pipelines(search, best, pipelines) if pipelines else None
    return TuneResult(
        spec=spec,
        search=search,
        recommended=best,
        defaults=base,
        probe=pr,
        bottleneck=classify(search, pr, spec),
        elapsed_s=clock() - start,
        rivals=rivals,
    )
