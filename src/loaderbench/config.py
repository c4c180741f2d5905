"""``LoaderConfig``: the one value that names a DataLoader setting.

A frozen, slotted dataclass goes from parametrization to the ``DataLoader``
call to the baseline key.  It validates with torch's own rules at
construction, including the two that torch only enforces at ``iter()``, so an
invalid combination never reaches a benchmark.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch.utils.data import BatchSampler, Dataset, IterableDataset, RandomSampler, SequentialSampler

from loaderbench import ids
from loaderbench.engine.collates import pad_collate
from loaderbench.errors import InvalidConfig

Batching = Literal["auto", "sampler"]

#: ``in_order`` was added to ``DataLoader`` in torch 2.6.
TORCH_HAS_IN_ORDER: bool = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 6)

#: DataLoader arguments that a ``LoaderConfig`` field (or the harness) sets.
COVERED_ARGUMENTS: dict[str, str] = {
    "batch_size": "batch_size (None disables auto-batching)",
    "shuffle": "shuffle (moved into the batch sampler when batching='sampler')",
    "sampler": "the harness passes none; shuffle chooses Random/SequentialSampler",
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

_START_METHODS = ("fork", "spawn", "forkserver")


def _identity_list(batch: list[Any]) -> list[Any]:
    """Collate that keeps the samples as a list (no stacking, no copy)."""
    return batch


#: ``collate="user"``: the workload's own collate function (``collate = "module:function"`` in its entry).
USER_COLLATE = "user"

#: Named collate functions.  Module-level functions, so they pickle under spawn.
COLLATES: dict[str, Callable[[Any], Any] | None] = {
    "default": None,
    "list": _identity_list,
    "pad": pad_collate,
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
    *ids.choices("multiprocessing_context", {m: m for m in _START_METHODS}),
    ids.Token("persistent_workers", word="persist", value=True),
    ids.Token("pin_memory", word="pin", value=True),
    ids.Token("in_order", word="unordered", value=False),
    ids.Token("shuffle", word="shuffle", value=True),
    ids.Token("drop_last", word="droplast", value=True),
    ids.Token("timeout", prefix="to", parse=_timeout, example="to30"),
    ids.Token("collate", prefix="collate_", parse=str, example="collate_list"),
    *ids.choices("sharing_strategy", {"share_filesystem": "file_system", "share_filedescriptor": "file_descriptor"}),
)


def _fail(name: str, value: object, why: str, fix: str) -> InvalidConfig:
    return InvalidConfig(f"{name}={value!r}: {why}. {fix}.")


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

    def __post_init__(self) -> None:
        _validate(self)

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
        return "-".join(parts)

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

    # --- DataLoader -----------------------------------------------------------------
    def check_dataset(self, dataset: Dataset[Any]) -> None:
        """Raise ``InvalidConfig`` for the combinations torch rejects for this dataset kind."""
        iterable = isinstance(dataset, IterableDataset)
        self.check_kind(iterable=iterable)
        if self.shuffle and not iterable and len(dataset) == 0:  # type: ignore[arg-type]
            raise _fail(
                "shuffle",
                True,
                "the dataset is empty and torch's RandomSampler refuses num_samples=0",
                "Use shuffle=False for an empty dataset",
            )

    def check_kind(self, *, iterable: bool) -> None:
        """Raise ``InvalidConfig`` if torch rejects this config for a map-style/iterable dataset."""
        if iterable:
            if self.shuffle:
                raise _fail(
                    "shuffle",
                    True,
                    "DataLoader cannot shuffle an IterableDataset",
                    "Shuffle inside the dataset instead",
                )
            if self.batching == "sampler":
                raise _fail(
                    "batching",
                    "sampler",
                    "an IterableDataset has no indices, so DataLoader refuses a batch_sampler",
                    "Use batching='auto'",
                )

    def dataloader_kwargs(
        self, dataset: Dataset[Any], *, seed: int = 0, user_collate: Callable[[Any], Any] | None = None
    ) -> dict[str, Any]:
        """The exact keyword arguments for ``DataLoader(dataset, **kwargs)``; ``user_collate`` is the
        collate function that ``collate="user"`` stands for."""
        self.check_dataset(dataset)
        if self.collate == USER_COLLATE:
            if user_collate is None:
                raise _fail(
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
        if self.batching == "sampler":
            assert self.batch_size is not None  # guaranteed by _validate
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
    def start_method(self) -> str | None:
        """The start method workers really use (the platform default when unset)."""
        if self.num_workers == 0:
            return None
        return self.multiprocessing_context or multiprocessing.get_start_method(allow_none=False)


def _validate(cfg: LoaderConfig) -> None:
    bs = cfg.batch_size
    if bs is not None and (isinstance(bs, bool) or not isinstance(bs, int) or bs < 1):
        raise _fail(
            "batch_size",
            bs,
            "must be a positive integer or None",
            "Use e.g. batch_size=32, or None to disable batching",
        )
    if isinstance(cfg.num_workers, bool) or not isinstance(cfg.num_workers, int) or cfg.num_workers < 0:
        raise _fail("num_workers", cfg.num_workers, "must be a non-negative integer", "Use 0 for in-process loading")
    if not isinstance(cfg.timeout, (int, float)) or cfg.timeout < 0:
        raise _fail("timeout", cfg.timeout, "must be non-negative", "Use 0 to wait forever")
    no_workers = cfg.num_workers == 0
    if no_workers and cfg.prefetch_factor is not None:
        raise _fail(
            "prefetch_factor",
            cfg.prefetch_factor,
            "only applies to worker processes and torch rejects it with num_workers=0",
            "Set num_workers>=1 or prefetch_factor=None",
        )
    if cfg.prefetch_factor is not None and cfg.prefetch_factor < 0:
        raise _fail("prefetch_factor", cfg.prefetch_factor, "must be non-negative", "Use 1 or more")
    if cfg.prefetch_factor == 0:
        raise _fail(
            "prefetch_factor",
            0,
            "torch accepts it at construction but fails with AssertionError at iter(loader)",
            "Use prefetch_factor>=1",
        )
    if no_workers and cfg.persistent_workers:
        raise _fail(
            "persistent_workers",
            True,
            "needs worker processes (num_workers=0)",
            "Set num_workers>=1 or persistent_workers=False",
        )
    if cfg.multiprocessing_context is not None:
        if cfg.multiprocessing_context not in multiprocessing.get_all_start_methods():
            raise _fail(
                "multiprocessing_context",
                cfg.multiprocessing_context,
                "is not a start method on this platform",
                f"Use one of {multiprocessing.get_all_start_methods()}",
            )
        if no_workers:
            raise _fail(
                "multiprocessing_context",
                cfg.multiprocessing_context,
                "only applies to worker processes and torch rejects it with num_workers=0",
                "Set num_workers>=1 or multiprocessing_context=None",
            )
    if no_workers and cfg.timeout > 0:
        raise _fail(
            "timeout",
            cfg.timeout,
            "torch accepts it with num_workers=0 but fails with AssertionError at iter(loader)",
            "Set num_workers>=1 or timeout=0",
        )
    if bs is None and cfg.drop_last:
        raise _fail(
            "drop_last",
            True,
            "has no meaning without batching (batch_size=None)",
            "Set drop_last=False or a batch_size",
        )
    if cfg.batching not in ("auto", "sampler"):
        raise _fail("batching", cfg.batching, "is not a batching mode", "Use 'auto' or 'sampler'")
    if cfg.batching == "sampler" and bs is None:
        raise _fail("batching", "sampler", "a batch_sampler needs a batch size (batch_size=None)", "Set batch_size>=1")
    if not cfg.in_order and not TORCH_HAS_IN_ORDER:
        raise _fail(
            "in_order",
            False,
            f"DataLoader has no in_order before torch 2.6 (torch {torch.__version__})",
            "Upgrade torch or drop in_order",
        )
    if cfg.collate not in COLLATES and cfg.collate != USER_COLLATE:
        raise _fail("collate", cfg.collate, "is not a known collate", f"Use one of {[*sorted(COLLATES), USER_COLLATE]}")
    strategies = torch.multiprocessing.get_all_sharing_strategies()  # type: ignore[no-untyped-call]
    if cfg.sharing_strategy not in strategies:
        raise _fail(
            "sharing_strategy",
            cfg.sharing_strategy,
            "is not a sharing strategy on this platform",
            f"Use one of {sorted(strategies)}",
        )
