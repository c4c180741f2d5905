"""The slowdown the self-check injects from outside the code under test.

:func:`slowed` wraps a workload so that every ``__getitem__`` takes longer, by
sleeping (like slower storage) or busy-waiting with the GIL held (like a slower
transform), sized to slow the pipeline's bottleneck by a given fraction.  The
harness, the gate and the workload's own dataset are untouched.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from torch.utils.data import Dataset, IterableDataset

from loaderbench.config import LoaderConfig
from loaderbench.errors import UsageError
from loaderbench.workloads.recipes import Workload

#: How far short of the injected delay ``SlowedDataset`` sleeps before waiting out the rest.
_SLEEP_SLACK_S = 2e-4
_SLEEP_KINDS = ("sleep", "iterable-sleep", "skewed", "file")


class SlowedDataset(Dataset[Any]):
    """Wraps a map-style dataset; every ``__getitem__`` takes ``extra_s`` longer.

    ``mode='sleep'`` sleeps (like slower storage); ``mode='spin'`` busy-waits,
    holding the GIL and a core (like a slower transform).  Module-level and
    holding only plain values, so it pickles under spawn.
    """

    def __init__(self, inner: Dataset[Any], extra_s: float, mode: str) -> None:
        self.inner, self.extra_s, self.mode = inner, extra_s, mode

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        item = self.inner[index]
        end = time.perf_counter() + self.extra_s
        if self.mode == "sleep" and self.extra_s > 2 * _SLEEP_SLACK_S:
            # sleep overshoots by tens of microseconds: sleep short of the target, then wait it out
            time.sleep(self.extra_s - _SLEEP_SLACK_S)
        while time.perf_counter() < end:
            pass
        return item


@dataclass(frozen=True, slots=True)
class SlowedWorkload(Workload):
    """The same workload (same name, so the same case id) with a slower dataset."""

    extra_s: float = 0.0
    mode: str = "sleep"

    def build(self, length: int, workdir: str | os.PathLike[str] | None = None) -> Dataset[Any]:
        inner = Workload.build(self, length, workdir)
        if isinstance(inner, IterableDataset):
            raise UsageError(f"case workload={self.name!r}: slowdowns are injected into map-style datasets only.")
        return SlowedDataset(inner, self.extra_s, self.mode)


def slowed(workload: Workload, config: LoaderConfig, slowdown: float, baseline_samples_per_s: float) -> Workload:
    """``workload`` made about ``1 + slowdown`` times slower at the pipeline's bottleneck."""
    if slowdown <= 0:
        return workload
    extra = slowdown * max(1, config.num_workers) / baseline_samples_per_s
    mode = "sleep" if workload.kind in _SLEEP_KINDS else "spin"
    return SlowedWorkload(
        name=workload.name,
        kind=workload.kind,
        batch_size=workload.batch_size,
        description=workload.description,
        params=workload.params,
        fixed_length=workload.fixed_length,
        extra_s=extra,
        mode=mode,
    )
