"""A slowed interpreter for the A/B self-check: a wrapper script whose every DataLoader fetch is slower.

:func:`write_slowed_interpreter` writes, into a directory, an executable wrapper that runs this
Python with ``PYTHONPATH`` pointing at a ``sitecustomize.py`` of its own.  That module (the text
:data:`SITECUSTOMIZE`, which imports nothing of loaderbench) patches torch's dataset fetchers
(``torch.utils.data._utils.fetch._MapDatasetFetcher.fetch`` and the iterable one) right after torch
imports them, in the A/B child and in every worker it starts (fork inherits the patch; spawn and
forkserver workers run ``sitecustomize`` again, since they inherit ``PYTHONPATH``).

Each patched fetch times itself (wall and thread CPU time) and then takes ``s`` times as long
again: it busy-waits, holding the GIL and a core, for ``s`` times its CPU time, and sleeps for
``s`` times the rest (the time it waited: storage, a sleep).  So the slowed fetch has the same
character as the original, ``1 + s`` times longer, and a pipeline whose bottleneck is the fetch
becomes about ``1 + s`` times slower; where the bottleneck is elsewhere (the main process
unpickling a worker's batch), less.  The self-check reports the slowdown actually achieved.

The slowdown comes from outside the code under test: the suite, its harness and its workloads are
the same in both arms, and ``s = 0`` gives a wrapper that does nothing (the A/A arm), so both kinds
of job run the same kind of head.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

#: The variable the wrapper sets to the slowdown (a fraction: 0.05 is 5%).
SLOWDOWN_ENV = "LOADERBENCH_SELFCHECK_FETCH_SLOWDOWN"

SITECUSTOMIZE = f'''"""loaderbench self-check: every DataLoader fetch made ${SLOWDOWN_ENV} times longer."""
import os
import sys

_S = float(os.environ.get("{SLOWDOWN_ENV}", "0") or 0)
_TARGET = "torch.utils.data._utils.fetch"
_SLACK_S = 2e-4  # sleep overshoots: sleep this much short of the target, then wait it out


def _slowed(fetch):
    import time

    def slowed_fetch(self, possibly_batched_index):
        w0, c0 = time.perf_counter(), time.thread_time()
        out = fetch(self, possibly_batched_index)
        wall, cpu = time.perf_counter() - w0, time.thread_time() - c0
        cpu = min(cpu, wall)
        waited = _S * (wall - cpu)
        end = time.perf_counter() + waited + _S * cpu
        if waited > 2 * _SLACK_S:
            time.sleep(waited - _SLACK_S)
        while time.perf_counter() < end:
            pass
        return out

    return slowed_fetch


def _patch(module):
    for name in ("_MapDatasetFetcher", "_IterableDatasetFetcher"):
        cls = getattr(module, name)
        cls.fetch = _slowed(cls.fetch)


if _S > 0:
    if _TARGET in sys.modules:
        _patch(sys.modules[_TARGET])
    else:
        import importlib.abc
        import importlib.util

        class _AfterImport(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name != _TARGET:
                    return None
                sys.meta_path.remove(self)
                spec = importlib.util.find_spec(name)
                if spec is not None and spec.loader is not None:
                    run = spec.loader.exec_module

                    def exec_module(module):
                        run(module)
                        _patch(module)

                    spec.loader.exec_module = exec_module
                return spec

        sys.meta_path.insert(0, _AfterImport())
'''


def write_slowed_interpreter(directory: Path, slowdown: float, *, python: str | None = None) -> Path:
    """An executable wrapper in ``directory`` that runs ``python`` (default: this one) with every
    DataLoader fetch ``1 + slowdown`` times as long; ``slowdown=0`` changes nothing."""
    if not slowdown >= 0:
        raise ValueError(f"slowdown={slowdown!r}: must be >= 0")
    directory.mkdir(parents=True, exist_ok=True)
    site = directory / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    wrapper = directory / "python"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"export {SLOWDOWN_ENV}={slowdown!r}\n"
        f'export PYTHONPATH={shlex.quote(str(site))}"${{PYTHONPATH:+:$PYTHONPATH}}"\n'
        f'exec {shlex.quote(python or sys.executable)} "$@"\n',
        encoding="utf-8",
    )
    wrapper.chmod(0o755)
    return wrapper
