"""LoaderConfig: validity against torch's own rules, ids, and DataLoader kwargs."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from loaderbench import data
from loaderbench.config import COVERED_ARGUMENTS, NOT_KNOBS, TORCH_HAS_IN_ORDER, LoaderConfig
from loaderbench.errors import InvalidConfig
from loaderbench.selection.tiers import TIERS, build_tier
from loaderbench.workloads.recipes import load_scenarios

DATA = TensorDataset(torch.arange(12.0).reshape(6, 2))

# Each row: LoaderConfig field values; torch must agree on whether it is valid.
# Rows come in pairs (the rule broken / the rule respected).
ROWS: list[dict[str, Any]] = [
    {"num_workers": -1},
    {"num_workers": 0},
    {"timeout": -1},
    {"prefetch_factor": 2},
    {"prefetch_factor": 2, "num_workers": 1},
    {"prefetch_factor": -1, "num_workers": 1},
    {"prefetch_factor": 0, "num_workers": 1},  # torch: AssertionError only at iter()
    {"persistent_workers": True},
    {"persistent_workers": True, "num_workers": 1},
    {"multiprocessing_context": "fork"},
    {"multiprocessing_context": "fork", "num_workers": 1},
    {"multiprocessing_context": "bogus", "num_workers": 1},
    {"timeout": 5.0},  # torch: AssertionError only at iter()
    {"timeout": 5.0, "num_workers": 1},
    {"batch_size": None, "drop_last": True},
    {"batch_size": None},
    {"batch_size": 0},
    {"batch_size": 4, "drop_last": True, "shuffle": True},
]
if TORCH_HAS_IN_ORDER:
    ROWS += [{"in_order": False}, {"in_order": False, "num_workers": 1}]


def torch_accepts(fields: dict[str, Any], dataset: Any = DATA) -> bool:
    """Build the DataLoader with the raw arguments and fetch one batch."""
    kwargs = dict(fields)
    if "in_order" in kwargs and not TORCH_HAS_IN_ORDER:  # pragma: no cover
        del kwargs["in_order"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loader = DataLoader(dataset, **kwargs)
            it = iter(loader)
            next(it)
            del it
        return True
    except (ValueError, AssertionError, TypeError):
        return False


# torch's _MultiProcessingDataLoaderIter.__del__ raises AttributeError ('_shutdown') when its
# __init__ failed on prefetch_factor=0; that unraisable exception is torch's, not ours.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("fields", ROWS, ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()))
def test_validity_matches_torch(fields: dict[str, Any], ours_accepts: Callable[..., bool]) -> None:
    assert ours_accepts(fields) == torch_accepts(fields)


class _Stream(IterableDataset[torch.Tensor]):
    def __iter__(self) -> Any:
        return iter([torch.zeros(2)] * 4)


@pytest.mark.parametrize("fields", [{"shuffle": True}, {"shuffle": False}])
def test_iterable_rules_match_torch(fields: dict[str, Any], ours_accepts: Callable[..., bool]) -> None:
    assert ours_accepts(fields, iterable=True) == torch_accepts(fields, _Stream())


def test_batch_sampler_on_iterable_is_rejected_with_the_fix() -> None:
    with pytest.raises(InvalidConfig, match=r"batching='sampler'.*Use batching='auto'"):
        LoaderConfig(batch_size=4, batching="sampler").check_kind(iterable=True)


@pytest.mark.parametrize(
    ("fields", "pattern"),
    [
        ({"prefetch_factor": 4}, r"prefetch_factor=4: .* Set num_workers>=1 or prefetch_factor=None\."),
        ({"prefetch_factor": 0, "num_workers": 2}, r"prefetch_factor=0: .*iter\(loader\).*Use prefetch_factor>=1"),
        ({"timeout": 3}, r"timeout=3: .*iter\(loader\).*Set num_workers>=1 or timeout=0"),
        ({"multiprocessing_context": "nope", "num_workers": 1}, r"multiprocessing_context='nope'.*Use one of"),
        ({"collate": "nope"}, r"collate='nope'.*Use one of"),
        ({"sharing_strategy": "nope"}, r"sharing_strategy='nope'"),
        ({"batching": "sampler", "batch_size": None}, r"batching='sampler'.*Set batch_size>=1"),
    ],
)
def test_messages_name_the_argument_and_the_fix(fields: dict[str, Any], pattern: str) -> None:
    with pytest.raises(InvalidConfig, match=pattern):
        LoaderConfig(**fields)


def test_every_dataloader_argument_is_covered_or_declared_irrelevant() -> None:
    """Fails when a future torch adds a DataLoader argument we neither cover nor dismiss."""
    params = set(inspect.signature(DataLoader.__init__).parameters)
    unknown = params - set(COVERED_ARGUMENTS) - set(NOT_KNOBS)
    assert not unknown, f"DataLoader grew arguments loaderbench does not know: {sorted(unknown)}"


def _all_tier_configs() -> list[LoaderConfig]:
    workloads = load_scenarios(data.WORKLOADS)
    return sorted({c.config for t in TIERS for c in build_tier(t, workloads).cases}, key=lambda c: c.id)


def test_ids_are_unique_and_round_trip() -> None:
    configs = _all_tier_configs()
    assert len({c.id for c in configs}) == len(configs)
    for cfg in configs:
        assert LoaderConfig.from_id(cfg.id) == cfg


def test_id_shows_workers_and_batch_and_only_non_defaults() -> None:
    assert LoaderConfig(batch_size=64, num_workers=2).id == "w2-bs64"
    cfg = LoaderConfig(
        batch_size=64,
        num_workers=2,
        prefetch_factor=4,
        multiprocessing_context="spawn",
        persistent_workers=True,
        pin_memory=True,
        sharing_strategy="file_system",
    )
    assert cfg.id == "w2-bs64-pf4-spawn-persist-pin-share_filesystem"


def test_from_id_rejects_unknown_tokens() -> None:
    with pytest.raises(InvalidConfig, match=r"config='w2-bogus': unknown token 'bogus'"):
        LoaderConfig.from_id("w2-bogus")


def test_dataloader_kwargs_reach_the_dataloader() -> None:
    cfg = LoaderConfig(
        batch_size=3,
        num_workers=2,
        prefetch_factor=4,
        persistent_workers=True,
        multiprocessing_context="spawn",
        drop_last=True,
        shuffle=True,
        timeout=7.0,
    )
    loader = DataLoader(DATA, **cfg.dataloader_kwargs(DATA))
    assert loader.batch_size == 3 and loader.num_workers == 2 and loader.prefetch_factor == 4
    assert loader.persistent_workers and loader.drop_last and loader.timeout == 7.0
    assert loader.multiprocessing_context is not None
    assert isinstance(loader.sampler, torch.utils.data.RandomSampler)


def test_batch_sampler_mode_moves_shuffle_and_drop_last_into_the_sampler() -> None:
    cfg = LoaderConfig(batch_size=4, batching="sampler", drop_last=True, shuffle=True)
    kwargs = cfg.dataloader_kwargs(DATA)
    assert "batch_size" not in kwargs and "shuffle" not in kwargs
    batches = list(DataLoader(DATA, **kwargs))
    assert len(batches) == 1 and batches[0][0].shape == (4, 2)


def test_seeded_shuffle_is_reproducible() -> None:
    cfg = LoaderConfig(batch_size=2, shuffle=True)
    first = [b[0].tolist() for b in DataLoader(DATA, **cfg.dataloader_kwargs(DATA, seed=3))]
    again = [b[0].tolist() for b in DataLoader(DATA, **cfg.dataloader_kwargs(DATA, seed=3))]
    assert first == again


def test_describe_kwargs_is_plain_json() -> None:
    import json

    cfg = LoaderConfig(batch_size=4, num_workers=1, batching="sampler", collate="list")
    text = json.dumps(cfg.describe_kwargs())
    assert '"batch_sampler"' in text and '"collate_fn": "list"' in text


def test_shuffling_an_empty_dataset_is_refused_like_torch() -> None:
    empty = TensorDataset(torch.zeros(0, 2))
    with pytest.raises(ValueError):
        DataLoader(empty, shuffle=True)
    with pytest.raises(InvalidConfig, match=r"shuffle=True: the dataset is empty"):
        LoaderConfig(shuffle=True).dataloader_kwargs(empty)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("w-1", "config='w-1': w-1 asks for num_workers=-1; num_workers cannot be negative. Write e.g. w2."),
        ("w2-bs-8", "bs-8 asks for batch_size=-8"),
        ("w-bs8", "'w' has no value; num_workers needs one. Write e.g. w2."),
    ],
)
def test_a_negative_or_missing_id_value_names_the_bad_value(text: str, message: str) -> None:
    with pytest.raises(InvalidConfig) as info:
        LoaderConfig.from_id(text)
    assert message in str(info.value)
    assert "unknown token" not in str(info.value)


@pytest.mark.parametrize(
    ("fields", "pattern"),
    [
        ({"ranks": 0}, r"ranks=0: must be a positive integer"),
        ({"ranks": True}, r"ranks=True: must be a positive integer"),
        ({"pipeline": "nope"}, r"pipeline='nope': is not a known pipeline.*Use one of"),
        ({"pipeline": "spdl", "num_workers": 2, "persistent_workers": True}, r"persistent_workers=True: .*spdl"),
        ({"pipeline": "nodesthread", "num_workers": 1, "timeout": 5.0}, r"timeout=5.0: .*nodesthread"),
    ],
)
def test_pipeline_and_ranks_errors_name_the_argument(fields: dict[str, Any], pattern: str) -> None:
    with pytest.raises(InvalidConfig, match=pattern):
        LoaderConfig(**fields)


@pytest.mark.parametrize(
    ("fields", "text"),
    [
        ({"num_workers": 2, "pipeline": "nodesthread"}, "w2-bs1-nodesthread"),
        ({"num_workers": 2, "ranks": 4}, "w2-bs1-ranks4"),
        ({"pipeline": "spdl", "ranks": 2, "batch_size": 8}, "w0-bs8-spdl-ranks2"),
    ],
)
def test_pipeline_and_ranks_show_in_the_id_and_round_trip(fields: dict[str, Any], text: str) -> None:
    cfg = LoaderConfig(**fields)
    assert cfg.id == text
    assert LoaderConfig.from_id(text) == cfg


@pytest.mark.parametrize("batching", ["auto", "sampler"])
def test_ranks_read_disjoint_shares_through_a_distributed_sampler(batching: str) -> None:
    """Every index once across the ranks, with drop_last off (DistributedSampler pads the last rank)."""
    data = TensorDataset(torch.arange(10))
    cfg = LoaderConfig(batch_size=2, ranks=3, batching=batching, shuffle=True)  # type: ignore[arg-type]
    seen: list[int] = []
    for rank in range(3):
        loader = DataLoader(data, **cfg.dataloader_kwargs(data, seed=5, rank=rank))
        seen += [int(x) for (batch,) in loader for x in batch]
    assert sorted(set(seen)) == list(range(10))
    assert len(seen) == 12  # 10 samples padded to 3 ranks x 4
    with pytest.raises(InvalidConfig, match=r"rank=3: is not a rank of ranks=3"):
        cfg.dataloader_kwargs(data, rank=3)


# --- stored configs: a field added later reads as its default -------------------------------------

#: LoaderConfig fields added after the first baselines were recorded, with the value that is the old behaviour.
LATER_FIELDS = {"pipeline": "dataloader", "ranks": 1}


def test_a_stored_config_missing_later_fields_is_read_as_their_defaults() -> None:
    config = LoaderConfig(batch_size=32, num_workers=2, persistent_workers=True)
    old = {k: v for k, v in config.as_dict().items() if k not in LATER_FIELDS}
    assert config.matches_stored(old) and config.matches_stored(config.as_dict())
    assert LoaderConfig.from_stored(old) == config
    for name, value in LATER_FIELDS.items():  # the default is what the code did before the field existed
        assert getattr(LoaderConfig(), name) == value


@pytest.mark.parametrize(
    "stored",
    [
        {"batch_size": 32, "num_workers": 4},  # a present field differs
        {"batch_size": 32, "num_workers": 2, "ranks": 2},  # a later field present with another value
        {"batch_size": 32, "num_workers": 2},  # persistent_workers missing: read as False, not True
        {"batch_size": 32, "num_workers": 2, "persistent_workers": True, "spill": 1},  # a key no field has
    ],
)
def test_a_stored_config_that_differs_or_has_an_unknown_key_does_not_match(stored: dict[str, Any]) -> None:
    assert not LoaderConfig(batch_size=32, num_workers=2, persistent_workers=True).matches_stored(stored)


def test_from_stored_names_an_unknown_key_and_the_fix() -> None:
    with pytest.raises(InvalidConfig, match=r"config\.spill=1: is not a LoaderConfig field\. .* upgrade loaderbench"):
        LoaderConfig.from_stored({"batch_size": 4, "spill": 1})
