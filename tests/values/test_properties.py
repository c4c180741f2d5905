"""Properties of the loader over odd datasets (hypothesis; behaviour only, never timings): every sample exactly
once, shapes, dtypes and nesting through collate, LoaderConfig's validity against DataLoader's, and datasets
that pickle.  Ragged samples, padded or failing their case, are in test_properties_ragged.py.

Examples that start worker processes use fork, and their tests run a fraction of the profile's
``max_examples`` (the ``share-*`` settings profiles of tests/values/conftest.py), so that ``pytest`` stays within
a few minutes on 2 cores while ``HYPOTHESIS_PROFILE=nightly`` still scales every test up.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import pickle
import warnings
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

from loaderbench import LoaderConfig
from loaderbench.config import TORCH_HAS_IN_ORDER
from loaderbench.testing import strategies as lst

FORK = ("fork",)
#: cheap payloads for the multi-process properties: small tensors, shallow nesting
SMALL = {"max_depth": 1, "max_dims": 2, "max_side": 3, "max_length": 40}


PROCESS_EXAMPLES = settings.get_profile("share-0.6")


def loader(spec: Any, config: LoaderConfig, *, seed: int = 0, collate_fn: Any = None) -> DataLoader[Any]:
    ds = spec.build()
    kwargs = config.dataloader_kwargs(ds, seed=seed)
    if collate_fn is not None:
        kwargs["collate_fn"] = collate_fn
    return DataLoader(ds, **kwargs)


def indices_of(batch: Any, config: LoaderConfig) -> list[int]:
    """The sample indices in one batch (samples are ``(index, payload)``)."""
    if config.batch_size is None:  # no auto-batching: the "batch" is one (converted) sample
        return [int(batch[0])]
    if config.collate == "list":
        return [int(sample[0]) for sample in batch]
    return [int(i) for i in batch[0].tolist()]


def epochs(spec: lst.DatasetSpec, config: LoaderConfig, n: int) -> list[list[list[int]]]:
    dl = loader(spec, config)
    try:
        return [[indices_of(b, config) for b in dl] for _ in range(n)]
    finally:
        dl._iterator = None  # persistent workers: shut them down now
        del dl
        gc.collect()


def shard_sizes(n: int, workers: int) -> list[int]:
    return [len(range(k, n, workers)) for k in range(workers)] if workers else [n]


def expected_batch_count(spec: lst.DatasetSpec, config: LoaderConfig) -> int:
    if config.batch_size is None:
        return spec.length
    bs = config.batch_size
    rnd = math.floor if config.drop_last else math.ceil
    if spec.iterable:  # each worker batches its own shard
        return sum(rnd(n / bs) for n in shard_sizes(spec.length, config.num_workers))
    return rnd(spec.length / bs)


def expected_delivered(spec: lst.DatasetSpec, config: LoaderConfig) -> Counter[int] | None:
    """The exact multiset of delivered indices, where it is determined (None: only its size is)."""
    n, bs = spec.length, config.batch_size
    if bs is None or not config.drop_last:
        return Counter(range(n))
    if spec.iterable:
        kept: list[int] = []
        for k in range(max(config.num_workers, 1)):
            shard = list(range(k, n, max(config.num_workers, 1)))
            kept += shard[: len(shard) - len(shard) % bs]
        return Counter(kept)
    if config.shuffle:
        return None
    return Counter(range(n - n % bs))


# --- every sample exactly once, batch counts, drop_last, persistent epochs --------------------------------------------


@pytest.mark.slow
@PROCESS_EXAMPLES
@given(data=st.data(), spec=lst.dataset_specs(iterable=None, containers=("tuple", "dict", "namedtuple"), **SMALL))
@example(data=None, spec=lst.DatasetSpec(0, lst.Node("int"), iterable=True))
@example(data=None, spec=lst.DatasetSpec(37, lst.Node("int"), iterable=True))
def test_every_sample_is_delivered_exactly_once_per_epoch(data: Any, spec: lst.DatasetSpec) -> None:
    if data is None:  # the explicit examples: iterable datasets of 0 and 37 (prime) samples, two persistent workers
        config = LoaderConfig(
            batch_size=3, num_workers=2, persistent_workers=True, drop_last=True, multiprocessing_context="fork"
        )
    else:
        config = data.draw(
            lst.loader_configs(
                iterable=spec.iterable, start_methods=FORK, collates=("default", "list"), timeouts=(0, 30.0)
            ),
            label="config",
        )
    if spec.length == 0 and config.shuffle:
        # torch's RandomSampler rejects an empty dataset at construction (LoaderConfig cannot know the length)
        with pytest.raises(ValueError, match="num_samples=0"):
            loader(spec, config)
        return
    n_epochs = 2 if config.persistent_workers else 1
    want_batches = expected_batch_count(spec, config)
    want = expected_delivered(spec, config)
    for batches in epochs(spec, config, n_epochs):
        got = Counter(i for b in batches for i in b)
        assert len(batches) == want_batches
        assert max(got.values(), default=1) == 1, "a sample was delivered twice"
        if want is not None:
            assert got == want
        else:  # shuffled map-style with drop_last: exactly n % bs samples are left out, none twice
            assert sum(got.values()) == spec.length - spec.length % (config.batch_size or 1)
            assert set(got) <= set(range(spec.length))
        if config.batch_size is not None and config.drop_last:
            assert all(len(b) == config.batch_size for b in batches)
        if not spec.iterable and not config.shuffle and config.in_order:
            assert [i for b in batches for i in b] == sorted(got), "in_order=True must keep the sampler's order"


@pytest.mark.skipif(not TORCH_HAS_IN_ORDER, reason="in_order needs torch >= 2.6")
@settings.get_profile("share-0.3")
@given(
    spec=lst.dataset_specs(containers=(), numbers=False, **SMALL),
    batch_size=lst.batch_sizes(max_size=5),
    workers=st.integers(min_value=1, max_value=2),
)
@pytest.mark.slow
def test_out_of_order_yields_the_same_batches(spec: lst.DatasetSpec, batch_size: int, workers: int) -> None:
    ordered = LoaderConfig(batch_size=batch_size, num_workers=workers, multiprocessing_context="fork")
    unordered = ordered.replace(in_order=False)
    first = epochs(spec, ordered, 1)[0]
    second = epochs(spec, unordered, 1)[0]
    assert Counter(map(tuple, first)) == Counter(map(tuple, second))


@given(
    spec=lst.dataset_specs(containers=(), numbers=False, max_length=50),
    config=lst.loader_configs(max_workers=0, shuffle=True, collates=("default", "list")),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_a_seeded_shuffle_is_reproducible(spec: lst.DatasetSpec, config: LoaderConfig, seed: int) -> None:
    if spec.length == 0:
        return  # RandomSampler rejects an empty dataset (see above)
    first = [indices_of(b, config) for b in loader(spec, config, seed=seed)]
    again = [indices_of(b, config) for b in loader(spec, config, seed=seed)]
    assert first == again
    assert sorted(i for b in first for i in b) == sorted(i for b in again for i in b)


def test_a_seeded_shuffle_is_reproducible_through_workers() -> None:
    spec = lst.DatasetSpec(23, lst.Node("int"))
    config = LoaderConfig(batch_size=4, shuffle=True, num_workers=2, multiprocessing_context="fork")
    assert epochs(spec, config, 1) == epochs(spec, config, 1)


# --- shapes, dtypes and nesting survive collate -----------------------------------------------------------------------


def check_sample(node: lst.Node, got: Any, index: int, *, tuples_become_lists: bool) -> None:
    """``got`` is ``node.make(index)``, up to default_convert's tuple -> list."""
    if node.kind == "tensor":
        assert node.tensor is not None
        want = node.tensor.make(index)
        assert isinstance(got, torch.Tensor) and got.dtype == want.dtype and got.shape == want.shape
        assert torch.equal(got, want)
        return
    if node.kind in ("int", "float", "index"):
        assert type(got) is type(node.make(index)) and got == node.make(index)
        return
    if node.kind == "dict":
        assert type(got) is dict and list(got) == list(node.keys)
        parts = list(got.values())
    elif node.kind == "namedtuple":
        assert type(got) is lst.NAMEDTUPLES[len(node.children) - 1]
        parts = list(got)
    elif node.kind == "dataclass":
        assert type(got) is lst.RECORDS[len(node.children) - 1]
        parts = [getattr(got, f.name) for f in dataclasses.fields(got)]
    else:
        want_type = list if node.kind == "list" or tuples_become_lists else tuple
        assert type(got) is want_type
        parts = list(got)
    assert len(parts) == len(node.children)
    for child, part in zip(node.children, parts, strict=True):
        check_sample(child, part, index, tuples_become_lists=tuples_become_lists)


