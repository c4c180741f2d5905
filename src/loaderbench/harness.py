"""The harness: measure one case (workload x LoaderConfig x consumer) honestly.

Phases, each timed on its own with the injectable clock:

1. ``startup_s``: ``iter(loader)``, which creates the iterator and starts the workers;
2. ``ttfb_s``: ``iter(loader)`` until the first batch is in hand;
3. warm-up batches (not timed), then ``rounds`` steady-state rounds of equal
   batch counts, each giving samples/s, batches/s and bytes/s;
4. ``epoch_end_s``: the ``next()`` that raises ``StopIteration``;
5. ``epoch_stall_s``: the next epoch's ``iter()`` until its first batch (where
   ``persistent_workers`` matters);
6. ``shutdown_s``: releasing the loader until every worker has exited.

The epoch length is sized from the workload's cost model (or a short pilot in
this process) so that each round lasts about ``Plan.round_s``.  Workers are
always shut down, and stragglers killed, also when a case fails.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import psutil
import torch
from torch.utils.data import DataLoader, IterableDataset

from loaderbench.clock import Clock, perf_clock
from loaderbench.config import LoaderConfig
from loaderbench.errors import CaseFailed, LoaderbenchError
from loaderbench.faults import explain_failure
from loaderbench.measurement import Measurement, case_id
from loaderbench.memory import PeakMemorySampler
from loaderbench.workloads import Workload, affinity_cpus

#: Sustained shared-memory IPC rate assumed when sizing worker cases (bytes/s).
_IPC_BYTES_PER_S_GUESS = 1.5e9
#: Cost of passing one unbatched sample through a worker (seconds).
_IPC_S_PER_UNBATCHED_SAMPLE = 4.5e-4


@dataclass(frozen=True, slots=True)
class Plan:
    """How much to measure per case."""

    rounds: int = 5
    round_s: float = 0.2
    warmup_batches: int = 2
    min_batches_per_round: int = 4
    max_batches_per_round: int = 5000
    next_epoch: bool = True
    memory_interval_s: float = 0.1
    torch_threads: int = 1
    shutdown_timeout_s: float = 20.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("rounds", "warmup_batches", "min_batches_per_round", "torch_threads"):
            if getattr(self, name) < 1:
                raise CaseFailed(f"{name}={getattr(self, name)!r}: must be at least 1. Raise it.")
        if not self.round_s > 0:
            raise CaseFailed(f"round_s={self.round_s!r}: must be positive. Use e.g. 0.2.")


class Consumer(Protocol):
    """What the harness does with each batch (on CPU: nothing; on CUDA: copy + compute)."""

    def consume(self, batch: Any) -> None:
        """Called for every batch, inside the timed region."""
        ...

    def sync(self) -> None:
        """Called inside the timed region after a round's last batch (a CUDA consumer synchronizes here)."""
        ...

    def round_metrics(self, samples: int, seconds: float) -> Mapping[str, float]:
        """Called after the round's clock stopped: extra per-round metrics (raw values kept)."""
        ...

    def finish(self) -> Mapping[str, Any]:
        """Case-level metrics for ``extra_info`` (called once, after the last round)."""
        ...


class CpuConsumer:
    """Iterates and touches nothing: measures what the loader alone delivers."""

    def consume(self, batch: Any) -> None:
        return None

    def sync(self) -> None:
        return None

    def round_metrics(self, samples: int, seconds: float) -> Mapping[str, float]:
        return {}

    def finish(self) -> Mapping[str, Any]:
        return {}


#: ``runner(round_fn, rounds, between)`` runs ``round_fn`` ``rounds`` times, calling
#: ``between`` (untimed) before each.  The pytest plugin passes pytest-benchmark's pedantic.
Runner = Callable[[Callable[[], None], int, Callable[[], None]], None]


def default_runner(round_fn: Callable[[], None], rounds: int, between: Callable[[], None]) -> None:
    for _ in range(rounds):
        between()
        round_fn()


