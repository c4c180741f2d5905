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
