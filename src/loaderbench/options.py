"""argparse value types shared by the pytest options and the ``loaderbench`` CLI.

Each returns a parse function that raises ``argparse.ArgumentTypeError`` with
``Could not parse value: OPTION=VALUE ...`` and what to write instead, so bad
input is a usage error (pytest: exit 4; the CLI: exit 2), never a traceback.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from typing import Any


def choice(option: str, choices: Sequence[str]) -> Callable[[str], str]:
    """One of ``choices``."""

    def parse(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(
                f"Could not parse value: {option}={text!r} is not one of {', '.join(choices)}."
            )
        return text

    return parse


def number(
    option: str,
    kind: Callable[[str], Any],
    *,
    minimum: float = 0,
    exclusive: bool = True,
    fix: str = "",
) -> Callable[[str], Any]:
    """A finite ``kind`` (``int`` or ``float``) above ``minimum`` (or equal to it unless ``exclusive``)."""
    noun = "an integer" if kind is int else "a number"
    advice = f" {fix}." if fix else ""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            why = f"Could not parse value: {option}={text!r} is not {noun}.{advice}"
            raise argparse.ArgumentTypeError(why) from None
        if not math.isfinite(value) or value < minimum or (exclusive and value == minimum):
            if minimum == 0:
                bound = "positive" if exclusive else "0 or more"
            else:
                bound = f"> {minimum:g}" if exclusive else f">= {minimum:g}"
            raise argparse.ArgumentTypeError(f"Could not parse value: {option}={text!r} must be {bound}.{advice}")
        return value

    return parse
