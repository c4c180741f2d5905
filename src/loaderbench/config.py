"""``LoaderConfig``: the one value that names a DataLoader setting.

A frozen, slotted dataclass goes from parametrization to the ``DataLoader``
call to the baseline key.  It validates with torch's own rules at
construction, including the two that torch only enforces at ``iter()``, so an
invalid combination never reaches a benchmark.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch.utils.data import (
    BatchSampler,
    Dataset,
    DistributedSampler,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
)

from loaderbench import ids
from loaderbench.config_rules import (
    COLLATES,
    PIPELINE_FACTS,
    PIPELINES,
    START_METHODS,
    TORCH_HAS_IN_ORDER,
    USER_COLLATE,
    fail,
    loading_processes,
    validate,
)

__all__ = [
    "COLLATES",
    "COVERED_ARGUMENTS",
    "NOT_KNOBS",
    "PIPELINES",
    "TORCH_HAS_IN_ORDER",
    "USER_COLLATE",
    "LoaderConfig",
    "complete_stored",
]

Batching = Literal["auto", "sampler"]

#: DataLoader arguments that a ``LoaderConfig`` field (or the harness) sets.
COVERED_ARGUMENTS: dict[str, str] = {
    "batch_size": "batch_size (None disables auto-batching)",
    "shuffle": "shuffle (moved into the batch sampler when batching='sampler')",
    "sampler": "shuffle chooses Random/SequentialSampler; ranks > 1 passes a DistributedSampler",
    "batch_sampler": "batching='sampler' builds a BatchSampler from batch_size/shuffle/drop_last",
    "num_workers": "num_workers",
    "collate_fn": "collate (a named, picklable collate function)",
    "pin_memory": "pin_memory",
    "drop_last": "drop_last",
    "timeout": "timeout",
    "multiprocessing_context": "multiprocessing_context",
    "generator": "the harness seeds one generator per case, so shuffles are reproducible",
    "prefetch_factor": "prefetch_factor",
    "persistent_workers": "persistent_workers",
    "in_order": "in_order (torch >= 2.6)",
}

#: DataLoader arguments that are deliberately not knobs, and why.
NOT_KNOBS: dict[str, str] = {
    "self": "not an argument",
    "dataset": "supplied by the workload, not a setting",
    "worker_init_fn": "user hook; the simulated workloads need none and it does not change the pipeline's shape",
    "pin_memory_device": "deprecated since torch 2.5; the current accelerator is used when pin_memory=True",
}


def _timeout(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(text)
    return value


#: How each knob appears in a config id (``LoaderConfig.id`` writes them in this order).
_ID_TOKENS: tuple[ids.Token, ...] = (
    ids.Token("num_workers", prefix="w", parse=ids.digits, example="w2"),
    ids.Token("batch_size", word="nobatch", value=None),
    ids.Token("batch_size", prefix="bs", parse=ids.digits, example="bs64"),
    ids.Token("batching", word="bsampler", value="sampler"),
    ids.Token("prefetch_factor", prefix="pf", parse=ids.digits, example="pf4"),
    *ids.choices("multiprocessing_context", {m: m for m in START_METHODS}),
    ids.Token("persistent_workers", word="persist", value=True),
    ids.Token("pin_memory", word="pin", value=True),
    ids.Token("in_order", word="unordered", value=False),
    ids.Token("shuffle", word="shuffle", value=True),
    ids.Token("drop_last", word="droplast", value=True),
    ids.Token("timeout", prefix="to", parse=_timeout, example="to30"),
    ids.Token("collate", prefix="collate_", parse=str, example="collate_list"),
    *ids.choices("sharing_strategy", {"share_filesystem": "file_system", "share_filedescriptor": "file_descriptor"}),
    *ids.choices("pipeline", {p: p for p in PIPELINES if p != "dataloader"}),
    ids.Token("ranks", prefix="ranks", parse=ids.digits, example="ranks2"),
)


@dataclass(frozen=True, slots=True)
class LoaderConfig:
    """Every DataLoader knob that matters for throughput, plus the sharing strategy.

    ``batch_size=None`` disables auto-batching (each sample is passed on as it
    is).  ``batching='sampler'`` passes an explicit ``batch_sampler`` built from
    ``batch_size``, ``shuffle`` and ``drop_last`` instead of the three
    arguments.  ``sharing_strategy`` is not a DataLoader argument but the
    process-wide ``torch.multiprocessing`` tensor sharing strategy, which the
    harness sets for the duration of the case.
    """

    batch_size: int | None = 1
    num_workers: int = 0
    prefetch_factor: int | None = None
    persistent_workers: bool = False
    multiprocessing_context: str | None = None
    pin_memory: bool = False
    in_order: bool = True
    shuffle: bool = False
    drop_last: bool = False
    timeout: float = 0
    batching: Batching = "auto"
    collate: str = "default"
    sharing_strategy: str = "file_descriptor"
    pipeline: str = "dataloader"
    ranks: int = 1

    def __post_init__(self) -> None:
        validate(self)

    # --- identity -----------------------------------------------------------------
    @property
    def id(self) -> str:
        """Stable, readable id: the pytest test id and the baseline key.

        Worker count and batch size always appear; any other knob appears only
        when it differs from torch's default, in a fixed order.
        """
        parts = [f"w{self.num_workers}", "nobatch" if self.batch_size is None else f"bs{self.batch_size}"]
        if self.batching == "sampler":
            parts.append("bsampler")
        if self.prefetch_factor is not None:
            parts.append(f"pf{self.prefetch_factor}")
        if self.multiprocessing_context is not None:
            parts.append(self.multiprocessing_context)
        if self.persistent_workers:
            parts.append("persist")
        if self.pin_memory:
            parts.append("pin")
        if not self.in_order:
            parts.append("unordered")
        if self.shuffle:
            parts.append("shuffle")
        if self.drop_last:
            parts.append("droplast")
        if self.timeout:
            parts.append(f"to{self.timeout:g}")
        if self.collate != "default":
            parts.append(f"collate_{self.collate}")
        if self.sharing_strategy != "file_descriptor":
            parts.append(f"share_{self.sharing_strategy.replace('_', '')}")
        if self.pipeline != "dataloader":
            parts.append(self.pipeline)
        if self.ranks != 1:
            parts.append(f"ranks{self.ranks}")
        return ids.encode(parts)

    @classmethod
    def from_id(cls, text: str) -> LoaderConfig:
        """Parse an id written by :attr:`id` (for ``--loader-config`` and baselines)."""
        return cls(**ids.decode(text, _ID_TOKENS, name="config"))

    def replace(self, **changes: Any) -> LoaderConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """All fields, for JSON (``extra_info['loaderbench_config']``, baselines)."""
        return dataclasses.asdict(self)

    # --- stored configs (baselines and records written by this or an older version) ------
    def matches_stored(self, stored: Mapping[str, Any]) -> bool:
        """Whether ``stored`` (an :meth:`as_dict` written by this or an older loaderbench) is this config.

        The one rule for comparing a stored config: a field the stored config lacks (it was written
        before the field existed) reads as the field's default, which reproduces the behaviour from
        before the field was added (``pipeline="dataloader"``, ``ranks=1``); any field present with
        another value, or a key that is no field (written by a newer version), makes it another config.
        """
        return complete_stored(stored) == self.as_dict()

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any]) -> LoaderConfig:
        """The config a stored :meth:`as_dict` names, its missing fields read as their defaults
        (see :meth:`matches_stored`); raises ``InvalidConfig`` naming a key that is no field."""
        unknown = sorted(set(stored) - set(_DEFAULTS))
        if unknown:
            raise fail(
                f"config.{unknown[0]}",
                stored[unknown[0]],
                "is not a LoaderConfig field" + (f" (nor are {', '.join(unknown[1:])})" if unknown[1:] else ""),
                "It was written by a newer loaderbench: upgrade loaderbench, or re-record with this version",
            )
        return cls(**complete_stored(stored))

    # --- DataLoader -----------------------------------------------------------------
    def check_dataset(self, dataset: Dataset[Any]) -> None:
        """Raise ``InvalidConfig`` for the combinations torch rejects for this dataset kind."""
        iterable = isinstance(dataset, IterableDataset)
        self.check_kind(iterable=iterable)
        if self.shuffle and not iterable and len(dataset) == 0:  # type: ignore[arg-type]
            raise fail(
                "shuffle",
                True,
                "the dataset is empty and torch's RandomSampler refuses num_samples=0",
                "Use shuffle=False for an empty dataset",
            )

    def check_kind(self, *, iterable: bool) -> None:
        """Raise ``InvalidConfig`` if torch rejects this config for a map-style/iterable dataset."""
        if iterable:
            if self.shuffle:
                raise fail(
                    "shuffle",
                    True,
                    "DataLoader cannot shuffle an IterableDataset",
                    "Shuffle inside the dataset instead",
                )
            if self.batching == "sampler":
                raise fail(
                    "batching",
                    "sampler",
                    "an IterableDataset has no indices, so DataLoader refuses a batch_sampler",
                    "Use batching='auto'",
                )

    def dataloader_kwargs(
        self,
        dataset: Dataset[Any],
        *,
        seed: int = 0,
        user_collate: Callable[[Any], Any] | None = None,
        rank: int = 0,
    ) -> dict[str, Any]:
        """The exact keyword arguments for ``DataLoader(dataset, **kwargs)``; ``user_collate`` is the
        collate function that ``collate="user"`` stands for.  With ``ranks > 1`` a map-style dataset is
        read through a ``DistributedSampler`` for ``rank`` (shuffled with ``seed``; call its
        ``set_epoch`` between epochs); an iterable dataset shards itself by rank and worker."""
        self.check_dataset(dataset)
        if not 0 <= rank < self.ranks:
            raise fail("rank", rank, f"is not a rank of ranks={self.ranks}", f"Use 0..{self.ranks - 1}")
        if self.collate == USER_COLLATE:
            if user_collate is None:
                raise fail(
                    "collate",
                    USER_COLLATE,
                    "names the workload's own collate function, and this workload has none",
                    'Give the workload a collate = "module:function", or use a named collate',
                )
            collate_fn: Callable[[Any], Any] | None = user_collate
        else:
            collate_fn = COLLATES[self.collate]
        kwargs: dict[str, Any] = {
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
            "timeout": self.timeout,
            "collate_fn": collate_fn,
        }
        shuffle_generator = torch.Generator().manual_seed(seed) if self.shuffle else None
        if self.ranks > 1 and not isinstance(dataset, IterableDataset):
            sampler: DistributedSampler[Any] = DistributedSampler(
                dataset, num_replicas=self.ranks, rank=rank, shuffle=self.shuffle, seed=seed, drop_last=self.drop_last
            )
            if self.batching == "sampler":
                assert self.batch_size is not None  # guaranteed by validate
                kwargs["batch_sampler"] = BatchSampler(sampler, self.batch_size, self.drop_last)
            else:
                kwargs.update(sampler=sampler, batch_size=self.batch_size, drop_last=self.drop_last)
        elif self.batching == "sampler":
            assert self.batch_size is not None  # guaranteed by validate
            base = (
                RandomSampler(dataset, generator=shuffle_generator)  # type: ignore[arg-type]
                if self.shuffle
                else SequentialSampler(dataset)  # type: ignore[arg-type]
            )
            kwargs["batch_sampler"] = BatchSampler(base, self.batch_size, self.drop_last)
        else:
            kwargs.update(batch_size=self.batch_size, shuffle=self.shuffle, drop_last=self.drop_last)
            if shuffle_generator is not None:
                kwargs["generator"] = shuffle_generator
        if self.num_workers > 0:
            kwargs.update(
                prefetch_factor=self.prefetch_factor,
                persistent_workers=self.persistent_workers,
                multiprocessing_context=self.multiprocessing_context,
            )
        if TORCH_HAS_IN_ORDER:
            kwargs["in_order"] = self.in_order
        return kwargs

    def describe_kwargs(self) -> dict[str, Any]:
        """The DataLoader keyword arguments as plain JSON values (for ``extra_info['config']``)."""
        out: dict[str, Any] = {
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
            "timeout": self.timeout,
            "collate_fn": None if self.collate == "default" else self.collate,
        }
        if self.ranks > 1:
            out["sampler"] = f"DistributedSampler(num_replicas={self.ranks})"
        if self.batching == "sampler":
            out["batch_sampler"] = {
                "sampler": "RandomSampler" if self.shuffle else "SequentialSampler",
                "batch_size": self.batch_size,
                "drop_last": self.drop_last,
            }
        else:
            out.update(batch_size=self.batch_size, shuffle=self.shuffle, drop_last=self.drop_last)
        if self.num_workers > 0:
            out.update(
                prefetch_factor=self.prefetch_factor,
                persistent_workers=self.persistent_workers,
                multiprocessing_context=self.multiprocessing_context,
            )
        if TORCH_HAS_IN_ORDER:
            out["in_order"] = self.in_order
        return out

    @property
    def effective_prefetch_factor(self) -> int | None:
        """What torch uses: 2 when there are workers and none was given."""
        if self.num_workers == 0:
            return None
        return 2 if self.prefetch_factor is None else self.prefetch_factor

    @property
    def loading_processes(self) -> int:
        """Processes that load batches: every rank's workers, or each rank's main process without workers."""
        return loading_processes(self.ranks, self.num_workers)

    @property
    def start_method(self) -> str | None:
        """The start method workers really use (the platform default when unset); ``None`` when nothing
        starts a process: no workers, or a pipeline that loads in threads."""
        if self.num_workers == 0 or not PIPELINE_FACTS[self.pipeline].processes:
            return None
        return self.multiprocessing_context or multiprocessing.get_start_method(allow_none=False)


#: Every field's default: what a stored config without the field is read as.  A field added later must
#: default to the value that reproduces the behaviour from before it existed, so stored baselines keep
#: comparing (``pipeline`` and ``ranks`` were added after the first baselines were recorded).
_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(LoaderConfig)}


def complete_stored(stored: Mapping[str, Any]) -> dict[str, Any]:
    """``stored`` (a config as JSON, of any version) with each missing field set to its default, in field
    order; keys that are no field are kept (after the fields), so they still fail to match."""
    out = {name: stored.get(name, default) for name, default in _DEFAULTS.items()}
    out.update((str(k), v) for k, v in stored.items() if k not in _DEFAULTS)
    return out