def tensor_bytes(obj: Any) -> int:
    """Bytes of all tensors in a (nested) batch."""
    if isinstance(obj, torch.Tensor):
        return obj.element_size() * obj.numel()
    if isinstance(obj, Mapping):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def estimate_samples_per_s(
    workload: Workload, config: LoaderConfig, workdir: str | os.PathLike[str], *, clock: Clock = perf_clock
) -> float:
    """A rough throughput estimate used only to size the epoch.

    The cost model when there is one; otherwise a pilot of a few samples in
    this process, scaled by the worker count and capped by the IPC costs of
    DESIGN.md section 7 (about 0.45 ms per unbatched sample, ~1.5 GB/s of
    shared-memory traffic).
    """
    cpus = affinity_cpus()
    ideal = workload.ideal_samples_per_s(config.num_workers, cpus)
    if ideal is not None:
        return ideal
    bs = config.batch_size or 1
    pilot = workload.build(max(bs, 8), workdir)
    n = min(bs, 8)
    t0 = clock()
    if isinstance(pilot, IterableDataset):
        it = iter(pilot)
        samples = [next(it) for _ in range(n)]
    else:
        samples = [pilot[i] for i in range(n)]  # type: ignore[index]
    cost = max((clock() - t0) / n, 1e-7)
    rate = min(config.num_workers or 1, cpus) / cost
    if config.num_workers > 0:
        rate = min(rate, _IPC_BYTES_PER_S_GUESS / max(tensor_bytes(samples[0]), 1))
        if config.batch_size is None:
            rate = min(rate, config.num_workers / _IPC_S_PER_UNBATCHED_SAMPLE)
    return rate


def warmup_batches(config: LoaderConfig, plan: Plan) -> int:
    """Untimed batches after the first: enough to drain the batches that workers
    prefetched during start-up (``prefetch_factor * num_workers``), so the first
    timed round starts in the steady state."""
    return plan.warmup_batches + (config.effective_prefetch_factor or 0) * config.num_workers


@dataclass(slots=True)
class _Epoch:
    """Sizing of the measured epoch."""

    batch_size: int
    batches_per_round: int
    total_batches: int

    @property
    def length(self) -> int:
        return self.total_batches * self.batch_size


def plan_epoch(workload: Workload, config: LoaderConfig, plan: Plan, rate: float) -> _Epoch:
    """Batches per round so one round lasts about ``plan.round_s`` at ``rate`` samples/s."""
    bs = config.batch_size or 1
    per_round = math.ceil(plan.round_s * rate / bs)
    per_round = max(plan.min_batches_per_round, min(plan.max_batches_per_round, per_round))
    total = warmup_batches(config, plan) + 1 + plan.rounds * per_round
    if workload.is_iterable and config.num_workers > 1:
        # each worker must get whole batches, or it yields a short batch at its end
        step = config.num_workers
        total = math.ceil(total / step) * step
    return _Epoch(batch_size=bs, batches_per_round=per_round, total_batches=total)


def measure(
    workload: Workload,
    config: LoaderConfig,
    *,
    device: str = "cpu",
    plan: Plan | None = None,
    clock: Clock = perf_clock,
    runner: Runner = default_runner,
    consumer: Consumer | None = None,
    workdir: str | os.PathLike[str] | None = None,
) -> Measurement:
    """Measure one case.  Raises :class:`CaseFailed` with a clear message on any fault."""
    plan = plan or Plan()
    consumer = consumer or CpuConsumer()
    consumer_id = str(getattr(consumer, "id", ""))
    cid = case_id(workload.name, device, config, consumer_id)
    old_threads = torch.get_num_threads()
    old_strategy = torch.multiprocessing.get_sharing_strategy()  # type: ignore[no-untyped-call]
    me = psutil.Process()
    children_before = {p.pid for p in me.children(recursive=True)}
    notes: list[str] = []
    loader: DataLoader[Any] | None = None
    tmp = tempfile.TemporaryDirectory(prefix="loaderbench-") if workdir is None else None
    where: str | os.PathLike[str] = tmp.name if tmp is not None else workdir  # type: ignore[assignment]
    try:
        torch.set_num_threads(plan.torch_threads)
        torch.multiprocessing.set_sharing_strategy(config.sharing_strategy)  # type: ignore[no-untyped-call]
        epoch = plan_epoch(workload, config, plan, estimate_samples_per_s(workload, config, where, clock=clock))
        dataset = workload.build(epoch.length, where)
        with warnings.catch_warnings(record=True) as caught:
            # torch warns (at construction and at iter()) about over-subscription and pinning
            # without an accelerator; the case records them instead of failing on them
            warnings.simplefilter("always")
            loader = DataLoader(dataset, **config.dataloader_kwargs(dataset, seed=plan.seed))
            result = _run(loader, config, epoch, plan, clock, runner, consumer)
        for w in caught:
            text = f"torch warned: {str(w.message).splitlines()[0]}"
            if text not in notes:
                notes.append(text)
        rounds, phases, steady, nbytes, memory = result
        if "epoch_end_s" not in phases:
            notes.append("the epoch did not end where planned, so epoch_end_s is not measured")
        extra = dict(consumer.finish())
    except LoaderbenchError:
        raise
    except Exception as exc:
        raise explain_failure(cid, exc) from exc
    finally:
        loader = None
        gc.collect()
        leaked = _reap_workers(me, children_before, plan.shutdown_timeout_s)
        torch.set_num_threads(old_threads)
        torch.multiprocessing.set_sharing_strategy(old_strategy)  # type: ignore[no-untyped-call]
        if tmp is not None:
            tmp.cleanup()
    if leaked:
        notes.append(f"{leaked} worker process(es) did not exit within {plan.shutdown_timeout_s:g} s and were killed")
    return Measurement(
        workload=workload.name,
        device=device,
        config=config,
        rounds=rounds,
        phases=phases,
        steady_batches=steady,
        bytes_per_sample=nbytes,
        peak_memory_bytes=memory.peak if memory.samples else None,
        memory_kind=memory.kind,
        ideal_samples_per_s=workload.ideal_samples_per_s(config.num_workers, affinity_cpus()),
        torch_threads=plan.torch_threads,
        cpus=affinity_cpus(),
        notes=tuple(notes),
        extra=extra,
        consumer=consumer_id,
    )


