"""What both self-checks share (the stored gate's, :mod:`loaderbench.tools.selfcheck`, and the A/B's,
:mod:`loaderbench.selfcheck.ab_jobs`): the ``--cases`` and ``--slowdowns`` syntax, the geometric
mean of ratios, and the progress log on stderr."""

from __future__ import annotations

import fcntl
import math
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from scipy.stats import beta

from loaderbench import measurement, stats
from loaderbench.config import LoaderConfig
from loaderbench.errors import UsageError
from loaderbench.workloads.recipes import Workload

DEFAULT_CASES = "io:w0,io:w2,cpu:w0,cpu:w2,transfer:w2"


def parse_cases(text: str, workloads: dict[str, Workload]) -> list[tuple[Workload, LoaderConfig]]:
    """``io:w0,cpu:w2-persist`` -> (workload, LoaderConfig); the workload's batch size unless the id names one."""
    out = []
    for item in (s.strip() for s in text.split(",")):
        name, sep, cid = item.partition(":")
        if not sep or name not in workloads:
            raise UsageError(
                f"--cases={text!r}: {item!r} is not WORKLOAD:CONFIG_ID with a known workload "
                f"({', '.join(workloads)}). Write e.g. io:w0,cpu:w2."
            )
        tokens = cid.split("-")
        if not any(t == "nobatch" or (t.startswith("bs") and t[2:].isdigit()) for t in tokens):
            cid = f"{cid}-bs{workloads[name].batch_size}"
        out.append((workloads[name], LoaderConfig.from_id(cid)))
    return out


def case_id(workload: Workload, config: LoaderConfig) -> str:
    """The CPU case id of ``workload`` under ``config``, as the tiers name it."""
    return measurement.case_id(workload.name, "cpu", config)


def fraction_list(text: str, *, option: str = "--slowdowns") -> list[float]:
    """``10,20`` or ``10%,20%`` -> [0.1, 0.2]; every value positive."""
    try:
        values = [float(v.strip().rstrip("%")) / 100 for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{option}={text!r}: not a list of percentages. Write e.g. 10,20.") from None
    if not values or any(not v > 0 or not math.isfinite(v) for v in values):
        raise UsageError(f"{option}={text!r}: slowdowns must be positive percentages. Write e.g. 10,20.")
    return values


def geomean(values: list[float]) -> float:
    """The geometric mean of the positive, finite values; NaN when there are none."""
    values = [v for v in values if v > 0 and math.isfinite(v)]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else math.nan


def load_summary(loads: Sequence[float]) -> dict[str, float] | None:
    """The 1-minute load averages seen at the start and end of each session or job: min, median, max."""
    return {"min": min(loads), "median": stats.median(loads), "max": max(loads)} if loads else None


def load_lines(load: Mapping[str, Any] | None, *, at: str) -> list[str]:
    """The report line for :func:`load_summary` (none without one); ``at`` says when it was read."""
    if not load:
        return []
    return [
        f"1-minute load average at {at} start/end: min {load['min']:.1f}, median {load['median']:.1f}, "
        f"max {load['max']:.1f} (the machine has {os.cpu_count()} CPUs; above that, other work competed)"
    ]


def log(text: str, *, tool: str = "selfcheck") -> None:
    """A timestamped progress line on stderr."""
    print(f"[{tool} {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def upper_95(failures: int, trials: int) -> float:
    """The exact (Clopper-Pearson) one-sided 95% upper bound of a rate seen ``failures`` times in ``trials``."""
    if trials <= 0:
        return 1.0
    return 1.0 if failures >= trials else float(beta.ppf(0.95, failures + 1, trials - failures))


@contextmanager
def locked(path: str | None) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (none when None), so that measurements sharing it never overlap."""
    if path is None:
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