def check_collated(node: lst.Node, got: Any, indices: list[int]) -> None:
    """``got`` is default_collate of ``[node.make(i) for i in indices]``: a leading batch dimension on every
    tensor, numbers as int64/float64 tensors, tuples as lists, other containers kept."""
    n = len(indices)
    if node.kind == "tensor":
        assert node.tensor is not None
        assert isinstance(got, torch.Tensor)
        assert got.dtype == getattr(torch, node.tensor.dtype)
        assert tuple(got.shape) == (n, *node.tensor.shape)
        for row, i in enumerate(indices):
            assert torch.equal(got[row], node.tensor.make(i))
        return
    if node.kind in ("int", "float"):
        want = torch.tensor([node.make(i) for i in indices], dtype=torch.int64 if node.kind == "int" else torch.float64)
        assert isinstance(got, torch.Tensor) and got.dtype == want.dtype and torch.equal(got, want)
        return
    if node.kind == "dict":
        assert type(got) is dict and list(got) == list(node.keys)
        parts = list(got.values())
    elif node.kind == "namedtuple":
        assert type(got) is lst.NAMEDTUPLES[len(node.children) - 1]
        parts = list(got)
    else:  # tuples become lists (torch's backward compatibility), lists stay lists
        assert type(got) is list
        parts = got
    assert len(parts) == len(node.children)
    for child, part in zip(node.children, parts, strict=True):
        check_collated(child, part, indices)


