"""Regression thresholds: the tolerated change per metric and per case, and their option syntax.

``--loader-threshold`` takes ``10%`` (every metric), ``samples_per_s=5%,ttfb_s=25%``
(per metric) or ``CASE:METRIC=20%`` (per case), comma-separated and mixable.
A threshold is the tolerated change in the bad direction as a fraction
(0.10: 1.10x); a threshold above 100% would tolerate more than a halving of
throughput, so it is refused.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from loaderbench.errors import UsageError
from loaderbench.metrics import METRICS, Metric

_THRESHOLD_EXAMPLES = "Write e.g. 10%, samples_per_s=5%,ttfb_s=25% or io-cpu-w2-bs32:samples_per_s=20%"


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Tolerated change per metric, as a fraction (0.10: 1.10x).  Most specific wins:
    ``cases[(case_id, metric)]``, then ``metrics[metric]``, then ``default``, then the metric's own default."""

    default: float | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    cases: Mapping[tuple[str, str], float] = field(default_factory=dict)

    def get(self, case_id: str, metric: Metric) -> float:
        if (case_id, metric.name) in self.cases:
            return self.cases[(case_id, metric.name)]
        if metric.name in self.metrics:
            return self.metrics[metric.name]
        return metric.threshold if self.default is None else self.default


def parse_thresholds(text: str, *, option: str = "--loader-threshold") -> Thresholds:
    """Parse ``10%``, ``samples_per_s=5%,ttfb_s=25%`` or ``CASE:METRIC=20%`` (comma-separated, mixable).

    A value is a percentage (``10%``) or a fraction below 1 (``0.1``).
    Raises :class:`UsageError` naming ``option=text`` and the fix.
    """
    default: float | None = None
    per_metric: dict[str, float] = {}
    per_case: dict[tuple[str, str], float] = {}
    items = [item.strip() for item in text.split(",")]
    if not any(items):
        raise UsageError(f"{option}={text!r}: empty. {_THRESHOLD_EXAMPLES}.")
    for item in items:
        if not item:
            raise UsageError(f"{option}={text!r}: an empty item between commas. {_THRESHOLD_EXAMPLES}.")
        key, sep, value = item.rpartition("=")
        fraction = _fraction(value.strip(), option, text)
        if not sep:
            default = fraction
            continue
        key = key.strip()
        case, colon, name = key.rpartition(":")
        if name.strip() not in METRICS:
            raise UsageError(
                f"{option}={text!r}: {name.strip()!r} is not a gated metric. Use one of {', '.join(METRICS)}."
            )
        if colon:
            if not case.strip():
                raise UsageError(f"{option}={text!r}: {item!r} names no case before ':'. {_THRESHOLD_EXAMPLES}.")
            per_case[(case.strip(), name.strip())] = fraction
        else:
            per_metric[name.strip()] = fraction
    return Thresholds(default=default, metrics=per_metric, cases=per_case)


def _fraction(value: str, option: str, text: str) -> float:
    percent = value.endswith("%")
    number = value[:-1].strip() if percent else value
    try:
        parsed = float(number)
    except ValueError:
        raise UsageError(f"{option}={text!r}: {value!r} is not a number. {_THRESHOLD_EXAMPLES}.") from None
    if not math.isfinite(parsed):
        raise UsageError(f"{option}={text!r}: {value!r} is not a finite number. {_THRESHOLD_EXAMPLES}.")
    if parsed < 0:
        raise UsageError(f"{option}={text!r}: {value!r} is negative; a threshold is a tolerated change. Use e.g. 10%.")
    if percent:
        parsed /= 100.0
        if parsed > 1:
            raise UsageError(
                f"{option}={text!r}: {value!r} would tolerate more than a 2x change, so nothing could regress. "
                "Use at most 100%, e.g. 10%."
            )
        return parsed
    if parsed >= 1:
        raise UsageError(
            f"{option}={text!r}: {value!r} is ambiguous. Write {value}% for a percentage, or a fraction like 0.1."
        )
    return parsed
