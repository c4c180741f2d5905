"""What each rank runs: ``python -m torch.distributed.run ... -m loaderbench.ranks.rank_main --case FILE --out DIR``.

1. join the process group that torchrun's environment describes (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...):
   gloo on CPU, NCCL on CUDA with this rank's GPU (``LOCAL_RANK``);
2. agree on the epoch: every rank sizes it, and all take the largest batches-per-round, so the timed rounds
   have the same batch count on every rank (a collective one rank skipped would hang the others);
3. (an iterable user dataset) check that the ranks do not read the same samples;
4. measure the case with the harness, its consumer wrapped in :class:`~loaderbench.ranks.sync.SyncConsumer`
   (the per-step all-reduce), the rank's DataLoader over a ``DistributedSampler`` (or the iterable dataset's
   own rank-and-worker sharding);
5. gather every rank's measurement on rank 0 (``gather_object``), which combines them
   (:func:`~loaderbench.ranks.combine.combine`) and writes ``result.json`` into ``--out``.

A rank that fails writes ``rank<R>.error.json`` (the ``CaseFailed``'s message, kind and phase) and exits 1;
torchrun then stops the other ranks.  A rank that was only waiting at the collective for a failed rank
(kind ``rank-wait``) first gives that rank a moment to write its own error, the root cause.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pickle
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import IterableDataset

from loaderbench.engine.case import Case, make_consumer
from loaderbench.engine.consumers import Consumer, StepConsumer
from loaderbench.engine.harness import measure
from loaderbench.engine.plan import Plan, estimate_samples_per_s, plan_epoch
from loaderbench.errors import CaseFailed, FailureKind
from loaderbench.machine import affinity_cpus
from loaderbench.measurement import Measurement
from loaderbench.ranks.combine import combine
from loaderbench.ranks.coverage import same_samples, same_samples_message, sample_fingerprints
from loaderbench.ranks.launch import RESULT, Job, done_path, error_path, write_json
from loaderbench.ranks.sync import SyncConsumer, all_reduce_step, synced_runner

#: How long a rank stuck at the collective waits for the failed rank's own error before it exits.
ROOT_CAUSE_GRACE_S = 10.0


def group_timeout_s(plan: Plan) -> float:
    """The collectives' timeout: a backstop behind the harness's own watchdog (``batch_timeout_s``)."""
    return 1800.0 if plan.batch_timeout_s == float("inf") else max(30.0, 2 * plan.batch_timeout_s)


def agreed_batches_per_round(case: Case, plan: Plan) -> int:
    """Every rank's batches per round sized as the harness would; all take the largest.  A rank whose pilot
    fails offers nothing (the harness then fails on it with its own explained error)."""
    mine: int | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="loaderbench-rank-") as where:
            rate = estimate_samples_per_s(case.workload, case.config, where)
        mine = plan_epoch(case.workload, case.config, plan, rate).batches_per_round
    except Exception:
        mine = None
    offers: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(offers, mine)
    known = [int(k) for k in offers if k is not None]
    return max(known) if known else plan.min_batches_per_round


def check_disjoint(case: Case, rank: int, ranks: int) -> None:
    """A user's iterable dataset must shard by rank: its first samples on all ranks must not be the same."""
    if case.workload.kind != "user":
        return  # the suite's own datasets shard by rank (or are read through a DistributedSampler)
    fingerprints: list[str] = []
    try:
        dataset = case.workload.build(1)
        if isinstance(dataset, IterableDataset):
            fingerprints = sample_fingerprints(dataset)
    except Exception:
        fingerprints = []  # the harness reports the dataset's own failure
    everyone: list[Any] = [None] * ranks
    dist.all_gather_object(everyone, fingerprints)
    if same_samples([list(f or []) for f in everyone]):
        raise CaseFailed(
            same_samples_message(case.id, ranks),
            case=case.id,
            phase="checking the ranks' samples",
            kind=FailureKind.SAME_SAMPLES,
        )


def measure_rank(case: Case, plan: Plan, step_ms: float, rank: int, ranks: int) -> Measurement:
    """This rank's measurement of ``case``, stepping in lockstep with the other ranks."""
    k = agreed_batches_per_round(case, plan)
    plan = dataclasses.replace(plan, min_batches_per_round=k, max_batches_per_round=k)
    check_disjoint(case, rank, ranks)
    inner: Consumer = make_consumer(case)
    if step_ms > 0 and case.device == "cpu":
        inner = StepConsumer(step_ms)
    device = f"cuda:{torch.cuda.current_device()}" if case.device == "cuda" else "cpu"
    sync = SyncConsumer(inner, reduce=all_reduce_step(device), case=case.id, rank=rank, ranks=ranks)
    try:
        return measure(
            case.workload, case.config, device=case.device, plan=plan, consumer=sync, runner=synced_runner(sync)
        )
    except CaseFailed as exc:
        if sync.in_collective and exc.kind != FailureKind.RANK_WAIT:  # stopped while waiting for the others
            raise CaseFailed(
                f"case {case.id} failed: rank {rank} of {ranks} was waiting at the per-step all-reduce for "
                f"another rank when it was stopped ({exc})",
                case=case.id,
                phase=exc.phase,
                kind=FailureKind.RANK_WAIT,
            ) from None
        raise
    finally:
        sync.close()


