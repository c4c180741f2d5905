"""Do the ranks read disjoint samples?  The checks behind "every sample of an epoch arrives exactly once".

:func:`epoch_indices` lists what each rank reads of a map-style epoch through the DataLoader that
:meth:`~loaderbench.config.LoaderConfig.dataloader_kwargs` builds for that rank (a ``DistributedSampler``);
:func:`expected_counts` is how often each index must arrive by ``DistributedSampler``'s and the DataLoader's
rules (padding without ``drop_last``, trimming with it).  :func:`sample_fingerprints` and :func:`same_samples`
detect a dataset that ignores the rank (an iterable dataset that does not shard by ``torch.distributed``'s
rank), whose ranks all read the same samples; :func:`same_samples_message` says so and gives the fix.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import pickle
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from loaderbench.config import LoaderConfig
from loaderbench.pipelines.base import set_sampler_epoch


def epoch_indices(config: LoaderConfig, dataset: Dataset[Any], *, epoch: int = 0, seed: int = 0) -> list[list[int]]:
    """For each rank of ``config.ranks``, the dataset indices its DataLoader yields in epoch ``epoch``
    (``set_epoch`` called as a training loop does).  ``dataset`` must return its index as the sample."""
    out: list[list[int]] = []
    for rank in range(config.ranks):
        kwargs = config.replace(num_workers=0).dataloader_kwargs(dataset, seed=seed, rank=rank)
        loader: DataLoader[Any] = DataLoader(dataset, **kwargs)
        set_sampler_epoch(kwargs.get("batch_sampler", kwargs.get("sampler")), epoch)
        got: list[int] = []
        for batch in loader:
            got.extend(int(i) for i in torch.as_tensor(batch).reshape(-1).tolist())
        out.append(got)
    return out


def expected_counts(length: int, ranks: int, batch_size: int | None, *, drop_last: bool) -> tuple[int, int]:
    """``(samples delivered, distinct samples delivered)`` in one epoch of ``length`` samples over ``ranks``
    ranks: ``DistributedSampler`` pads with repeated samples up to a multiple of ``ranks`` without
    ``drop_last`` and trims to one with it, then each rank's DataLoader drops its short last batch with it."""
    if drop_last:
        per_rank = length // ranks
        if batch_size:
            per_rank = per_rank // batch_size * batch_size
        return per_rank * ranks, per_rank * ranks
    per_rank = math.ceil(length / ranks)
    return per_rank * ranks, min(length, per_rank * ranks)


def duplicates(per_rank: Sequence[Iterable[int]]) -> dict[int, int]:
    """Indices that arrived more than once across all ranks, with their counts."""
    counts = Counter(itertools.chain.from_iterable(per_rank))
    return {i: n for i, n in counts.items() if n > 1}


def _digest(sample: Any) -> str:
    if isinstance(sample, torch.Tensor):
        data = sample.detach().cpu().contiguous().numpy().tobytes() + str(sample.shape).encode()
    elif isinstance(sample, (tuple, list)):
        data = "".join(_digest(s) for s in sample).encode()
    elif isinstance(sample, dict):
        data = "".join(f"{k}={_digest(v)}" for k, v in sorted(sample.items(), key=lambda kv: str(kv[0]))).encode()
    else:
        try:
            data = pickle.dumps(sample)
        except Exception:  # an unpicklable sample: no content to compare
            data = repr(sample).encode()
    return hashlib.blake2b(data, digest_size=12).hexdigest()


def sample_fingerprints(dataset: Iterable[Any], n: int = 4) -> list[str]:
    """Digests of the first ``n`` samples ``dataset`` yields in this process."""
    return [_digest(s) for s in itertools.islice(iter(dataset), n)]


def same_samples(per_rank: Sequence[Sequence[str]]) -> bool:
    """Whether every rank read the same samples: their first samples agree, and differ among themselves
    (a dataset of identical samples cannot tell)."""
    if len(per_rank) < 2 or not per_rank[0]:
        return False
    return all(list(fp) == list(per_rank[0]) for fp in per_rank) and len(set(per_rank[0])) > 1


def same_samples_message(case: str, ranks: int) -> str:
    return (
        f"case {case} failed: ranks read the same samples: all {ranks} ranks' first samples are identical, so the "
        "dataset ignores the rank and every rank reads the whole epoch (a data-parallel job would train on "
        f"{ranks} copies of each sample). Fix: shard in __iter__ by rank and worker (torch.distributed.get_rank() "
        "and get_world_size(), read in the main process, and torch.utils.data.get_worker_info()), or use a "
        "map-style dataset, which loaderbench (like a DDP job) reads through a DistributedSampler."
    )
