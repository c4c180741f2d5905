"""The harness: measure one case (workload x LoaderConfig x consumer) honestly.

Phases, each timed on its own with the injectable clock:

1. ``startup_s``: ``iter(loader)``, which creates the iterator and starts the workers;
2. ``ttfb_s``: ``iter(loader)`` until the first batch is in hand;
3. warm-up batches (not timed), then ``rounds`` steady-state rounds of equal
   batch counts, each giving samples/s, batches/s and bytes/s, with the
   memory sampler paused; then one untimed round in which the memory sampler
   takes the steady state's peak (it samples every phase but the timed rounds);
4. ``epoch_end_s``: the ``next()`` that raises ``StopIteration``;
5. ``epoch_stall_s``: the next epoch's ``iter()`` until its first batch (where
   ``persistent_workers`` matters);
6. ``shutdown_s``: releasing the loader until every worker has exited.

The loader is built through the pipeline that ``config.pipeline`` names
(:mod:`loaderbench.pipelines`): torch's ``DataLoader`` or a rival (torchdata's
``StatefulDataLoader`` and nodes, SPDL), each driven through the same phases.
CPU time (user + system) of this process and every worker process is read
just before the first timed round and just after the last (never inside one,
and from the known worker pids, without a scan of /proc that would let the
workers refill their queues): ``extra['cpu_s_per_sample']`` is it over the
samples of the timed rounds.

The epoch length is sized from the workload's cost model (or a short pilot in
this process) so that each round lasts about ``Plan.round_s``.

Faults (:mod:`~loaderbench.engine.explain`, :mod:`~loaderbench.engine.watchdog`,
:mod:`~loaderbench.engine.cleanup`): any failure becomes one
:class:`CaseFailed` paragraph naming the case, the fault and the remedy.  A
watchdog bounds every step by ``Plan.batch_timeout_s`` even when the case's
``timeout`` is 0, without changing the DataLoader's timeout: a hung worker is
killed, a hung main process is interrupted (on the main thread only, and only
once the stuck call returns to Python: see the limits in ``watchdog``).  The
collate function is wrapped in a pass-through (:class:`ExplainingCollate`)
that names the offending shapes if collation fails.  Workers are always shut
down, stragglers killed, and /dev/shm segments left by the case's exited
workers removed, also when a case fails.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import tempfile
import traceback
import warnings
from collections.abc import Iterator
from typing import Any

import psutil
import torch

from loaderbench.clock import Clock, perf_clock
from loaderbench.collates import ExplainingCollate
from loaderbench.config import LoaderConfig
from loaderbench.engine import allocator
from loaderbench.engine.batches import tensor_bytes
from loaderbench.engine.cleanup import INTERRUPTED_GRACE_S, alarm_held, reap, remove_leftover_segments, shm_segments
from loaderbench.engine.consumers import Consumer, CpuConsumer, Runner, default_runner
from loaderbench.engine.explain import explain_failure
from loaderbench.engine.memory import PeakMemorySampler, cpu_delta, known_processes, others_share, tree_cpu_seconds
from loaderbench.engine.plan import (
    REPLAN_FACTOR,
    Epoch,
    Plan,
    estimate_samples_per_s,
    plan_epoch,
    replanned_batches,
    warmup_batches,
)
from loaderbench.engine.watchdog import Hung, Watchdog
from loaderbench.errors import (
    CaseFailed,
    FailureKind,
    LoaderbenchError,
    WorkloadError,
    note_interruption,
)
from loaderbench.machine import affinity_cpus
from loaderbench.measurement import PROCESS_SESSION, Measurement, case_id, now
from loaderbench.pipelines import registry
from loaderbench.pipelines.base import Pipeline
from loaderbench.pipelines.dataloader import await_a_dead_worker
from loaderbench.workloads.datasets import dist_rank
from loaderbench.workloads.recipes import Workload


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
    allocator.pin()  # once per process: batches allocate alike in every process (see engine.allocator)
    plan = plan or Plan()
    consumer = consumer or CpuConsumer()
    consumer_id = str(getattr(consumer, "id", ""))
    cid = case_id(workload.name, device, config, consumer_id)
    old_threads = torch.get_num_threads()
    old_strategy = torch.multiprocessing.get_sharing_strategy()  # type: ignore[no-untyped-call]
    me = psutil.Process()
    children_before = {p.pid for p in me.children(recursive=True)}
    shm_before = shm_segments()
    workers: set[int] = set()
    exits: dict[int, int] = {}
    notes: list[str] = []
    loader: Pipeline | None = None
    stopped = False  # interrupted from outside
    tmp = tempfile.TemporaryDirectory(prefix="loaderbench-") if workdir is None else None
    where: str | os.PathLike[str] = tmp.name if tmp is not None else workdir  # type: ignore[assignment]
    dog = Watchdog(cid, plan.batch_timeout_s, before=children_before)
    try:
        dog.start()
        torch.set_num_threads(plan.torch_threads)
        torch.multiprocessing.set_sharing_strategy(config.sharing_strategy)  # type: ignore[no-untyped-call]
        dog.phase("sizing the epoch (a pilot of a few samples in the main process)")
        epoch = plan_epoch(workload, config, plan, estimate_samples_per_s(workload, config, where, clock=clock))
        rank = _rank_of(config, cid, dog.current_phase)
        registry.check_for_case(config, cid, dog.current_phase)
        dog.phase("building the dataset")
        dataset = workload.build(epoch.length * config.ranks, where)  # each rank reads its share
        with warnings.catch_warnings(record=True) as caught:
            # torch warns (construction, iter()) of over-subscription and pinning without an accelerator: recorded
            warnings.simplefilter("always")
            kwargs = config.dataloader_kwargs(dataset, seed=plan.seed, user_collate=workload.user_collate(), rank=rank)
            # a pass-through that, if collation fails, names where the samples differ (in the worker)
            kwargs["collate_fn"] = ExplainingCollate(kwargs["collate_fn"], auto_batching=config.batch_size is not None)
            loader = registry.build_for_case(config, dataset, kwargs, cid, dog.current_phase)
            result = _run(loader, config, epoch, plan, clock, runner, consumer, dog, workers, exits, notes)
            notes.extend(n for n in loader.notes if n not in notes)
        for w in caught:
            text = f"torch warned: {str(w.message).splitlines()[0]}"
            if text not in notes:
                notes.append(text)
        rounds, phases, steady, nbytes, memory, (cpu_s, others) = result
        if "epoch_end_s" not in phases:
            notes.append("the epoch did not end where planned, so epoch_end_s is not measured")
        extra = dict(consumer.finish())
        for text in [*(extra.get("cuda_notes") or []), extra.get("simulated_gpu_note")]:
            if text and text not in notes:  # the consumer's own words reach every report, not only extra_info
                notes.append(str(text))
        if cpu_s is not None and steady:
            extra["cpu_s_per_sample"] = cpu_s / (steady * epoch.batch_size)
        if math.isfinite(others):
            extra["others_busy"] = others
    except Hung as exc:
        _release_frames(exc)
        raise dog.failure(config.timeout) from None
    except WorkloadError as exc:  # a user factory that cannot be imported, raises or returns no Dataset
        raise CaseFailed(
            " ".join(f"case {cid} failed: {exc}".split()), case=cid, phase=dog.current_phase, kind=FailureKind.WORKLOAD
        ) from None
    except LoaderbenchError:
        raise
    except Exception as exc:
        _release_frames(exc)
        # ``from None``: the message replaces torch's traceback wall (the original stays in __context__)
        if dog.fired:
            raise dog.failure(config.timeout) from None
        zero = config.num_workers == 0
        raise explain_failure(cid, exc, phase=dog.current_phase, worker_exits=exits, in_process=zero) from None
    except BaseException as exc:  # stopped from outside (pytest-timeout's alarm, Ctrl-C): cleaned up below
        note_interruption(exc, case=cid, phase=dog.current_phase)
        stopped = True
        raise
    finally:
        try:
            with alarm_held():  # pytest-timeout's alarm waits until the workers are gone
                dog.stop()
                loader = None
                gc.collect()
                # stopped from outside: whoever pressed Ctrl-C waits a moment, not the whole shutdown timeout
                leaked = reap(me, children_before, INTERRUPTED_GRACE_S if stopped else plan.shutdown_timeout_s)
                removed = remove_leftover_segments(shm_before, workers)
                torch.set_num_threads(old_threads)
                torch.multiprocessing.set_sharing_strategy(old_strategy)  # type: ignore[no-untyped-call]
                if tmp is not None:
                    tmp.cleanup()
        except BaseException as exc:  # the alarm, held while cleaning up and delivered now
            note_interruption(exc, case=cid, phase="cleaning up after the case (its workers were stopped first)")
            raise
    if leaked:
        notes.append(f"{leaked} worker process(es) did not exit within {plan.shutdown_timeout_s:g} s and were killed")
    if removed:
        notes.append(
            f"removed {removed} shared-memory segment(s) that exited workers left in /dev/shm "
            "(batches in flight when the loader was released, leaked by the file_system sharing strategy)"
        )
    return Measurement(
        workload=workload.name,
        group=workload.group,
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
        session=PROCESS_SESSION,
        recorded=now(),
    )


def _rank_of(config: LoaderConfig, cid: str, phase: str) -> int:
    """This process's rank; a config of ``ranks > 1`` must run in exactly that many ranks."""
    rank, ranks = dist_rank()
    if config.ranks > 1 and ranks != config.ranks:
        raise CaseFailed(
            f"case {cid} failed: ranks={config.ranks} but this process runs in a group of {ranks} rank(s). "
            f"Run it with --loader-ranks={config.ranks} (torch.distributed.run starts the ranks).",
            case=cid,
            phase=phase,
            kind=FailureKind.RANKS,
        )
    return rank if config.ranks > 1 else 0


