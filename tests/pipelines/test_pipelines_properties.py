"""The loader properties, through every pipeline (hypothesis; behaviour only, never timings).

Every sample exactly once per epoch (two epochs, so a restarted mapper or pipeline starts clean), the
batch count, ``drop_last``, the sampler's order where ``in_order`` keeps it, and shapes, dtypes and
nesting surviving collate: each pipeline's batches equal what DataLoader's own collate makes of the
same samples.  Configs are drawn from the valid space and moved to each pipeline with
``registry.nearest`` (the knobs it has no equivalent for go back to their defaults); workers use fork.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from loaderbench.config import LoaderConfig
from loaderbench.config_rules import PIPELINES
from loaderbench.pipelines import registry
from loaderbench.testing import strategies as lst

SMALL = {"max_depth": 1, "max_dims": 2, "max_side": 3, "max_length": 30}
COLLATABLE = ("tuple", "list", "dict", "namedtuple")


def share(fraction: float) -> settings:
    """``fraction`` of the active profile's max_examples (ci: 25), at least 2."""
    return settings(
        max_examples=max(2, round(settings.default.max_examples * fraction)),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


def pipelines() -> list[Any]:
    out = []
    for name in PIPELINES:
        reason = registry.unavailable_reason(name)
        out.append(pytest.param(name, marks=pytest.mark.skipif(reason is not None, reason=reason or ""), id=name))
    return out


def configs(**kwargs: Any) -> st.SearchStrategy[LoaderConfig]:
    return lst.loader_configs(start_methods=("fork",), prefetch_factors=(None, 1, 3), **kwargs)


def run(pipeline: str, spec: lst.DatasetSpec, config: LoaderConfig, n_epochs: int) -> list[list[Any]]:
    """``n_epochs`` epochs of ``spec``'s dataset through ``pipeline``, as the harness drives it."""
    ds = spec.build()
    kwargs = config.dataloader_kwargs(ds)
    if kwargs["collate_fn"] is None:  # what DataLoader itself uses (the harness always passes one)
        kwargs["collate_fn"] = DataLoader(ds, batch_size=config.batch_size).collate_fn
    loader = registry.build(pipeline, ds, kwargs, config)
    epochs: list[list[Any]] = []
    live: list[Any] = []
    try:
        for epoch in range(n_epochs):
            loader.set_epoch(epoch)
            live[:] = [loader.start()]
            epochs.append(list(live[0]))
            if not config.persistent_workers:
                loader.release(live[0], [], "the epoch's")
    finally:
        for it in live:
            loader.stop(it)
        loader.close()
    return epochs


def indices_of(batch: Any, config: LoaderConfig) -> list[int]:
    """The sample indices in one batch (samples are ``(index, payload)``)."""
    if config.batch_size is None:
        return [int(batch[0])]
    if config.collate == "list":
        return [int(sample[0]) for sample in batch]
    return [int(i) for i in batch[0].tolist()]


@pytest.mark.slow
@pytest.mark.parametrize("pipeline", pipelines())
@share(0.6)
@given(data=st.data(), spec=lst.dataset_specs(containers=("tuple", "dict", "namedtuple"), **SMALL))
def test_every_sample_is_delivered_exactly_once_per_epoch(pipeline: str, data: Any, spec: lst.DatasetSpec) -> None:
    drawn = data.draw(configs(collates=("default", "list")), label="config")
    config = registry.nearest(drawn, pipeline)
    if spec.length == 0 and config.shuffle:
        return  # RandomSampler rejects an empty dataset (test_properties covers it)
    n, bs = spec.length, config.batch_size
    rnd = math.floor if config.drop_last else math.ceil
    want_batches = n if bs is None else rnd(n / bs)
    for batches in run(pipeline, spec, config, 2):
        got = Counter(i for b in batches for i in indices_of(b, config))
        assert len(batches) == want_batches
        assert max(got.values(), default=1) == 1, "a sample was delivered twice"
        if bs is not None and config.drop_last:
            assert sum(got.values()) == n - n % bs and set(got) <= set(range(n))
            assert all(len(indices_of(b, config)) == bs for b in batches)
            if not config.shuffle:
                assert set(got) == set(range(n - n % bs))
        else:
            assert got == Counter(range(n))
        if not config.shuffle and config.in_order:
            order = [i for b in batches for i in indices_of(b, config)]
            assert order == sorted(order), "in_order=True must keep the sampler's order"


def same(a: Any, b: Any) -> bool:
    """Equal in type, structure, dtype, shape and value (tensors included)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and torch.equal(a, b)
        )
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if dataclasses.is_dataclass(a):
        return all(same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@pytest.mark.parametrize("pipeline", pipelines())
@share(0.6)
@given(
    spec=lst.dataset_specs(containers=COLLATABLE, max_length=12, max_depth=1),
    config=configs(max_workers=2, shuffle=False),
)
def test_shapes_dtypes_and_nesting_survive(pipeline: str, spec: lst.DatasetSpec, config: LoaderConfig) -> None:
    """Zero-size, 0-dim, bfloat16 and bool tensors, numbers and containers: each batch is what DataLoader's
    collate makes of its samples, whether it crossed a thread, a process or nothing."""
    config = registry.nearest(config, pipeline)
    ds = spec.build()
    collate = DataLoader(ds, batch_size=config.batch_size).collate_fn
    (batches,) = run(pipeline, spec, config, 1)
    for batch in batches:
        indices = indices_of(batch, config)
        want = collate(ds[indices[0]]) if config.batch_size is None else collate([ds[i] for i in indices])
        assert same(batch, want)
