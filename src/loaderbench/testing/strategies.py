"""Hypothesis strategies for DataLoader pipelines: odd datasets and valid ``LoaderConfig``s.

Use them in your own tests::

    from hypothesis import given
    from loaderbench.testing import strategies as lst  # needs hypothesis: pip install "loaderbench[test]"

    @given(spec=lst.dataset_specs(), config=lst.loader_configs())
    def test_my_pipeline(spec, config): ...

Every strategy takes keyword-only arguments.  The specs and datasets they draw
live in :mod:`loaderbench.testing.datasets` (which needs no hypothesis) and are
re-exported here.
"""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Sequence
from typing import Any

try:  # hypothesis is the optional `test` extra: without it, say which extra to install
    from hypothesis import strategies as st
except ImportError as exc:  # pragma: no cover - the test suite runs with hypothesis
    raise ImportError(
        "loaderbench.testing.strategies needs hypothesis, which loaderbench does not install by default. "
        'Install it with: pip install "loaderbench[test]" (or pip install hypothesis).'
    ) from exc

from loaderbench.config import COLLATES, TORCH_HAS_IN_ORDER, LoaderConfig
from loaderbench.testing.datasets import (
    _KEYS,
    CONTAINERS,
    DTYPES,
    NAMEDTUPLES,
    RECORDS,
    DatasetSpec,
    Named1,
    Named2,
    Named3,
    Node,
    RaggedDataset,
    RaggedSpec,
    Record1,
    Record2,
    Record3,
    SpecDataset,
    SpecIterableDataset,
    TensorSpec,
)

#: The strategies, and the specs and datasets they draw (from :mod:`loaderbench.testing.datasets`).
__all__ = [
    "CONTAINERS",
    "DTYPES",
    "NAMEDTUPLES",
    "RECORDS",
    "DatasetSpec",
    "Named1",
    "Named2",
    "Named3",
    "Node",
    "RaggedDataset",
    "RaggedSpec",
    "Record1",
    "Record2",
    "Record3",
    "SpecDataset",
    "SpecIterableDataset",
    "TensorSpec",
    "batch_sizes",
    "dataset_specs",
    "dtypes",
    "lengths",
    "loader_configs",
    "ragged_specs",
    "sample_nodes",
    "shapes",
    "tensor_specs",
]

# --- strategies -----------------------------------------------------------------------------------------------------


def _primes(limit: int) -> list[int]:
    return [n for n in range(2, limit + 1) if all(n % d for d in range(2, math.isqrt(n) + 1))]


def lengths(*, max_length: int = 64) -> st.SearchStrategy[int]:
    """Dataset lengths: 0 and 1 often, primes often (never divisible by a batch size > 1), anything else too."""
    primes = _primes(max_length)
    parts = [st.just(0), st.just(1), st.integers(min_value=0, max_value=max_length)]
    if primes:
        parts.append(st.sampled_from(primes))
    return st.one_of(parts)


def batch_sizes(*, max_size: int = 8) -> st.SearchStrategy[int]:
    return st.integers(min_value=1, max_value=max_size)


def dtypes(*, names: Sequence[str] = tuple(DTYPES)) -> st.SearchStrategy[str]:
    """torch dtype names: float16/32/64, bfloat16, int8/16/32/64, uint8 and bool by default."""
    unknown = set(names) - set(DTYPES)
    if unknown:
        raise ValueError(f"names={sorted(unknown)!r}: unknown dtypes. Use some of {sorted(DTYPES)}")
    return st.sampled_from(tuple(names))


def shapes(*, max_dims: int = 3, max_side: int = 4, allow_empty: bool = True) -> st.SearchStrategy[tuple[int, ...]]:
    """Tensor shapes: ``()`` (0-dim) up to ``max_dims`` dims; sides of 0 (an empty tensor) when ``allow_empty``."""
    side = st.integers(min_value=0 if allow_empty else 1, max_value=max_side)
    return st.lists(side, min_size=0, max_size=max_dims).map(tuple)


def tensor_specs(
    *, max_dims: int = 3, max_side: int = 4, allow_empty: bool = True, dtype_names: Sequence[str] = tuple(DTYPES)
) -> st.SearchStrategy[TensorSpec]:
    return st.builds(
        TensorSpec,
        shape=shapes(max_dims=max_dims, max_side=max_side, allow_empty=allow_empty),
        dtype=dtypes(names=dtype_names),
    )


def sample_nodes(
    *,
    max_depth: int = 2,
    containers: Sequence[str] = CONTAINERS,
    numbers: bool = True,
    max_dims: int = 3,
    max_side: int = 4,
    allow_empty: bool = True,
    dtype_names: Sequence[str] = tuple(DTYPES),
) -> st.SearchStrategy[Node]:
    """Sample structures: tensor leaves (and Python ints/floats when ``numbers``), nested up to ``max_depth``
    levels in the given ``containers`` (each holding 1 to 3 children)."""
    bad = set(containers) - set(CONTAINERS)
    if bad:
        raise ValueError(f"containers={sorted(bad)!r}: unknown. Use some of {CONTAINERS}")
    tensors = tensor_specs(max_dims=max_dims, max_side=max_side, allow_empty=allow_empty, dtype_names=dtype_names)
    leaf: st.SearchStrategy[Node] = st.builds(lambda t: Node("tensor", tensor=t), tensors)
    if numbers:
        leaf = st.one_of(leaf, st.sampled_from([Node("int"), Node("float")]))
    strategy = leaf
    for _ in range(max_depth if containers else 0):
        nested = st.tuples(st.sampled_from(tuple(containers)), st.lists(strategy, min_size=1, max_size=3)).map(
            lambda kc: Node(kc[0], tuple(kc[1]), _KEYS[: len(kc[1])] if kc[0] == "dict" else ())
        )
        strategy = st.one_of(leaf, nested)
    return strategy


