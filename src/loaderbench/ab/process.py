"""The A/B's processes: checking that a path is an interpreter, probing it, and running children each
in its own process group, killed as a group on any failure, timeout or KeyboardInterrupt.

Every child (the probe, each arm's run per block) starts with ``start_new_session=True``, so it and
everything it starts (DataLoader workers, a forkserver, a wrapper script's helpers) share one process
group.  When the child exits, the scheduler sees it without reaping it (``waitid`` with ``WNOWAIT``),
kills whatever is left of its group, and only then reaps it, so the group id cannot have been reused.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loaderbench.ab.errors import ABError
from loaderbench.interrupts import terminate_interrupts

#: Seconds the probe may take (it imports torch, which is slow on a cold disk).
PROBE_TIMEOUT_S = 180.0
#: What the probe prints before its JSON answer, so that a wrapper's own output is told apart.
PROBE_MARK = "LOADERBENCH-AB-PROBE "
#: The probe: which of loaderbench and torch are missing, else their versions and whether the A/B child exists.
PROBE_CODE = f"""
import importlib.util, json, sys
out = {{"executable": sys.executable, "python": sys.version.split()[0]}}
missing = [m for m in ("loaderbench", "torch") if importlib.util.find_spec(m) is None]
if missing:
    out["missing"] = missing
else:
    try:
        import torch, loaderbench
        out["torch"] = str(torch.__version__)
        out["loaderbench"] = str(getattr(loaderbench, "__version__", "?"))
        out["child"] = importlib.util.find_spec("loaderbench.ab.child") is not None
    except BaseException as exc:
        out["error"] = f"{{type(exc).__name__}}: {{exc}}"
print({PROBE_MARK!r} + json.dumps(out), flush=True)
"""
#: How an interpreter is pointed at in advice.
INTERPRETER_ADVICE = (
    "a Python interpreter (e.g. /path/to/venv/bin/python) "
    'or an executable wrapper script that ends with exec python "$@"'
)


def check_interpreter(value: str, *, label: str, cwd: Path) -> str:
    """``value`` as an absolute path to an executable file (a bare name is looked up on ``$PATH``);
    raises :class:`ABError` naming ``label`` (``--loader-ab=...``, ``BASE``) and the fix."""
    if not value:
        raise ABError(f"{label}: empty. Pass {INTERPRETER_ADVICE}.")
    path = Path(value).expanduser()
    if not path.is_absolute():
        found = shutil.which(value) if os.sep not in value and not (cwd / path).exists() else None
        path = Path(found) if found else cwd / path
    if not path.exists():
        raise ABError(f"{label}: {path} does not exist. Pass {INTERPRETER_ADVICE}.")
    if path.is_dir():
        raise ABError(f"{label}: {path} is a directory, not an interpreter. Pass {INTERPRETER_ADVICE}.")
    if not os.access(path, os.X_OK):
        raise ABError(
            f"{label}: {path} is not executable. Make it executable (chmod +x {path}) or pass {INTERPRETER_ADVICE}."
        )
    return str(path)


@dataclass(frozen=True, slots=True)
class Finished:
    """A child that ended: its exit status (negative: killed by that signal), whether the scheduler killed
    it for running past its time, and the tail of what it printed."""

    returncode: int
    timed_out: bool
    output: str

    def status(self) -> str:
        if self.timed_out:
            return "ran past its time limit and was killed"
        if self.returncode < 0:
            try:
                name = signal.Signals(-self.returncode).name
            except ValueError:
                name = f"signal {-self.returncode}"
            return f"was killed by {name}" + (" (the OOM killer?)" if name == "SIGKILL" else "")
        return f"exited with status {self.returncode}"


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def run_grouped(
    argv: Sequence[str], *, label: str, env: Mapping[str, str], cwd: Path, log: Path, timeout_s: float | None
) -> Finished:
    """Run ``argv`` in its own process group with stdout and stderr to ``log``; the group is killed when the
    child ends, on ``timeout_s``, and on any exception (KeyboardInterrupt, and SIGTERM turned into one,
    included), before it propagates.
    A program that cannot be started at all is an :class:`ABError` naming ``label``."""
    with open(log, "wb") as out:
        try:
            proc = subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise ABError(
                f"{label}: {argv[0]} cannot be started ({exc.strerror or exc}); a script needs a #! line. "
                f"Pass {INTERPRETER_ADVICE}."
            ) from None
    timed_out = False
    try:
        with terminate_interrupts():
            deadline = None if timeout_s is None else time.monotonic() + timeout_s
            while os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
                if deadline is not None and time.monotonic() > deadline:
                    timed_out = True
                    break
                time.sleep(0.02)
    finally:
        _kill_group(proc.pid)  # still the group's id: the leader is not reaped yet
        proc.wait()
    return Finished(proc.returncode, timed_out, tail(log))


def tail(path: Path, *, lines: int = 4, limit: int = 600) -> str:
    """The last non-empty lines of a log, joined with `` / `` (one paragraph), cut to ``limit``."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    kept = [ln.strip() for ln in text.splitlines() if ln.strip()][-lines:]
    joined = " / ".join(kept)
    return joined if len(joined) <= limit else "..." + joined[-limit:]


