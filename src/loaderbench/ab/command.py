"""``loaderbench ab BASE HEAD [-- PYTEST_ARGS]``: the A/B from the command line.

It checks both paths, checks that HEAD can find pytest, loaderbench and torch, and runs
``HEAD -m pytest --benchmark --loader-ab=BASE PYTEST_ARGS`` in the current directory, passing its exit
status through (0, 1 on a regression, 4 on a usage error found by pytest).  The environment this
command was started with is handed to the base arm (``$LOADERBENCH_AB_BASE_ENVIRON``), so what a HEAD
wrapper script exports reaches the head arm only, as it would with BASE a wrapper of its own.
Problems found here are :class:`ABError` (the CLI's exit 2).

``loaderbench ab --base-ref REF [HEAD] [-- PYTEST_ARGS]`` makes the base arm itself from a git revision
(:mod:`loaderbench.ab.checkout`: a worktree of REF and an environment with the project installed from
it, removed afterwards), and runs the same pytest with ``--loader-ab-base-dir`` pointing into the
worktree; HEAD defaults to the interpreter running this command.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from loaderbench.ab.checkout import base_checkout
from loaderbench.ab.errors import ABError
from loaderbench.ab.process import check_interpreter, missing_modules
from loaderbench.ab.records import BASE_ENVIRON
from loaderbench.interrupts import terminate_interrupts

#: What HEAD must have to run the A/B's pytest.
HEAD_MODULES = ("pytest", "loaderbench", "torch")


def pytest_command(base: str, head: str, pytest_args: Sequence[str]) -> list[str]:
    """``HEAD -m pytest --benchmark --loader-ab=BASE ARGS`` (a leading ``--`` of ARGS dropped)."""
    args = list(pytest_args)
    if args[:1] == ["--"]:
        args = args[1:]
    return [head, "-m", "pytest", "--benchmark", f"--loader-ab={base}", *args]


def run_base_ref(ref: str, head: str, pytest_args: Sequence[str], *, cwd: Path | None = None) -> int:
    """The A/B of the working tree (HEAD's environment) against the git revision ``ref`` (see the docstring)."""
    here = Path.cwd() if cwd is None else cwd
    head_path = check_interpreter(head, label=f"HEAD={head!r}", cwd=here)
    with terminate_interrupts(), base_checkout(ref, cwd=here, head=head_path) as base:
        installed = f", {base.installed} installed into it" if base.installed else ""
        print(f"loaderbench ab: base {ref} = {base.commit[:12]}: worktree {base.worktree}{installed}", flush=True)
        environ = dict(os.environ)
        if environ.get("PYTHONPATH"):
            environ["PYTHONPATH"] = base.moved_path_list(environ["PYTHONPATH"])
        args = [f"--loader-ab-base-dir={base.invocation_dir}", *pytest_args]
        return run_command(str(base.interpreter), head_path, args, cwd=here, base_environ=environ)


def run_command(
    base: str,
    head: str,
    pytest_args: Sequence[str],
    *,
    cwd: Path | None = None,
    base_environ: Mapping[str, str] | None = None,
) -> int:
    """Run the A/B through HEAD's pytest; its exit status (128 + N when killed by signal N).  The base arm gets
    ``base_environ`` (default: this process's environment)."""
    here = Path.cwd() if cwd is None else cwd
    base_path = check_interpreter(base, label=f"BASE={base!r}", cwd=here)
    head_path = check_interpreter(head, label=f"HEAD={head!r}", cwd=here)
    with tempfile.TemporaryDirectory(prefix="loaderbench-ab-") as tmp:
        missing = missing_modules(
            head_path, HEAD_MODULES, label=f"HEAD={head!r}", env=os.environ, cwd=here, workdir=Path(tmp)
        )
    if missing:
        raise ABError(
            f"HEAD={head!r}: the interpreter {head_path} cannot find {' and '.join(missing)}, which the A/B's "
            f'pytest needs. Install them into that environment (`{head_path} -m pip install -e ".[test]"` from '
            "the checkout under test), or pass the interpreter of an environment that has them."
        )
    env = dict(os.environ)
    env[BASE_ENVIRON] = json.dumps(dict(os.environ if base_environ is None else base_environ))
    proc = subprocess.Popen(pytest_command(base_path, head_path, pytest_args), cwd=here, env=env)
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        # the terminal's SIGINT reached pytest too: let it stop its children before we leave
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        raise
    return 128 - code if code < 0 else code
