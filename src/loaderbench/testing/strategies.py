"""Hypothesis strategies for DataLoader pipelines: odd datasets and valid ``LoaderConfig``s.

Use them in your own tests::

    from hypothesis import given
    from loaderbench.testing import strategies as lst  # needs hypothesis: pip install "loaderbench[test]"

    @given(spec=lst.dataset_specs(), config=lst.loader_configs())
    def test_my_pipeline(spec, config): ...

Every strategy takes keyword-only arguments.  Specs are frozen values; the
datasets they build (:class:`SpecDataset`, :class:`SpecIterableDataset`,
:class:`RaggedDataset`) are module-level classes holding only specs, so they
pickle under the spawn and forkserver start methods.  A sample is
``(index, payload)``: the index identifies it after collation, and the payload
is a deterministic function of the index, so any sample can be rebuilt and
compared.
"""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

try:  # hypothesis is the optional `test` extra: without it, say which extra to install
    from hypothesis import strategies as st
except ImportError as exc:  # pragma: no cover - the test suite runs with hypothesis
    raise ImportError(
        "loaderbench.testing.strategies needs hypothesis, which loaderbench does not install by default. "
        'Install it with: pip install "loaderbench[test]" (or pip install hypothesis).'
    ) from exc
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from loaderbench.config import COLLATES, TORCH_HAS_IN_ORDER, LoaderConfig

#: dtype name -> modulus that keeps ``index % modulus`` exact in that dtype.
DTYPES: dict[str, int] = {
    "float16": 2048,
    "bfloat16": 256,
    "float32": 65_521,
    "float64": 65_521,
    "int8": 127,
    "int16": 32_749,
    "int32": 65_521,
    "int64": 65_521,
    "uint8": 251,
    "bool": 2,
}
CONTAINERS = ("tuple", "list", "dict", "namedtuple", "dataclass")
_KEYS = ("a", "b", "c", "d")


# --- containers a sample can be nested in (module level, so they pickle) ------------------------------------------


class Named1(NamedTuple):
    a: Any


class Named2(NamedTuple):
    a: Any
    b: Any


class Named3(NamedTuple):
    a: Any
    b: Any
    c: Any


@dataclass(frozen=True, slots=True, eq=False)
class Record1:
    a: Any


@dataclass(frozen=True, slots=True, eq=False)
class Record2:
    a: Any
    b: Any


@dataclass(frozen=True, slots=True, eq=False)
class Record3:
    a: Any
    b: Any
    c: Any


NAMEDTUPLES: tuple[type, ...] = (Named1, Named2, Named3)
RECORDS: tuple[type, ...] = (Record1, Record2, Record3)


# --- specs ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A tensor of ``shape`` (``()`` is 0-dim; a 0 anywhere makes it empty) and ``dtype`` (a torch dtype name)."""

    shape: tuple[int, ...]
    dtype: str

    def make(self, index: int) -> torch.Tensor:
        """Deterministic contents: ``(position + index) % modulus``, exact in the dtype."""
        numel = math.prod(self.shape)
        values = (torch.arange(numel, dtype=torch.int64) + index) % DTYPES[self.dtype]
        return values.reshape(self.shape).to(getattr(torch, self.dtype))


@dataclass(frozen=True, slots=True)
class Node:
    """One node of a sample's structure.

    ``kind`` is ``"tensor"`` (``tensor`` is set), ``"int"`` or ``"float"``
    (Python numbers), ``"index"`` (the sample's index itself), or a container: ``"tuple"``, ``"list"``, ``"dict"``
    (``keys`` name the children), ``"namedtuple"`` or ``"dataclass"``.
    """

    kind: str
    children: tuple[Node, ...] = ()
    keys: tuple[str, ...] = ()
    tensor: TensorSpec | None = None

    def make(self, index: int) -> Any:
        if self.kind == "tensor":
            assert self.tensor is not None
            return self.tensor.make(index)
        if self.kind == "index":
            return index
        if self.kind == "int":
            return 3 * index - 1
        if self.kind == "float":
            return index / 4
        parts = [child.make(index) for child in self.children]
        if self.kind == "tuple":
            return tuple(parts)
        if self.kind == "list":
            return parts
        if self.kind == "dict":
            return dict(zip(self.keys, parts, strict=True))
        if self.kind == "namedtuple":
            return NAMEDTUPLES[len(parts) - 1](*parts)
        if self.kind == "dataclass":
            return RECORDS[len(parts) - 1](*parts)
        raise ValueError(f"kind={self.kind!r}: not a sample node kind")

    def contains(self, kind: str) -> bool:
        return self.kind == kind or any(c.contains(kind) for c in self.children)

    def tensors(self) -> list[TensorSpec]:
        """Every tensor leaf, depth first."""
        own = [self.tensor] if self.tensor is not None else []
        return own + [t for c in self.children for t in c.tensors()]


@dataclass(frozen=True, slots=True)
class DatasetSpec:
    """A dataset of ``length`` samples ``(index, sample.make(index))``, map-style or iterable."""

    length: int
    sample: Node
    iterable: bool = False

    @property
    def structure(self) -> Node:
        """The structure of a whole sample: ``(index, payload)``."""
        return Node("tuple", (Node("index"), self.sample))

    def item(self, index: int) -> tuple[int, Any]:
        return index, self.sample.make(index)

    def build(self) -> Dataset[Any]:
        return SpecIterableDataset(self) if self.iterable else SpecDataset(self)


@dataclass(frozen=True, slots=True)
class RaggedSpec:
    """Variable-length sequences: sample ``i`` is ``(i, seq)``, ``seq`` of shape ``(seq_len(i), *feature)``."""

    length: int
    max_len: int
    feature: tuple[int, ...]
    dtype: str
    seed: int = 0

    def seq_len(self, index: int) -> int:
        return (index * 7 + self.seed) % (self.max_len + 1)

    def item(self, index: int) -> tuple[int, torch.Tensor]:
        return index, TensorSpec((self.seq_len(index), *self.feature), self.dtype).make(index)

    def build(self) -> Dataset[Any]:
        return RaggedDataset(self)


# --- datasets (module level, so they pickle under spawn) ------------------------------------------------------------


class SpecDataset(Dataset[Any]):
    """Map-style dataset of a :class:`DatasetSpec`."""

    def __init__(self, spec: DatasetSpec) -> None:
        self.spec = spec

    def __len__(self) -> int:
        return self.spec.length

    def __getitem__(self, index: int) -> Any:
        if not 0 <= index < self.spec.length:
            raise IndexError(index)
        return self.spec.item(index)


class SpecIterableDataset(IterableDataset[Any]):
    """Iterable dataset of a :class:`DatasetSpec`; worker ``k`` of ``n`` yields indices ``k, k+n, ...``."""

    def __init__(self, spec: DatasetSpec) -> None:
        self.spec = spec

    def __len__(self) -> int:
        return self.spec.length

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        start, step = (0, 1) if info is None else (info.id, info.num_workers)
        for index in range(start, self.spec.length, step):
            yield self.spec.item(index)


class RaggedDataset(Dataset[Any]):
    """Map-style dataset of a :class:`RaggedSpec`."""

    def __init__(self, spec: RaggedSpec) -> None:
        self.spec = spec

    def __len__(self) -> int:
        return self.spec.length

    def __getitem__(self, index: int) -> Any:
        if not 0 <= index < self.spec.length:
            raise IndexError(index)
        return self.spec.item(index)


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