def probe(path: str, *, label: str, env: Mapping[str, str], cwd: Path, workdir: Path) -> dict[str, Any]:
    """Ask ``path`` whether it can import loaderbench (with the A/B child) and torch; its answer, or
    :class:`ABError` naming ``label`` and the fix."""
    log = workdir / "probe.log"
    done = run_grouped([path, "-c", PROBE_CODE], label=label, env=env, cwd=cwd, log=log, timeout_s=PROBE_TIMEOUT_S)
    text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
    answer = next((ln[len(PROBE_MARK) :] for ln in text.splitlines() if ln.startswith(PROBE_MARK)), None)
    if answer is None:
        said = f" and printed: {done.output}" if done.output else " and printed nothing"
        raise ABError(
            f"{label}: {path} does not behave like a Python interpreter: `{path} -c <probe>` {done.status()}{said}. "
            f"Pass {INTERPRETER_ADVICE} (passing every argument on)."
        )
    try:
        found: dict[str, Any] = json.loads(answer)
    except ValueError:
        raise ABError(f"{label}: {path} answered the probe with {answer!r}. Pass {INTERPRETER_ADVICE}.") from None
    install = (
        f"Install loaderbench (which pulls torch) into that environment, e.g. `{path} -m pip install -e .` "
        "from the checkout you want as that arm, or pass the interpreter of an environment that has them"
    )
    if found.get("missing"):
        raise ABError(f"{label}: the interpreter {path} cannot import {' and '.join(found['missing'])}. {install}.")
    if found.get("error"):
        raise ABError(f"{label}: importing loaderbench and torch with {path} failed ({found['error']}). {install}.")
    if not found.get("child"):
        raise ABError(
            f"{label}: {path} has loaderbench {found.get('loaderbench')} without the A/B child "
            "(loaderbench.ab.child): that version predates --loader-ab. Install a loaderbench that has it "
            f"into that environment (`{path} -m pip install -e .` from a checkout with loaderbench/ab/)."
        )
    return found


#: The quick probe: which of the named modules an interpreter cannot find (nothing is imported).
FIND_CODE = """
import importlib.util, json, sys
print({mark!r} + json.dumps([m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]), flush=True)
"""


def missing_modules(
    path: str, modules: Sequence[str], *, label: str, env: Mapping[str, str], cwd: Path, workdir: Path
) -> list[str]:
    """Which of ``modules`` the interpreter at ``path`` cannot find (a quick check: nothing is imported);
    :class:`ABError` when ``path`` does not behave like Python."""
    log = workdir / "find.log"
    code = FIND_CODE.format(mark=PROBE_MARK)
    done = run_grouped([path, "-c", code, *modules], label=label, env=env, cwd=cwd, log=log, timeout_s=PROBE_TIMEOUT_S)
    text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
    answer = next((ln[len(PROBE_MARK) :] for ln in text.splitlines() if ln.startswith(PROBE_MARK)), None)
    try:
        missing = json.loads(answer) if answer is not None else None
    except ValueError:
        missing = None
    if not isinstance(missing, list):
        said = f" and printed: {done.output}" if done.output else " and printed nothing"
        raise ABError(
            f"{label}: {path} does not behave like a Python interpreter: `{path} -c <probe>` {done.status()}{said}. "
            f"Pass {INTERPRETER_ADVICE} (passing every argument on)."
        )
    return [str(m) for m in missing]
