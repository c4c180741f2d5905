"""Summary statistics over raw rounds."""

from __future__ import annotations

import math

import pytest

from loaderbench import stats


def test_median_and_quartiles() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 100.0]
    assert stats.median(values) == 3.0
    assert stats.quartiles(values) == (2.0, 4.0)
    assert stats.iqr(values) == 2.0
    assert stats.relative_iqr(values) == pytest.approx(2 / 3)


def test_degenerate_inputs() -> None:
    assert math.isnan(stats.median([]))
    assert stats.quartiles([5.0]) == (5.0, 5.0)
    assert math.isnan(stats.relative_iqr([]))
    assert math.isnan(stats.cv([1.0]))
    assert stats.cv([1.0, 1.0]) == 0.0


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([12.0, 12.1, 11.9, 12.2, 12.0], [10.0, 10.1, 9.9, 10.2, 10.0], True),  # 20% faster, no overlap
        ([10.5, 10.6, 10.4, 10.5, 10.6], [10.0, 10.1, 9.9, 10.2, 10.0], False),  # separated, but within 10%
        ([100.0, 101.0], [10.0, 10.1], False),  # 10x, but two rounds a side cannot reach p <= 0.05
        ([12.0, 9.0, 14.0, 8.0, 15.0], [10.0, 11.0, 9.5, 10.5, 10.2], False),  # median 12 vs 10.2: overlapping
        ([float("nan")] * 5, [10.0] * 5, False),
        ([12.0] * 5, [0.0] * 5, False),
    ],
)
def test_clearly_greater_needs_the_margin_and_the_test(a: list[float], b: list[float], expected: bool) -> None:
    assert stats.clearly_greater(a, b, by=0.10, alpha=0.05) is expected
