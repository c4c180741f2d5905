"""What the values tests share: whether LoaderConfig accepts some fields, and hypothesis settings that scale.

``share-<fraction>`` settings profiles: ``fraction`` of the active profile's ``max_examples`` (ci: 25, dev: 10,
nightly: 1000), at least 2, for tests that start worker processes or are slow per example.  A settings decorator
is needed when the test module is imported, so these are hypothesis profiles rather than fixtures: a test takes
``@settings.get_profile("share-0.6")``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from loaderbench.config import LoaderConfig
from loaderbench.errors import InvalidConfig

for _fraction in (0.3, 0.4, 0.6, 2.4):
    settings.register_profile(
        f"share-{_fraction}",
        max_examples=max(2, round(settings.default.max_examples * _fraction)),
        suppress_health_check=[HealthCheck.too_slow],
    )


def _ours_accepts(fields: dict[str, Any], *, iterable: bool = False) -> bool:
    try:
        LoaderConfig(**fields).check_kind(iterable=iterable)
        return True
    except InvalidConfig:
        return False


@pytest.fixture(scope="session")
def ours_accepts() -> Callable[..., bool]:
    """``ours_accepts(fields, iterable=False)``: whether ``LoaderConfig(**fields)`` is valid for a map-style (or
    an iterable) dataset.  Session-scoped, so hypothesis tests can take it."""
    return _ours_accepts
