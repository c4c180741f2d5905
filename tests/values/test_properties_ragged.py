"""Ragged samples (hypothesis; behaviour only, never timings): the padding collate pads variable-length
sequences and keeps every container, dataclasses included, and a batch that cannot be collated fails its case
with the harness's one paragraph naming the shapes.

The slower tests run a share of the profile's ``max_examples`` (the ``share-*`` settings profiles of
tests/values/conftest.py); a case with workers uses fork.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, Dataset

from loaderbench import CaseFailed, LoaderConfig, Plan, measure
from loaderbench.collates import Padded, pad_collate
from loaderbench.testing import strategies as lst
from loaderbench.workloads.recipes import Workload

# --- the padding collate ----------------------------------------------------------------------------------------------


@given(spec=lst.ragged_specs(max_length=30), batch_size=lst.batch_sizes(max_size=6))
def test_the_padding_collate_pads_ragged_sequences(spec: lst.RaggedSpec, batch_size: int) -> None:
    seen = []
    for indices, padded in DataLoader(spec.build(), batch_size=batch_size, collate_fn=pad_collate):
        assert isinstance(padded, Padded) and indices.dtype == torch.int64
        lengths = [spec.seq_len(int(i)) for i in indices]
        assert padded.lengths.tolist() == lengths and padded.lengths.dtype == torch.int64
        assert tuple(padded.values.shape) == (len(lengths), max(lengths), *spec.feature)
        assert padded.values.dtype == getattr(torch, spec.dtype)
        for row, i in enumerate(indices.tolist()):
            assert torch.equal(padded.values[row, : lengths[row]], spec.item(i)[1])
            assert not padded.values[row, lengths[row] :].any()
        seen += indices.tolist()
    assert seen == list(range(spec.length))


def check_padded(node: lst.Node, got: Any, indices: list[int]) -> None:
    """``got`` is pad_collate of ``[node.make(i) for i in indices]``: tensors with a dimension padded (here all
    of one length), 0-dim tensors and numbers stacked, every container kept as its own type."""
    if node.kind == "tensor":
        assert node.tensor is not None
        want = torch.stack([node.tensor.make(i) for i in indices])
        if node.tensor.shape:
            assert isinstance(got, Padded)
            assert got.lengths.tolist() == [node.tensor.shape[0]] * len(indices)
            got = got.values
        assert isinstance(got, torch.Tensor) and got.dtype == want.dtype and torch.equal(got, want)
        return
    if node.kind in ("int", "float"):
        assert isinstance(got, torch.Tensor) and got.tolist() == [node.make(i) for i in indices]
        return
    assert type(got) is type(node.make(0))
    if node.kind == "dict":
        parts = list(got.values())
    elif node.kind == "dataclass":
        parts = [getattr(got, f.name) for f in dataclasses.fields(got)]
    else:
        parts = list(got)
    for child, part in zip(node.children, parts, strict=True):
        check_padded(child, part, indices)


@settings.get_profile("share-0.6")
@given(spec=lst.dataset_specs(max_length=9, max_depth=2), batch_size=lst.batch_sizes(max_size=4))
def test_the_padding_collate_keeps_every_container_including_dataclasses(
    spec: lst.DatasetSpec, batch_size: int
) -> None:
    seen = []
    for batch in DataLoader(spec.build(), batch_size=batch_size, collate_fn=pad_collate):
        assert type(batch) is tuple
        indices = batch[0].tolist()
        check_padded(spec.sample, batch[1], indices)
        seen += indices
    assert seen == list(range(spec.length))


# --- an uncollatable sample gives the harness's clear error -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RaggedWorkload(Workload):
    """A workload over a ragged spec (``params['spec']``), stretched to the epoch the harness asks for."""

    def build(self, length: int, workdir: Any = None) -> Dataset[Any]:
        return dataclasses.replace(self.params["spec"], length=length).build()


TINY_PLAN = Plan(rounds=1, round_s=0.001, warmup_batches=1, min_batches_per_round=1, next_epoch=False)


@settings.get_profile("share-0.4")
@given(
    spec=lst.ragged_specs(max_len=5),
    batch_size=st.integers(min_value=2, max_value=5),
    workers=st.sampled_from([0, 0, 1]),
)
def test_an_uncollatable_batch_fails_the_case_naming_the_shapes(
    spec: lst.RaggedSpec, batch_size: int, workers: int
) -> None:
    # max_len <= 5, so samples 0 and 1 differ in length: the first batch cannot be stacked
    wl = RaggedWorkload(name="ragged", kind="sleep", batch_size=batch_size, params={"latency_s": 1e-4, "spec": spec})
    config = LoaderConfig(
        batch_size=batch_size, num_workers=workers, multiprocessing_context="fork" if workers else None
    )
    with pytest.raises(CaseFailed) as info:
        measure(wl, config, plan=TINY_PLAN)
    shapes = [[spec.seq_len(i), *spec.feature] for i in range(batch_size)]
    k = next(j for j, s in enumerate(shapes) if s != shapes[0])
    text = str(info.value)
    assert text.startswith(f"case ragged-cpu-{config.id} failed: samples in one batch cannot be collated")
    tensor = f"a {spec.dtype} tensor of shape"
    assert f"differ at sample[1]: entry 0 holds {tensor} {shapes[0]} and entry {k} holds {tensor} {shapes[k]}" in text
    assert "Remedy:" in text and "pad" in text and "\n" not in text
