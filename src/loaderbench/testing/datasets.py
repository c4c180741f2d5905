"""Odd datasets for tests, as frozen specs: nested containers, every dtype, ragged lengths.

Specs are frozen values; the datasets they build (:class:`SpecDataset`,
:class:`SpecIterableDataset`, :class:`RaggedDataset`) are module-level classes
holding only specs, so they pickle under the spawn and forkserver start methods.
A sample is ``(index, payload)``: the index identifies it after collation, and
the payload is a deterministic function of the index, so any sample can be
rebuilt and compared.  :mod:`loaderbench.testing.strategies` draws them.

:class:`FailingWorkload` is a workload whose sample 40 raises, for the fault tests; its dataset is a class of
this module too, so it runs under every start method.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from loaderbench.workloads.recipes import Workload

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


# --- a workload whose dataset raises ------------------------------------------------------------------------------


class FailingDataset(Dataset[torch.Tensor]):
    """1000 samples of ``zeros(2)``; sample ``bad`` raises ``KeyError('sample <bad> is missing')``."""

    def __init__(self, bad: int = 40) -> None:
        self.bad = bad

    def __len__(self) -> int:
        return 1000

    def __getitem__(self, index: int) -> torch.Tensor:
        if index == self.bad:
            raise KeyError(f"sample {index} is missing")
        return torch.zeros(2)


@dataclass(frozen=True, slots=True)
class FailingWorkload(Workload):
    """A ``sleep`` workload whose dataset is a :class:`FailingDataset` (sample 40 raises), in a worker or not."""

    def build(self, length: int, workdir: Any = None) -> Dataset[Any]:
        return FailingDataset()
