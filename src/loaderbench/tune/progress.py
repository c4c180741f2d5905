"""The ``loaderbench tune`` progress display: a tqdm bar over the time budget, on stderr.

After each measurement it shows the elapsed time against the budget, the
search phase, how many configs were tried, the last and the best config with
their rates, and the best's speed-up over the DataLoader defaults.  On a
terminal the line is redrawn in place (at most 4 times a second); elsewhere (a
CI log, a pipe) it is written at most every ``log_interval_s`` seconds, and
:meth:`ProgressBar.close` always writes the final state.
"""

from __future__ import annotations

from typing import Any, TextIO

from tqdm import tqdm

from loaderbench.formatting import fmt_rate
from loaderbench.tune.search import Progress


class _Bar(tqdm):  # type: ignore[misc]  # tqdm ships no type information
    #: no monitor thread: the search forks DataLoader workers, and forking a threaded process is unsafe
    monitor_interval = 0


def describe(p: Progress) -> str:
    """The text beside the bar."""
    speed = f" ({p.best_rate / p.defaults_rate:.2f}x defaults)" if p.defaults_rate > 0 else ""
    return (
        f"{p.elapsed_s:4.0f}/{p.budget_s:g}s {p.phase:<18} {p.tried:>2} tried | "
        f"{p.last} {fmt_rate(p.last_rate)} | best {p.best} {fmt_rate(p.best_rate)}{speed}"
    )


class ProgressBar:
    """A ``progress`` callback for :func:`loaderbench.tune.run.tune`; call :meth:`close` when it returns."""

    def __init__(self, stream: TextIO, *, log_interval_s: float = 30.0) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.interval_s = 0.25 if self.tty else log_interval_s
        self._bar: Any = None

    def __call__(self, p: Progress) -> None:
        done = min(p.elapsed_s, p.budget_s)
        if self._bar is None:
            self._bar = _Bar(
                total=p.budget_s,
                initial=done,
                desc=describe(p),
                file=self.stream,
                bar_format="[{bar:20}] {desc}",
                mininterval=self.interval_s,
                miniters=0,  # throttle by time only
                dynamic_ncols=self.tty,  # cut to the terminal's width
                leave=True,
            )
            return
        self._bar.set_description_str(describe(p), refresh=False)
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        """Write the final state and end the line."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
