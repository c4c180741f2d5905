"""Tiers: the cases they generate are valid, cover what they claim, and ids are unique."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from loaderbench import data
from loaderbench.errors import UsageError, WorkloadError
from loaderbench.selection.tiers import KNOB_VALUES, TIERS, build_tier, covering_pairs
from loaderbench.workloads.recipes import load_scenarios

WORKLOADS = load_scenarios(data.WORKLOADS)


@pytest.mark.parametrize("tier", TIERS)
def test_case_ids_are_unique(tier: str) -> None:
    ids = [c.id for c in build_tier(tier, WORKLOADS).cases]
    assert len(ids) == len(set(ids))


def test_smoke_covers_the_promised_slice() -> None:
    cases = build_tier("smoke", WORKLOADS).cases
    smoke_workloads = {w.name for w in WORKLOADS.values() if "smoke" in w.params["tiers"]}
    assert {c.workload.name for c in cases} == smoke_workloads | {"big-index-1m"}  # the canary's one case
    assert [c.config.start_method for c in cases if c.workload.name == "big-index-1m"] == ["spawn"]
    decode_pipelines = {c.config.pipeline for c in cases if c.workload.name == "decode"}
    assert decode_pipelines == {"dataloader", "nodesthread", "nodesprocess", "stateful", "spdl"}
    cfgs = [c.config for c in cases]
    assert {c.num_workers for c in cfgs} >= {0, 1, 2, 4}
    assert {c.start_method for c in cfgs if c.num_workers} >= {"fork", "spawn", "forkserver"}
    assert {c.persistent_workers for c in cfgs} == {False, True}
    assert {c.effective_prefetch_factor for c in cfgs if c.num_workers} >= {1, 2, 4}
    assert {c.pin_memory for c in cfgs} == {False, True}


def test_standard_has_every_knob_value_at_least_once() -> None:
    cfgs = [c.config for c in build_tier("standard", WORKLOADS).cases]
    for knob, values in KNOB_VALUES.items():
        if knob == "batch_size":
            values = tuple(v for v in values if v != "natural")
        seen = {getattr(c, knob) for c in cfgs}
        assert set(values) <= seen, knob


def test_full_covers_every_coverable_pair() -> None:
    rows = covering_pairs(KNOB_VALUES, lambda row: _ok(row))
    names = list(KNOB_VALUES)
    defaults = {n: KNOB_VALUES[n][0] for n in names}
    for a, b in itertools.combinations(names, 2):
        for va in KNOB_VALUES[a]:
            for vb in KNOB_VALUES[b]:
                if _ok({**defaults, a: va, b: vb}):
                    assert any(r[a] == va and r[b] == vb for r in rows), (a, va, b, vb)
    full_factorial = 1
    for values in KNOB_VALUES.values():
        full_factorial *= len(values)
    assert len(rows) < full_factorial / 1000


def _ok(row: dict[str, object]) -> bool:
    from loaderbench.selection.tiers import _valid

    return _valid(WORKLOADS["io"], row) is not None


def test_unknown_tier_and_workload_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="tier='nope'"):
        build_tier("nope", WORKLOADS)
    with pytest.raises(UsageError, match="workloads='nope'"):
        build_tier("smoke", WORKLOADS, only=["nope"])


def test_a_workload_without_tiers_runs_in_every_tier(tmp_path: Path) -> None:
    path = tmp_path / "w.toml"
    path.write_text('[[workload]]\nname = "mine"\nkind = "sleep"\nlatency_s = 0.001\n')
    workloads = load_scenarios(path)
    for tier in TIERS:
        assert {c.workload.name for c in build_tier(tier, workloads).cases} == {"mine"}, tier


@pytest.mark.parametrize(
    ("tiers", "message"),
    [('"smoke"', "tiers='smoke' is not a non-empty list"), ('["smok"]', "unknown tier 'smok'"), ("[]", "tiers=[]")],
)
def test_a_bad_tiers_key_is_refused_naming_the_key(tmp_path: Path, tiers: str, message: str) -> None:
    path = tmp_path / "w.toml"
    path.write_text(f'[[workload]]\nname = "mine"\nkind = "sleep"\nlatency_s = 0.001\ntiers = {tiers}\n')
    with pytest.raises(WorkloadError, match=re.escape(message)):
        load_scenarios(path)


def test_standard_has_the_decode_big_index_and_rank_axes() -> None:
    cases = build_tier("standard", WORKLOADS).cases
    big = {(c.workload.params["index_size"], c.config.start_method) for c in cases if c.workload.kind == "big-index"}
    assert big >= {(n, m) for n in (1_000, 100_000, 1_000_000) for m in ("fork", "spawn", "forkserver")}
    for name in ("decode", "decode-cold"):
        for pipeline in ("dataloader", "nodesthread", "nodesprocess", "stateful", "spdl"):
            workers = {c.config.num_workers for c in cases if c.workload.name == name and c.config.pipeline == pipeline}
            assert workers >= {0, 1, 2, 4}, (name, pipeline)
    ranked = {(c.workload.name, c.config.num_workers) for c in cases if c.config.ranks == 2}
    assert ranked >= {(w, n) for w in ("io", "cpu") for n in (0, 1, 2)}


def test_loader_ranks_runs_a_case_the_tier_already_has_in_ranks_once() -> None:
    from loaderbench.selection.tiers import with_ranks

    cases = build_tier("standard", WORKLOADS).cases
    ranked = with_ranks(cases, 2)
    ids = [c.id for c in ranked]
    assert len(ids) == len(set(ids)) and all(c.config.ranks == 2 for c in ranked)
    assert "io-cpu-w1-bs32-ranks2" in ids
    assert with_ranks(cases, 1) == cases