def dataset_specs(
    *,
    max_length: int = 64,
    iterable: bool | None = False,
    max_depth: int = 2,
    containers: Sequence[str] = CONTAINERS,
    numbers: bool = True,
    max_dims: int = 3,
    max_side: int = 4,
    allow_empty: bool = True,
    dtype_names: Sequence[str] = tuple(DTYPES),
) -> st.SearchStrategy[DatasetSpec]:
    """Dataset specs; ``iterable=None`` draws map-style and iterable ones."""
    kinds = st.booleans() if iterable is None else st.just(iterable)
    return st.builds(
        DatasetSpec,
        length=lengths(max_length=max_length),
        sample=sample_nodes(
            max_depth=max_depth,
            containers=containers,
            numbers=numbers,
            max_dims=max_dims,
            max_side=max_side,
            allow_empty=allow_empty,
            dtype_names=dtype_names,
        ),
        iterable=kinds,
    )


def ragged_specs(
    *, max_length: int = 64, max_len: int = 6, max_feature_dims: int = 2, max_side: int = 3
) -> st.SearchStrategy[RaggedSpec]:
    """Variable-length sequences (lengths 0 to ``max_len``) with a fixed feature shape, any dtype."""
    return st.builds(
        RaggedSpec,
        length=lengths(max_length=max_length),
        max_len=st.integers(min_value=1, max_value=max_len),
        feature=shapes(max_dims=max_feature_dims, max_side=max_side),
        dtype=dtypes(),
        seed=st.integers(min_value=0, max_value=6),
    )


def loader_configs(
    *,
    iterable: bool = False,
    min_workers: int = 0,
    max_workers: int = 2,
    max_batch_size: int = 8,
    shuffle: bool | None = None,
    unbatched: bool = True,
    start_methods: Sequence[str | None] = (None, "fork", "spawn", "forkserver"),
    prefetch_factors: Sequence[int | None] = (None, 1, 2, 4),
    collates: Sequence[str] = ("default",),
    sharing_strategies: Sequence[str] = ("file_descriptor",),
    timeouts: Sequence[float] = (0,),
    pin_memory: bool = False,
) -> st.SearchStrategy[LoaderConfig]:
    """``LoaderConfig``s from the valid space only (for a map-style dataset, or an iterable one).

    Workers ``min_workers`` to ``max_workers``; with workers, a prefetch factor, persistence,
    a start method (those this platform lacks are left out) and a timeout from
    ``timeouts``; batch sizes 1 to ``max_batch_size`` or ``None``
    (``unbatched``); both batching modes, shuffle and drop_last where the
    dataset kind allows (``shuffle=True/False`` fixes it); ``in_order`` both
    ways where torch has it.  Prefer
    ``start_methods=("fork",)`` in property tests: spawn costs about 1 s per
    worker start.
    """
    available = set(multiprocessing.get_all_start_methods())
    methods = tuple(m for m in start_methods if m is None or m in available) or (None,)
    if not 0 <= min_workers <= max_workers:
        raise ValueError(f"min_workers={min_workers!r}: must be between 0 and max_workers={max_workers!r}")
    if iterable and shuffle:
        raise ValueError("shuffle=True: DataLoader cannot shuffle an IterableDataset. Use shuffle=None or False")
    for name in collates:
        if name not in COLLATES:
            raise ValueError(f"collates={name!r}: not a named collate. Use some of {sorted(COLLATES)}")

    @st.composite
    def build(draw: st.DrawFn) -> LoaderConfig:
        workers = draw(st.integers(min_value=min_workers, max_value=max_workers))
        sizes = st.integers(min_value=1, max_value=max_batch_size)
        batch_size = draw(st.one_of(st.none(), sizes) if unbatched else sizes)
        batching = "auto" if batch_size is None or iterable else draw(st.sampled_from(("auto", "sampler")))
        kwargs: dict[str, Any] = {
            "num_workers": workers,
            "batch_size": batch_size,
            "batching": batching,
            "shuffle": False if iterable else (draw(st.booleans()) if shuffle is None else shuffle),
            "drop_last": False if batch_size is None else draw(st.booleans()),
            "in_order": draw(st.booleans()) if TORCH_HAS_IN_ORDER else True,
            "collate": draw(st.sampled_from(tuple(collates))),
            "sharing_strategy": draw(st.sampled_from(tuple(sharing_strategies))),
            "pin_memory": draw(st.booleans()) if pin_memory else False,
        }
        if workers:
            kwargs.update(
                prefetch_factor=draw(st.sampled_from(tuple(p for p in prefetch_factors if p != 0) or (None,))),
                persistent_workers=draw(st.booleans()),
                multiprocessing_context=draw(st.sampled_from(methods)),
                timeout=draw(st.sampled_from(tuple(timeouts))),
            )
        return LoaderConfig(**kwargs)

    return build()
