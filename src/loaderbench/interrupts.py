"""SIGTERM as an interrupt while a child job runs, so a cancelled CI job or a ``kill`` cleans up like Ctrl-C."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def terminate_interrupts() -> Iterator[None]:
    """While a child runs, SIGTERM (a cancelled CI job, a `kill`) interrupts like Ctrl-C, so the child's group
    is killed on the way out instead of running on as an orphan.  Only the main thread receives signals; in
    another thread nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"interrupted by {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
