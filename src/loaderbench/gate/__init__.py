"""The regression gate.

* :mod:`loaderbench.gate.model`: the pure statistical model, ``compare(...) -> Verdict``;
* :mod:`loaderbench.gate.thresholds`: tolerated changes per metric and per case;
* :mod:`loaderbench.gate.job`: :class:`Gate`, the state of one session and its extra measurements.
"""

from loaderbench.gate.job import Gate
from loaderbench.gate.model import Outcome, Settings, Verdict, compare, resolution
from loaderbench.gate.thresholds import Thresholds, parse_thresholds

__all__ = ["Gate", "Outcome", "Settings", "Thresholds", "Verdict", "compare", "parse_thresholds", "resolution"]
