"""Simulated datasets driven by a seeded cost model.

Every class here is defined at module level and holds only plain values, so it
pickles under the spawn and forkserver start methods.  Per-sample costs are
deterministic functions of ``(seed, index)``: the same case costs the same on
every run, whichever worker draws the index.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, IterableDataset, get_worker_info


def spin(loops: int) -> int:
    """Pure-Python busy work that holds the GIL for ``loops`` iterations.

    Every iteration costs the same whatever ``loops`` is (the operands stay
    small ints), so a calibration on one loop count holds for another.
    """
    acc = 0
    for i in range(loops):
        j = i & 0x3FF
        acc = (acc + j * j) & 0xFFFF
    return acc


def sample_latency(seed: int, index: int, mean_s: float, sigma: float) -> float:
    """A log-normal latency with the given mean, a pure function of ``(seed, index)``.

    ``sigma`` is the log-space standard deviation; ``sigma=0`` is a fixed
    latency.  The log-space mean is shifted so that the expectation is
    ``mean_s`` whatever ``sigma`` is.
    """
    if sigma <= 0:
        return mean_s
    z = random.Random(seed * 1_000_003 + index).gauss(0.0, 1.0)
    return mean_s * math.exp(sigma * z - sigma * sigma / 2.0)


class _Sized(Dataset[Any]):
    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length


class SleepDataset(_Sized):
    """I/O-bound: each sample sleeps (releasing the GIL), then returns a tensor."""

    def __init__(self, length: int, *, latency_s: float, sigma: float, shape: Sequence[int], seed: int) -> None:
        super().__init__(length)
        self.latency_s, self.sigma, self.shape, self.seed = latency_s, sigma, tuple(shape), seed

    def __getitem__(self, index: int) -> torch.Tensor:
        if index < 0 or index >= self.length:
            raise IndexError(index)
        time.sleep(sample_latency(self.seed, index, self.latency_s, self.sigma))
        return torch.zeros(self.shape)


class SpinDataset(_Sized):
    """CPU-bound: each sample runs ``loops`` iterations of pure Python holding the GIL."""

    def __init__(self, length: int, *, loops: int, shape: Sequence[int]) -> None:
        super().__init__(length)
        self.loops, self.shape = loops, tuple(shape)

    def __getitem__(self, index: int) -> torch.Tensor:
        if index < 0 or index >= self.length:
            raise IndexError(index)
        spin(self.loops)
        return torch.zeros(self.shape)


class TensorFillDataset(_Sized):
    """Transfer-bound: each sample is a freshly written large tensor (e.g. 3x224x224 float32)."""

    def __init__(self, length: int, *, shape: Sequence[int], dtype: str) -> None:
        super().__init__(length)
        self.shape, self.dtype = tuple(shape), dtype

    def __getitem__(self, index: int) -> torch.Tensor:
        if index < 0 or index >= self.length:
            raise IndexError(index)
        return torch.full(self.shape, float(index % 251), dtype=getattr(torch, self.dtype))


class SkewedDataset(_Sized):
    """Heavy-tailed cost: every ``every``-th sample sleeps ``heavy_s``, the rest ``base_s``."""

    def __init__(self, length: int, *, base_s: float, heavy_s: float, every: int, shape: Sequence[int]) -> None:
        super().__init__(length)
        self.base_s, self.heavy_s, self.every, self.shape = base_s, heavy_s, every, tuple(shape)

    def __getitem__(self, index: int) -> torch.Tensor:
        if index < 0 or index >= self.length:
            raise IndexError(index)
        time.sleep(self.heavy_s if index % self.every == 0 else self.base_s)
        return torch.zeros(self.shape)


class FileDataset(_Sized):
    """Real reads: sample ``i`` is the bytes of file ``i % n_files`` in ``directory``, as uint8."""

    def __init__(self, length: int, *, directory: str, n_files: int) -> None:
        super().__init__(length)
        self.directory, self.n_files = directory, n_files

    def __getitem__(self, index: int) -> torch.Tensor:
        if index < 0 or index >= self.length:
            raise IndexError(index)
        path = os.path.join(self.directory, f"{index % self.n_files:06d}.bin")
        with open(path, "rb") as fh:
            data = bytearray(fh.read())
        return torch.frombuffer(data, dtype=torch.uint8)


class BigIndexDataset(_Sized):
    """Holds an index of ``index_size`` file paths, as a dataset over a large image folder does.

    Spawn and forkserver pickle the whole dataset into every worker, so start-up and the first batch
    grow with the index (pytorch#131931): the big-index canary.  Each sample looks its path up, sleeps
    ``latency_s`` (the read) and returns a small tensor.
    """

    def __init__(self, length: int, *, index_size: int, latency_s: float, shape: Sequence[int]) -> None:
        super().__init__(length)
        self.latency_s, self.shape = latency_s, tuple(shape)
        self.paths = [f"/data/imagenet/train/n{i // 1300:08d}/n{i // 1300:08d}_{i:07d}.JPEG" for i in range(index_size)]

    def __getitem__(self, index: int) -> torch.Tensor:
        if index < 0 or index >= self.length:
            raise IndexError(index)
        path = self.paths[index % len(self.paths)]
        time.sleep(self.latency_s)
        return torch.full(self.shape, float(len(path)))


class RepeatDataset(_Sized):
    """Wraps a fixed-size dataset so an epoch has ``length`` samples (index ``i % len(base)``)."""

    def __init__(self, base: Dataset[Any], length: int) -> None:
        super().__init__(length)
        self.base = base
        self.base_len = len(base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        if index < 0 or index >= self.length:
            raise IndexError(index)
        return self.base[index % self.base_len]


def dist_rank() -> tuple[int, int]:
    """``(rank, ranks)`` of this process under ``torch.distributed`` (``(0, 1)`` outside it).  Read in
    the main process when a dataset is built: spawned workers do not inherit the process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard_bounds(length: int, rank: int = 0, ranks: int = 1) -> range:
    """The indices this process should yield: the whole range in a single main process, a strided
    share inside worker ``k`` of ``n``, and with ``ranks`` ranks a strided share of ``rank`` (and of
    its worker): every index exactly once across all ranks and workers."""
    info = get_worker_info()
    workers, worker = (1, 0) if info is None else (info.num_workers, info.id)
    return range(rank * workers + worker, length, ranks * workers)


class IterableSleepDataset(IterableDataset[torch.Tensor]):
    """I/O-bound stream that shards across workers with ``get_worker_info()``.

    Yields ``(index, tensor)`` pairs when ``with_index`` is set, so tests can
    check that every sample arrives exactly once.
    """

    def __init__(self, length: int, *, latency_s: float, shape: Sequence[int], with_index: bool = False) -> None:
        self.length, self.latency_s, self.shape, self.with_index = length, latency_s, tuple(shape), with_index
        self.rank, self.ranks = dist_rank()

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[Any]:
        for index in shard_bounds(self.length, self.rank, self.ranks):
            if self.latency_s > 0:
                time.sleep(self.latency_s)
            sample = torch.zeros(self.shape)
            yield (index, sample) if self.with_index else sample


class IterableSpinDataset(IterableDataset[torch.Tensor]):
    """CPU-bound stream that shards across workers with ``get_worker_info()``."""

    def __init__(self, length: int, *, loops: int, shape: Sequence[int]) -> None:
        self.length, self.loops, self.shape = length, loops, tuple(shape)
        self.rank, self.ranks = dist_rank()

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[torch.Tensor]:
        for _ in shard_bounds(self.length, self.rank, self.ranks):
            spin(self.loops)
            yield torch.zeros(self.shape)