COLLATABLE = ("tuple", "list", "dict", "namedtuple")  # default_collate rejects dataclasses


@given(
    spec=lst.dataset_specs(containers=COLLATABLE, max_length=20),
    config=lst.loader_configs(max_workers=0, unbatched=True),
)
def test_shapes_dtypes_and_nesting_survive_default_collate(spec: lst.DatasetSpec, config: LoaderConfig) -> None:
    check_collate_roundtrip(spec, config)


@PROCESS_EXAMPLES
@given(
    spec=lst.dataset_specs(containers=COLLATABLE, max_length=12, max_depth=1),
    config=lst.loader_configs(min_workers=1, max_workers=2, start_methods=FORK, prefetch_factors=(None, 1)),
)
def test_shapes_dtypes_and_nesting_survive_worker_shared_memory(spec: lst.DatasetSpec, config: LoaderConfig) -> None:
    """Zero-size, 0-dim, bfloat16 and bool tensors through a worker's shared-memory collate."""
    check_collate_roundtrip(spec, config)


def check_collate_roundtrip(spec: lst.DatasetSpec, config: LoaderConfig) -> None:
    if spec.length == 0 and config.shuffle:
        return
    seen = []
    for batch in loader(spec, config):
        if config.batch_size is None:  # default_convert: the sample itself, tuples as lists
            check_sample(spec.structure, batch, int(batch[0]), tuples_become_lists=True)
            seen.append(int(batch[0]))
            continue
        assert type(batch) is list and len(batch) == 2
        indices = [int(i) for i in batch[0].tolist()]
        assert batch[0].dtype == torch.int64
        check_collated(spec.sample, batch[1], indices)
        seen += indices
    kept = spec.length - (spec.length % (config.batch_size or 1) if config.drop_last else 0)
    assert len(seen) == len(set(seen)) == kept and set(seen) <= set(range(spec.length))


@PROCESS_EXAMPLES
@given(spec=lst.dataset_specs(iterable=None, max_length=12, max_depth=2), workers=st.integers(min_value=0, max_value=1))
def test_the_list_collate_keeps_every_sample_as_it_was(spec: lst.DatasetSpec, workers: int) -> None:
    """Including dataclasses, which default_collate cannot batch."""
    config = LoaderConfig(batch_size=3, num_workers=workers, collate="list")
    seen = []
    for batch in loader(spec, config):
        assert type(batch) is list
        for sample in batch:
            index = int(sample[0])
            check_sample(spec.structure, sample, index, tuples_become_lists=False)
            seen.append(index)
    assert sorted(seen) == list(range(spec.length))


# --- LoaderConfig accepts a combination exactly when DataLoader does --------------------------------------------------


class _Stream(torch.utils.data.IterableDataset[torch.Tensor]):
    def __iter__(self) -> Any:
        return iter([torch.zeros(2)] * 4)

    def __len__(self) -> int:
        return 4


