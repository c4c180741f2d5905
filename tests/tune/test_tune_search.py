"""``loaderbench tune``'s worker ladder climbs until scaling stops, and says so plainly when a cap stops it.

Synthetic throughput curves stand in for the harness (no timing here): a dataset that waits (a 2 ms sleep)
scales far past the CPU count, as measured on 2 CPUs: 3.48k samples/s at 8 workers, 10.6k-14.7k at 24-32.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from loaderbench.config import LoaderConfig
from loaderbench.tune import search as tune


@pytest.fixture(autouse=True)
def two_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 2-CPU machine, whatever this one is."""
    monkeypatch.setattr(tune, "affinity_cpus", lambda: 2)
    monkeypatch.setattr(tune, "heuristics", lambda: {"num_workers = CPU count": 2, "Lightning-style": 1})


Run = Callable[..., tune.Search]


@pytest.fixture
def run(fake_search: Run) -> Run:
    """``run(rate, max_workers=None, budget=200)``: a whole search at batch size 32 whose measure gives
    ``rate(num_workers)`` samples/s (NaN: the case fails), every record with its next-epoch stall."""

    def search(rate: Callable[[int], float], *, max_workers: int | None = None, budget: float = 200.0) -> tune.Search:
        return fake_search(
            lambda c: rate(c.num_workers),
            batch_size=32,
            budget=budget,
            max_workers=max_workers,
            failure="too many open files",
            stall_always=True,
        )

    return search


def sleep_2ms(workers: int) -> float:
    """A 2 ms-sleep dataset on 2 CPUs: about 450 samples/s per worker up to 32 workers, flat above."""
    return 450.0 if workers == 0 else 450.0 * min(workers, 32)


def workers_measured(s: tune.Search) -> set[int]:
    return set(s.by_workers())


def test_the_default_cap_is_far_above_the_cpu_count() -> None:
    assert tune.auto_worker_cap(2) == 64 and tune.auto_worker_cap(64) == 256
    assert tune.TuneSpec(factory="m:f").worker_cap == 64  # on the 2 CPUs of the fixture
    assert tune.TuneSpec(factory="m:f", max_workers=8).worker_cap == 8


def test_the_ladder_climbs_past_8_until_scaling_stops(run: Run) -> None:
    s = run(sleep_2ms)
    assert {16, 32, 64} <= workers_measured(s)  # climbed past the old cap of 8...
    assert 128 not in workers_measured(s)  # ...and stopped once 64 gained nothing (the cap is not the reason)
    assert s.cap_note == "" and "cap" not in s.stop_reason
    best, top = s.recommended(), s.top()
    assert best.config.num_workers == 32  # the knee: 48 and 64 are no faster
    assert best.median >= 0.9 * top.median  # within 10% of the best measured


def test_a_curve_that_flattens_early_stops_early(run: Run) -> None:
    s = run(lambda w: 1000.0 * max(1, min(w, 4)))
    assert max(workers_measured(s)) == 16  # 8 and 16 gain nothing: the climb ends there
    assert s.recommended().config.num_workers == 4 and s.cap_note == ""


def test_a_ladder_still_scaling_at_its_cap_says_so_with_the_slope(run: Run) -> None:
    s = run(sleep_2ms, max_workers=8)
    assert max(workers_measured(s)) == 8
    assert "the worker ladder reached its cap of 8 workers while throughput was still scaling" in s.cap_note
    assert "1,800 -> 3,600 samples/s from 4 to 8 workers" in s.cap_note
    assert "+450 samples/s per added worker, 2.00x for 2x the workers" in s.cap_note
    assert "raise --max-workers" in s.cap_note
    assert s.stop_reason.startswith(s.cap_note)  # printed on the "stopped:" line and kept in results.json


def test_the_automatic_cap_names_the_option_that_lifts_it(run: Run) -> None:
    s = run(lambda w: 450.0 * max(1, w))  # scales without end
    assert max(workers_measured(s)) == 64
    assert "cap of 64 workers" in s.cap_note and "pass --max-workers above 64" in s.cap_note


def test_a_cap_that_is_not_a_power_of_two_is_measured_itself(run: Run) -> None:
    s = run(sleep_2ms, max_workers=12)
    assert {1, 2, 4, 8, 12} <= workers_measured(s) and max(workers_measured(s)) == 12
    assert "from 8 to 12 workers" in s.cap_note


def test_a_flat_top_rung_is_no_cap_note(run: Run) -> None:
    s = run(lambda w: 1000.0 * max(1, min(w, 4)), max_workers=8)
    assert s.cap_note == "" and s.recommended().config.num_workers == 4


def test_a_failing_top_rung_is_no_evidence_of_scaling(run: Run) -> None:
    s = run(lambda w: math.nan if w >= 16 else sleep_2ms(w), max_workers=16)
    assert LoaderConfig(batch_size=32, num_workers=16) in s.failures
    assert s.cap_note == "" and s.recommended().config.num_workers == 8