def _run(
    loader: DataLoader[Any],
    config: LoaderConfig,
    epoch: _Epoch,
    plan: Plan,
    clock: Clock,
    runner: Runner,
    consumer: Consumer,
) -> tuple[dict[str, tuple[float, ...]], dict[str, float], int, int, PeakMemorySampler]:
    phases: dict[str, float] = {}
    per_round: dict[str, list[float]] = {"samples_per_s": [], "batches_per_s": [], "bytes_per_s": [], "round_s": []}
    live: list[Iterator[Any]] = []  # the live iterator, so a failure can shut its workers down
    k = epoch.batches_per_round
    samples = k * epoch.batch_size
    bytes_per_sample = 0
    steady = 0

    def round_fn() -> None:
        nonlocal steady
        it = live[0]
        start = clock()
        for _ in range(k):
            consumer.consume(next(it))
        consumer.sync()
        seconds = clock() - start
        extra = consumer.round_metrics(samples, seconds)
        steady += k
        per_round["round_s"].append(seconds)
        per_round["samples_per_s"].append(samples / seconds)
        per_round["batches_per_s"].append(k / seconds)
        per_round["bytes_per_s"].append(samples * bytes_per_sample / seconds)
        for name, value in extra.items():
            per_round.setdefault(name, []).append(value)

    with PeakMemorySampler(plan.memory_interval_s) as memory:
        try:
            t0 = clock()
            live.append(iter(loader))
            phases["startup_s"] = clock() - t0
            first = next(live[0])
            phases["ttfb_s"] = clock() - t0
            bytes_per_sample = tensor_bytes(first) // epoch.batch_size
            consumer.consume(first)
            del first
            for _ in range(warmup_batches(config, plan)):
                consumer.consume(next(live[0]))
            runner(round_fn, plan.rounds, memory.sample)
            phases.update(_drain(live[0], clock))
            if plan.next_epoch:
                if not config.persistent_workers:
                    t = clock()
                    live.clear()  # releases the first epoch's workers
                    gc.collect()
                    phases["epoch_shutdown_s"] = clock() - t
                t = clock()
                live[:] = [iter(loader)]
                next(live[0])
                phases["epoch_stall_s"] = clock() - t
            t = clock()
            live.clear()
            loader._iterator = None  # a persistent iterator is held by the loader
            gc.collect()  # torch's _shutdown_workers joins (or terminates) the workers here
            phases["shutdown_s"] = clock() - t
        finally:
            for it in live:
                _shutdown(it)
            live.clear()
            loader._iterator = None
    rounds = {name: tuple(values) for name, values in per_round.items()}
    return rounds, phases, steady, bytes_per_sample, memory


def _shutdown(it: Iterator[Any]) -> None:
    """Stop a failed iterator's workers now (torch would only do it when the iterator is collected,
    and a traceback can keep it alive)."""
    stop = getattr(it, "_shutdown_workers", None)
    if stop is not None:
        with contextlib.suppress(Exception):
            stop()


def _drain(it: Iterator[Any], clock: Clock, limit: int = 10_000) -> dict[str, float]:
    """Consume what is left of the epoch (untimed); time the call that raises StopIteration."""
    for _ in range(limit):
        t = clock()
        try:
            next(it)
        except StopIteration:
            return {"epoch_end_s": clock() - t}
    return {}


def _is_worker(proc: psutil.Process) -> bool:
    try:
        cmd = " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return True
    # forkserver's server process is shared across cases and outlives them by design
    return "forkserver" not in cmd and "resource_tracker" not in cmd


def _reap_workers(me: psutil.Process, before: set[int], timeout_s: float) -> int:
    """Wait for workers started by this case to exit; kill stragglers. Returns how many were killed."""
    try:
        new = [c for c in me.children(recursive=True) if c.pid not in before and _is_worker(c)]
    except psutil.NoSuchProcess:  # pragma: no cover
        return 0
    _, alive = psutil.wait_procs(new, timeout=timeout_s)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)
    return len(alive)