MAP = torch.utils.data.TensorDataset(torch.arange(12.0).reshape(6, 2))
FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "batch_size": st.one_of(st.none(), st.integers(min_value=-1, max_value=3)),
        "num_workers": st.integers(min_value=-1, max_value=2),
        "prefetch_factor": st.one_of(st.none(), st.integers(min_value=-1, max_value=2)),
        "persistent_workers": st.booleans(),
        "multiprocessing_context": st.sampled_from([None, "fork", "spawn", "forkserver", "bogus"]),
        "timeout": st.sampled_from([0, -1, 5.0]),
        "shuffle": st.booleans(),
        "drop_last": st.booleans(),
        "batching": st.sampled_from(["auto", "sampler"]),
        **({"in_order": st.booleans()} if TORCH_HAS_IN_ORDER else {}),
    },
)


def torch_accepts(fields: dict[str, Any], dataset: Any) -> bool:
    """Build the DataLoader from the raw arguments, then ``iter()`` it and fetch a batch.

    The rules torch checks at ``iter()`` (prefetch_factor > 0, timeout == 0 without workers) do not depend
    on the start method, so a spawn/forkserver config is built with its own start method (the constructor
    checks it) but iterated with fork: spawn costs about a second per worker.
    """
    kwargs = dict(fields)
    batching = kwargs.pop("batching", "auto")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if batching == "sampler":
                shuffle = kwargs.pop("shuffle", False)
                base = RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
                kwargs["batch_sampler"] = BatchSampler(
                    base, kwargs.pop("batch_size", 1), kwargs.pop("drop_last", False)
                )
            DataLoader(dataset, **kwargs)
            if kwargs.get("multiprocessing_context") in ("spawn", "forkserver"):
                kwargs["multiprocessing_context"] = "fork"
            dl = DataLoader(dataset, **kwargs)
            it = iter(dl)
            next(it)
            del it, dl
        return True
    except (ValueError, AssertionError, TypeError):
        return False
    finally:
        gc.collect()


# torch's _MultiProcessingDataLoaderIter.__del__ raises AttributeError when its __init__ failed on
# prefetch_factor=0 (torch's unraisable exception, not ours)
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@settings.get_profile("share-2.4")
@given(fields=FIELDS, iterable=st.booleans())
@example(fields={"prefetch_factor": 0, "num_workers": 1}, iterable=False)  # torch fails only at iter()
@example(fields={"timeout": 5.0}, iterable=False)  # torch fails only at iter()
@example(fields={"batching": "sampler", "batch_size": None}, iterable=False)
@example(fields={"shuffle": True}, iterable=True)
def test_loader_config_accepts_exactly_what_dataloader_accepts(
    fields: dict[str, Any], iterable: bool, ours_accepts: Callable[..., bool]
) -> None:
    assert ours_accepts(fields, iterable=iterable) == torch_accepts(fields, _Stream() if iterable else MAP)


@given(
    config=lst.loader_configs(
        max_workers=3,
        collates=("default", "list"),
        sharing_strategies=tuple(torch.multiprocessing.get_all_sharing_strategies()),  # type: ignore[no-untyped-call]
        timeouts=(0, 30.0),
        pin_memory=True,
    )
)
def test_drawn_configs_are_valid_and_their_ids_round_trip(config: LoaderConfig) -> None:
    assert LoaderConfig.from_id(config.id) == config


# --- the datasets pickle, so they run under spawn ---------------------------------------------------------------------


@given(spec=lst.dataset_specs(iterable=None, max_length=8))
def test_spec_datasets_pickle(spec: lst.DatasetSpec) -> None:
    ds = spec.build()
    again = pickle.loads(pickle.dumps(ds))
    config = LoaderConfig(batch_size=None, collate="list")
    for mine, theirs in zip(loader(spec, config), DataLoader(again, **config.dataloader_kwargs(again)), strict=True):
        index = int(mine[0])
        assert int(theirs[0]) == index
        check_sample(spec.structure, theirs, index, tuples_become_lists=False)


def test_a_spec_dataset_runs_under_spawn() -> None:
    spec = lst.DatasetSpec(
        7,
        lst.Node("dict", (lst.Node("tensor", tensor=lst.TensorSpec((2, 0), "bfloat16")), lst.Node("int")), ("a", "b")),
    )
    config = LoaderConfig(batch_size=3, num_workers=1, multiprocessing_context="spawn", persistent_workers=True)
    assert epochs(spec, config, 2) == [[[0, 1, 2], [3, 4, 5], [6]]] * 2