def _release_frames(exc: BaseException) -> None:
    """Drop the locals of the failed frames (batches, loader, iterators), so a failed case's tensors and
    shared-memory segments are freed now, not whenever the exception chain is collected."""
    with contextlib.suppress(Exception):
        traceback.clear_frames(exc.__traceback__)


def _run(
    loader: Pipeline,
    config: LoaderConfig,
    epoch: Epoch,
    plan: Plan,
    clock: Clock,
    runner: Runner,
    consumer: Consumer,
    dog: Watchdog,
    workers: set[int],
    exits: dict[int, int],
    notes: list[str],
) -> tuple[dict[str, tuple[float, ...]], dict[str, float], int, int, PeakMemorySampler, tuple[float | None, float]]:
    phases: dict[str, float] = {}
    per_round: dict[str, list[float]] = {"samples_per_s": [], "batches_per_s": [], "bytes_per_s": [], "round_s": []}
    live: list[Iterator[Any]] = []  # the live iterator, so a failure can shut its workers down
    k = epoch.batches_per_round
    samples = k * epoch.batch_size
    bytes_per_sample = 0
    steady = 0
    cpu_s: float | None = None
    others = math.nan

    def round_fn() -> None:
        nonlocal steady
        it = live[0]
        start = clock()
        for _ in range(k):
            consumer.consume(next(it))
            dog.beats += 1
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
            dog.phase("starting the workers (iter(loader))")
            t0 = clock()
            live.append(loader.start())
            phases["startup_s"] = clock() - t0
            workers |= loader.worker_pids(live[0])
            dog.phase("waiting for the first batch")
            first = next(live[0])
            phases["ttfb_s"] = clock() - t0
            bytes_per_sample = tensor_bytes(first) // epoch.batch_size
            consumer.consume(first)
            del first
            dog.phase("warming up")
            warm, consumed_s = warmup_batches(config, plan), 0.0
            for _ in range(warm):
                batch = next(live[0])
                t = clock()
                consumer.consume(batch)
                consumed_s += clock() - t
                del batch
                dog.beats += 1
            t = clock()
            consumer.sync()  # untimed: GPU work queued during warm-up must not run into round 1
            consumed_s += clock() - t
            planned, k = k, replanned_batches(k, warm, consumed_s, plan)
            if k < planned:
                samples = k * epoch.batch_size
                notes.append(
                    f"rounds of {k} batches, not the {planned} planned: consuming a warm-up batch (its copy or "
                    f"device step, which the CPU-side estimate cannot see) took over {REPLAN_FACTOR:g}x the time "
                    "the plan gave a whole batch"
                )
            dog.phase("measuring the steady-state rounds")
            with memory.paused():  # no instrument inside the timed rounds
                cpu_before = tree_cpu_seconds(known_processes(workers))  # before the first round (no /proc scan)
                machine_before = psutil.cpu_times()
                runner(round_fn, plan.rounds, memory.sample)
                machine_after = psutil.cpu_times()
                cpu_s = cpu_delta(cpu_before, tree_cpu_seconds(known_processes(workers)))  # and after the last
                if cpu_s is not None and config.ranks == 1:  # what other processes took meanwhile (not other ranks)
                    others = others_share(machine_before, machine_after, cpu_s)
            dog.phase("sampling memory (an untimed round)")
            phases.update(_memory_round(live[0], k, consumer, clock, dog))
            if "epoch_end_s" not in phases:
                dog.phase("draining the rest of the epoch")
                phases.update(_drain(live[0], clock, dog))
            if plan.next_epoch:
                if not config.persistent_workers:
                    dog.phase("shutting down the first epoch's workers")
                    t = clock()
                    _release(loader, live, notes, "the first epoch's")  # releases the first epoch's workers
                    gc.collect()
                    phases["epoch_shutdown_s"] = clock() - t
                dog.phase("starting the next epoch")
                loader.set_epoch(1)
                t = clock()
                live[:] = [loader.start()]
                workers |= loader.worker_pids(live[0])
                next(live[0])
                phases["epoch_stall_s"] = clock() - t
            dog.phase("shutting down the workers")
            t = clock()
            _release(loader, live, notes, "the last epoch's")
            loader.close()  # a persistent iterator is held by the loader
            gc.collect()  # torch's _shutdown_workers joins (or terminates) the workers here
            phases["shutdown_s"] = clock() - t
        except (ConnectionError, EOFError, RuntimeError) as exc:
            if not isinstance(exc, RuntimeError) or "exited unexpectedly" in str(exc):
                await_a_dead_worker(loader, live)  # so its exit code (the signal that killed it) can be reported
            raise
        finally:
            for it in live:
                exits.update(loader.exit_codes(it))
                loader.stop(it)
            live.clear()
            with contextlib.suppress(Exception):
                loader.close()
    rounds = {name: tuple(values) for name, values in per_round.items()}
    return rounds, phases, steady, bytes_per_sample, memory, (cpu_s, others)


def _release(loader: Pipeline, live: list[Iterator[Any]], notes: list[str], which: str) -> None:
    """Shut the live iterator's workers down now (see the pipeline's ``release``)."""
    for it in live:
        loader.release(it, notes, which)
    live.clear()


def _memory_round(it: Iterator[Any], batches: int, consumer: Consumer, clock: Clock, dog: Watchdog) -> dict[str, float]:
    """One more round's worth of batches, untimed, while the memory sampler runs: the steady state's
    peak memory, measured where sampling cannot slow a timed round.  A fixed-length epoch may end
    inside it: the call that raises StopIteration is then the epoch end."""
    for _ in range(batches):
        t = clock()
        try:
            consumer.consume(next(it))
        except StopIteration:
            return {"epoch_end_s": clock() - t}
        dog.beats += 1
    consumer.sync()
    return {}


def _drain(it: Iterator[Any], clock: Clock, dog: Watchdog, limit: int = 10_000) -> dict[str, float]:
    """Consume what is left of the epoch (untimed); time the call that raises StopIteration."""
    for _ in range(limit):
        t = clock()
        try:
            next(it)
        except StopIteration:
            return {"epoch_end_s": clock() - t}
        dog.beats += 1
    return {}
