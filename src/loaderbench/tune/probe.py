"""The user's dataset before and after the search: the in-process probe, and the bottleneck it explains.

:func:`probe` fetches one batch's samples in this process (wall and CPU time per
sample, the collate time, the bytes per sample); :func:`classify` reads it
together with the search's trials and names the bottleneck (I/O-, CPU-,
IPC/transfer- or consumer-bound) with the numbers that say so.
"""

from __future__ import annotations

import math
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import IterableDataset, default_collate

from loaderbench.engine.batches import tensor_bytes
from loaderbench.errors import WorkloadError
from loaderbench.formatting import fmt_bytes, fmt_rate
from loaderbench.machine import affinity_cpus
from loaderbench.report.cases import extra_float
from loaderbench.tune.search import Search, TuneSpec


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
            where = f"collate={spec.collate!r}" if spec.collate else "torch's default_collate"
            raise WorkloadError(
                f"factory={spec.factory!r}: {len(samples)} samples cannot be collated into a batch by {where} "
                f"({type(exc).__name__}: {first}). Return tensors, numbers or dicts/tuples of them with equal shapes, "
                "or give a collate 'module:function' that builds your batch."
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
    try:
        pickle.dumps(dataset)
    except Exception as exc:
        raise WorkloadError(
            f"factory={spec.factory!r}: the dataset cannot be pickled ({type(exc).__name__}: {exc}), and CUDA "
            "tuning starts workers with spawn, which pickles it. Keep only picklable state (no lambdas, open "
            "files or locks) or open them lazily in __getitem__."
        ) from None


@dataclass(frozen=True, slots=True)
class Bottleneck:
    kind: str
    evidence: tuple[str, ...]


def classify(search: Search, pr: Probe, spec: TuneSpec) -> Bottleneck:
    """I/O-bound, CPU-bound, IPC/transfer-bound or consumer-bound, with the numbers that say so."""
    best = search.recommended()
    cpus = affinity_cpus()
    plain = search.by_workers()
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
                f"a {spec.step_ms:g} ms step per batch of {spec.batch_size} caps the pipeline at {fmt_rate(cap)}; "
                f"the best config reaches {fmt_rate(best.median)} ({best.median / cap:.0%} of it)"
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
                f"one worker delivers {fmt_rate(plain[1].median)} against {fmt_rate(r0)} in-process "
                f"({plain[1].median / r0:.2f}x): handing {fmt_bytes(pr.bytes_per_sample)} per sample between "
                "processes costs more than loading it",
                f"the best config, {best.config.id}, reaches {fmt_rate(best.median)}",
                probe_line,
            ),
        )
    scaling = ""
    beyond = [n for n in plain if n > cpus and not math.isnan(plain[n].median)]
    at_cpus = [n for n in plain if 0 < n <= cpus]
    if beyond and at_cpus:
        hi, lo = max(beyond, key=lambda n: plain[n].median), max(at_cpus)
        scaling = (
            f"{hi} workers give {fmt_rate(plain[hi].median)} against {fmt_rate(plain[lo].median)} at {lo} "
            f"({plain[hi].median / plain[lo].median:.2f}x) on {cpus} CPUs"
        )
    if not math.isnan(pr.cpu_fraction) and pr.cpu_fraction < 0.5:
        lines = [probe_line, "the dataset mostly waits (I/O, sleeps, locks released), so workers overlap the waits"]
        return Bottleneck("I/O-bound", tuple(lines + ([scaling] if scaling else [])))
    lines = [probe_line, f"the dataset computes; workers can only run it in parallel on the {cpus} CPUs"]
    return Bottleneck("CPU-bound", tuple(lines + ([scaling] if scaling else [])))