def _fail(out: Path, rank: int, ranks: int, exc: CaseFailed) -> int:
    write_json(error_path(out, rank), {"rank": rank, "message": str(exc), "kind": exc.kind, "phase": exc.phase})
    if exc.kind == FailureKind.RANK_WAIT:  # let the rank that failed first report the root cause
        deadline = time.monotonic() + ROOT_CAUSE_GRACE_S
        while time.monotonic() < deadline:
            if any(error_path(out, r).exists() for r in range(ranks) if r != rank):
                break
            time.sleep(0.05)
    return 1


def _check_same_case(case: Case, rank: int, ranks: int) -> None:
    """Every rank must measure the same case: nodes whose runs fell out of step (one skipped or failed a case
    before launching) would otherwise join one rendezvous with different cases."""
    ids: list[Any] = [None] * ranks
    dist.all_gather_object(ids, case.id)
    if len(set(ids)) > 1:
        raise CaseFailed(
            f"case {case.id} failed: rank {rank} of {ranks}: the ranks run different cases "
            f"({', '.join(sorted(set(ids)))}). Run the same pytest command, with the same selection, on every node.",
            case=case.id,
            phase="joining the process group",
            kind=FailureKind.RANKS,
        )


def run(case: Case, plan: Plan, step_ms: float, out: Path) -> int:
    rank, ranks = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    backend = "gloo"
    if case.device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "nccl"
    try:
        dist.init_process_group(backend, timeout=timedelta(seconds=group_timeout_s(plan)))
    except Exception as exc:  # the rendezvous failed: say why, not only "exited with code 1"
        first = (str(exc).splitlines() or [""])[0]
        reason = f"case {case.id} failed: rank {rank} of {ranks} could not join the process group ({backend}): "
        return _fail(
            out,
            rank,
            ranks,
            CaseFailed(
                f"{reason}{type(exc).__name__}: {first}. Check the rendezvous endpoint and that every node runs "
                "the same case.",
                case=case.id,
                phase="joining the process group",
                kind=FailureKind.RANK_ERROR,
            ),
        )
    ready_at = time.time()
    try:
        _check_same_case(case, rank, ranks)
        m = measure_rank(case, plan, step_ms, rank, ranks)
    except CaseFailed as exc:
        return _fail(out, rank, ranks, exc)
    except Exception as exc:  # a collective of our own failed (another rank died), or a setup error here
        collective = isinstance(exc, (RuntimeError, ConnectionError))
        first = (str(exc).splitlines() or [""])[0]
        failed = CaseFailed(
            f"case {case.id} failed: rank {rank} of {ranks}: {type(exc).__name__}: {first}",
            case=case.id,
            phase="exchanging with the other ranks" if collective else "setting up the rank",
            kind=FailureKind.RANK_WAIT if collective else "rank-error",
        )
        return _fail(out, rank, ranks, failed)
    write_json(done_path(out, rank), {})
    payload = {"rank": rank, "measurement": m.to_json(), "ready_at": ready_at}
    gathered: list[Any] | None = [None] * ranks if rank == 0 else None
    dist.gather_object(payload, gathered, dst=0)
    if gathered is not None:
        per_rank = [Measurement.from_json(p["measurement"]) for p in sorted(gathered, key=lambda p: p["rank"])]
        loaders = case.config.loading_processes
        job = combine(per_rank, ideal_samples_per_s=case.workload.ideal_samples_per_s(loaders, affinity_cpus()))
        write_json(out / RESULT, {"measurement": job.to_json(), "ready_at": [p["ready_at"] for p in gathered]})
    dist.destroy_process_group()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loaderbench.ranks.rank_main", description=__doc__)
    parser.add_argument("--case", required=True, help="the pickled Job the launcher wrote")
    parser.add_argument("--out", required=True, help="the folder for result.json and rank errors")
    args = parser.parse_args(argv)
    with open(args.case, "rb") as f:
        job: Job = pickle.load(f)
    code = run(job.case, job.plan, job.step_ms, Path(args.out))
    sys.stdout.flush()
    sys.stderr.flush()
    if code:
        os._exit(code)  # not through the process group's destructor, which may wait on the failed ranks
    return code


if __name__ == "__main__":
    raise SystemExit(main())
