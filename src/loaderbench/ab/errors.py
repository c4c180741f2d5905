"""The A/B's one error: an interpreter or a child process that cannot take part, with the fix."""

from __future__ import annotations

from loaderbench.errors import LoaderbenchError


class ABError(LoaderbenchError):
    """An A/B that cannot run or go on: a ``--loader-ab`` path that is no interpreter, a base without
    loaderbench or torch, a child process that crashed.  The message is one paragraph naming the path
    and the fix; the pytest plugin turns it into a usage error (exit 4), the CLI into exit 2."""
