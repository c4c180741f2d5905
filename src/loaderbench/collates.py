"""Collate functions beyond torch's ``default_collate``.

* :func:`pad_collate` pads ragged sequences (meant to be registered as the
  named collate ``"pad"`` in ``loaderbench.config.COLLATES``);
* :class:`ExplainingCollate` is the pass-through the harness wraps around every
  case's collate function: when collation fails, it raises
  :class:`CollateError` naming where the samples differ and their shapes, in
  the worker where it happened (torch's own errors there can be as cryptic as
  "Trying to resize storage that is not resizable").

Module-level, so they pickle under the spawn and forkserver start methods.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch.utils.data import default_collate, default_convert


class Padded(NamedTuple):
    """A batch of sequences padded with zeros along their first dimension.

    ``values[b, :lengths[b]]`` is sample ``b``; the rest of ``values[b]`` is zero.
    """

    values: torch.Tensor  # (batch, longest, *feature)
    lengths: torch.Tensor  # (batch,), int64


def pad_collate(batch: Sequence[Any]) -> Any:
    """Collate samples whose tensors differ in length along their first dimension.

    Every tensor with at least one dimension becomes a :class:`Padded`
    ``(values, lengths)``, padded with zeros to the longest in the batch (so the
    result's structure does not depend on whether a batch happens to be ragged).
    0-dim tensors are stacked; numbers and strings are collated as
    ``default_collate`` does.  Containers keep their type: tuples, lists,
    dicts, namedtuples and dataclasses (which ``default_collate`` rejects) are
    collated field by field.  Tensors that differ in any other dimension, or in
    dtype, raise ``RuntimeError`` naming both shapes.
    """
    if len(batch) == 0:
        raise ValueError("pad_collate got an empty batch")
    elem = batch[0]
    if isinstance(elem, torch.Tensor):
        return _pad([_same_kind(elem, t, i) for i, t in enumerate(batch)]) if elem.dim() else torch.stack(list(batch))
    if dataclasses.is_dataclass(elem) and not isinstance(elem, type):
        names = [f.name for f in dataclasses.fields(elem) if f.init]
        return type(elem)(**{n: pad_collate([getattr(s, n) for s in batch]) for n in names})
    if isinstance(elem, Mapping):
        return type(elem)({k: pad_collate([s[k] for s in batch]) for k in elem})  # type: ignore[call-arg]
    if isinstance(elem, tuple) and hasattr(elem, "_fields"):  # namedtuple
        return type(elem)(*(pad_collate(list(field)) for field in zip(*batch, strict=True)))
    if isinstance(elem, (tuple, list)):
        if any(len(s) != len(elem) for s in batch):
            raise RuntimeError("pad_collate: samples hold sequences of different lengths; they cannot be zipped")
        return type(elem)(pad_collate(list(field)) for field in zip(*batch, strict=True))
    return default_collate(list(batch))


def _same_kind(first: torch.Tensor, other: Any, entry: int) -> torch.Tensor:
    if not isinstance(other, torch.Tensor) or other.dim() != first.dim() or other.shape[1:] != first.shape[1:]:
        shape = list(other.shape) if isinstance(other, torch.Tensor) else type(other).__name__
        raise RuntimeError(
            f"pad_collate pads only the first dimension, but got {list(first.shape)} at entry 0 "
            f"and {shape} at entry {entry}"
        )
    if other.dtype != first.dtype:
        raise RuntimeError(f"pad_collate got dtype {first.dtype} at entry 0 and {other.dtype} at entry {entry}")
    return other


def _pad(tensors: list[torch.Tensor]) -> Padded:
    longest = max(t.shape[0] for t in tensors)
    first = tensors[0]
    values = first.new_zeros((len(tensors), longest, *first.shape[1:]))
    for row, t in enumerate(tensors):
        values[row, : t.shape[0]] = t
    lengths = torch.tensor([t.shape[0] for t in tensors], dtype=torch.int64)
    return Padded(values, lengths)


class CollateError(RuntimeError):
    """Samples in one batch that the collate function could not combine; the message says where they differ.

    Deliberately not a ``LoaderbenchError``: it is raised inside workers and
    explained by the harness like any other failure.
    """


class ExplainingCollate:
    """Calls ``fn`` (``None``: what DataLoader would use); if it raises and the samples differ in structure,
    shape or dtype, raises :class:`CollateError` naming the first difference instead."""

    __slots__ = ("fn",)

    def __init__(self, fn: Any, *, auto_batching: bool) -> None:
        self.fn = fn if fn is not None else (default_collate if auto_batching else default_convert)

    def __call__(self, batch: Any) -> Any:
        try:
            return self.fn(batch)
        except Exception as exc:
            difference = first_difference(batch) if isinstance(batch, list) else None
            if difference is None:
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise CollateError(f"{difference} ({type(exc).__name__}: {first[:200]})") from exc


def _leaves(obj: Any, path: str, out: list[tuple[str, str]]) -> None:
    if isinstance(obj, torch.Tensor):
        out.append((path, f"a {str(obj.dtype).removeprefix('torch.')} tensor of shape {list(obj.shape)}"))
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out.append((path, f"a {type(obj).__name__}"))
    elif isinstance(obj, Mapping):
        out.append((path, f"a {type(obj).__name__} with keys {sorted(map(str, obj))}"))
        for key in obj:
            _leaves(obj[key], f"{path}[{key!r}]", out)
    elif isinstance(obj, (tuple, list)):
        out.append((path, f"a {type(obj).__name__} of {len(obj)}"))
        for i, item in enumerate(obj):
            _leaves(item, f"{path}[{i}]", out)
    else:
        out.append((path, f"a {type(obj).__name__}"))


def first_difference(batch: Sequence[Any]) -> str | None:
    """Where the samples of ``batch`` first differ in structure, shape or dtype (None: they do not)."""
    if len(batch) < 2:
        return None
    first: list[tuple[str, str]] = []
    _leaves(batch[0], "sample", first)
    for entry, sample in enumerate(batch[1:], start=1):
        other: list[tuple[str, str]] = []
        _leaves(sample, "sample", other)
        for (path, mine), (other_path, theirs) in zip(first, other, strict=False):
            if (path, mine) != (other_path, theirs):
                at = "" if path == "sample" else f" at {path}"
                return f"samples in one batch differ{at}: entry 0 holds {mine} and entry {entry} holds {theirs}"
        if len(first) != len(other):  # pragma: no cover - a container's size differs first
            return f"samples in one batch differ: entry 0 and entry {entry} have different structures"
    return None
