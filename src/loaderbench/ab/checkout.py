"""The base arm of ``loaderbench ab --base-ref REF``: a git worktree of REF and an environment for it.

As asv builds an environment per commit, but without downloading what the head already has:

1. ``git worktree add --detach`` of REF's commit into a temporary directory (no remote needed: REF is
   anything ``git rev-parse`` resolves, ``main``, ``HEAD~3``, a tag, a commit).
2. A virtual environment made by the head interpreter's ``venv`` module, with no packages of its own
   but one ``.pth`` file that adds the head environment's site directories (``site.addsitedir``, so
   the head's own ``.pth`` files are processed too): torch, pytest, loaderbench and every other
   dependency come from the head, nothing is downloaded.
3. The user's project, the nearest directory at or above the invocation directory that pip can
   install (:func:`installable`: a ``setup.py``/``setup.cfg``, or a ``pyproject.toml`` with a
   ``[project]`` or ``[build-system]`` table), installed from the worktree into that environment's
   own site-packages (``pip install --no-deps`` with the head's pip, or ``uv pip`` where the head has
   none; not editable; build isolation off first so that the head's build backend is used offline,
   on if that fails).  The environment's own
   site-packages comes before the head's on ``sys.path``, and an editable install's finder comes after
   the path finder, so ``import yourpackage`` in the base arm finds the base commit's code even when
   the head has the project installed editable.  A repository without packaging metadata installs
   nothing: the base arm's children run in the worktree, so its tests, conftest and modules next to
   them are the base's anyway.

Both are removed when the A/B ends, however it ends (``git worktree remove --force`` and the
temporary directory; :func:`~loaderbench.ab.command.run_base_ref` turns SIGTERM into an interrupt so
that a cancelled CI job cleans up too).  ``PYTHONPATH`` entries inside the repository are moved to
the worktree for the base arm (:meth:`BaseCheckout.moved_path_list`).  The base arm's children run
in the worktree's copy of the invocation directory (``--loader-ab-base-dir``), so the base's tests
and conftest are the base's.  Problems are
:class:`~loaderbench.ab.errors.ABError` naming ``--base-ref=REF`` and the fix.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from loaderbench.ab.errors import ABError

#: Seconds a git command, the venv creation or the project's install may take.
GIT_TIMEOUT_S = 60.0
INSTALL_TIMEOUT_S = 600.0
#: The head interpreter's site directories (the user's own only where the head reads it) and whether it has pip.
SITE_PROBE = (
    "import importlib.util, json, site; "
    "print(json.dumps({'site': [*site.getsitepackages(), *([site.getusersitepackages()] if site.ENABLE_USER_SITE "
    "else [])], 'pip': importlib.util.find_spec('pip') is not None}))"
)
#: The new environment's own site-packages directory, printed.
OWN_SITE = "import site; print(site.getsitepackages()[0])"


@dataclass(frozen=True, slots=True)
class BaseCheckout:
    """The base arm: REF, its commit, the worktree, the worktree's copy of the invocation directory (where
    the base arm's children run) and the environment's interpreter."""

    ref: str
    commit: str
    worktree: Path
    invocation_dir: Path
    interpreter: Path
    installed: str | None  # the project directory installed into the environment (None: nothing to install)
    top: Path  # the repository's top, whose copy the worktree is

    def moved_path_list(self, value: str) -> str:
        """A ``PYTHONPATH``-style list with every entry inside the repository moved to the worktree's copy, so
        that a ``PYTHONPATH=$PWD/src`` of the user's shell makes the base arm import the base's code."""
        out = []
        for entry in value.split(os.pathsep):
            path = Path(entry)
            if entry and path.is_absolute() and path.resolve().is_relative_to(self.top):
                entry = str(self.worktree / path.resolve().relative_to(self.top))
            out.append(entry)
        return os.pathsep.join(out)


def _git(args: list[str], *, cwd: Path, label: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False
        )
    except FileNotFoundError:
        raise ABError(f"{label}: git is not installed; install git, or pass BASE as an interpreter.") from None
    except subprocess.TimeoutExpired:
        raise ABError(f"{label}: `git {' '.join(args)}` took over {GIT_TIMEOUT_S:g} s in {cwd}.") from None
    if done.returncode != 0:
        raise _GitFailed(done.stderr.strip() or done.stdout.strip() or f"exit status {done.returncode}")
    return done.stdout.strip()


class _GitFailed(Exception):
    """A git command that exited non-zero (its message), turned into an :class:`ABError` by the caller."""


def installable(directory: Path) -> bool:
    """Whether ``directory`` is a Python project pip can install: a ``setup.py`` or ``setup.cfg``, or a
    ``pyproject.toml`` with a ``[project]`` or ``[build-system]`` table (one that only configures tools, as
    many repositories have for pytest or ruff, is not)."""
    if (directory / "setup.py").is_file() or (directory / "setup.cfg").is_file():
        return True
    try:
        table = tomllib.loads((directory / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False
    return "project" in table or "build-system" in table


def project_dir(start: Path, top: Path) -> Path | None:
    """The nearest directory from ``start`` up to ``top`` that is an installable project, or None."""
    here = start
    while True:
        if installable(here):
            return here
        if here == top or here.parent == here:
            return None
        here = here.parent


def _head_site(head: str, label: str) -> tuple[list[str], bool]:
    try:
        done = subprocess.run([head, "-c", SITE_PROBE], capture_output=True, text=True, timeout=120, check=False)
        info = json.loads(done.stdout.strip().splitlines()[-1])
        return [str(p) for p in info["site"]], bool(info["pip"])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError, KeyError, TypeError):
        raise ABError(
            f"{label}: cannot ask the head interpreter {head} for its site directories. Pass HEAD as a Python "
            "interpreter of the environment your project and loaderbench are installed in."
        ) from None


def linked_environment(root: Path, head: str, label: str) -> tuple[Path, bool]:
    """A virtual environment at ``root`` that sees the head's site directories after its own: its interpreter,
    and whether the head has pip (which the environment then has too)."""
    sites, pip = _head_site(head, label)
    python = root / "bin" / "python"
    try:
        subprocess.run(
            [head, "-m", "venv", "--without-pip", str(root)],
            capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=True,
        )  # fmt: skip
        own = subprocess.run([python, "-c", OWN_SITE], capture_output=True, text=True, timeout=120, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ABError(f"{label}: cannot make the base environment with `{head} -m venv`: {exc}.") from None
    lines = [f"import site; site.addsitedir({p!r})" for p in sites if Path(p).is_dir()]
    link = Path(own.stdout.strip()) / "zz-loaderbench-head-environment.pth"
    link.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return python, pip


def _install(interpreter: Path, project: Path, label: str, *, pip: bool) -> None:
    """``pip install --no-deps`` of ``project`` into the environment of ``interpreter`` (the head's pip; uv's
    where the head has no pip, as environments uv makes have none)."""
    uv = shutil.which("uv")
    if pip:
        base = [str(interpreter), "-m", "pip", "install", "--no-deps", "--ignore-installed", "--no-input", "-q"]
        base.append("--disable-pip-version-check")
    elif uv is not None:
        base = [uv, "pip", "install", "--python", str(interpreter), "--no-deps", "--reinstall", "-q"]
    else:
        raise ABError(
            f"{label}: HEAD's environment has no pip (and uv is not on PATH) to install your project from the base "
            "commit. Install pip into it (`python -m ensurepip`), or put uv on PATH."
        )
    said = []
    for isolation in (["--no-build-isolation"], []):
        try:
            done = subprocess.run(
                [*base, *isolation, str(project)], capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S
            )
        except subprocess.TimeoutExpired:
            raise ABError(f"{label}: installing the base commit's project took over {INSTALL_TIMEOUT_S:g} s.") from None
        except OSError as exc:
            raise ABError(f"{label}: cannot run the installer {base[0]}: {exc}.") from None
        if done.returncode == 0:
            return
        said.append((done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["(no output)"])
    raise ABError(
        f"{label}: the base commit's project in {project} does not install (pip said: {said[-1][0]}). Check that "
        "it builds (`pip install --no-deps .` in a checkout of that commit), or make the base environment yourself "
        "and run `loaderbench ab BASE_PYTHON HEAD_PYTHON`."
    )


@contextlib.contextmanager
def base_checkout(ref: str, *, cwd: Path, head: str) -> Iterator[BaseCheckout]:
    """The base arm for ``--base-ref=ref`` from the repository ``cwd`` is in, removed on leaving."""
    label = f"--base-ref={ref}"
    if not ref or ref.startswith("-"):
        raise ABError(f"{label}: not a git revision. Give a branch, tag or commit, e.g. --base-ref=main.")
    try:
        top = Path(_git(["rev-parse", "--show-toplevel"], cwd=cwd, label=label)).resolve()
    except _GitFailed:
        raise ABError(
            f"{label}: {cwd} is not inside a git repository. Run loaderbench ab from your repository, or make "
            "both environments yourself and run `loaderbench ab BASE_PYTHON HEAD_PYTHON`."
        ) from None
    try:
        commit = _git(["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], cwd=top, label=label)
    except _GitFailed:
        raise ABError(
            f"{label}: no such commit in {top}. Give a branch, tag or commit that `git rev-parse {ref}` resolves "
            "(`git branch --all` lists the branches; a remote's branch needs `git fetch` first)."
        ) from None
    scratch = Path(tempfile.mkdtemp(prefix="loaderbench-ab-base-"))
    worktree = scratch / "worktree"
    added = False
    try:
        try:
            _git(["worktree", "add", "--detach", "--quiet", str(worktree), commit], cwd=top, label=label)
        except _GitFailed as exc:
            raise ABError(f"{label}: `git worktree add` of {commit[:12]} failed: {exc}.") from None
        added = True
        invocation = worktree / cwd.resolve().relative_to(top)
        if not invocation.is_dir():
            raise ABError(
                f"{label}: the directory you run from, {cwd.resolve().relative_to(top)}, does not exist at "
                f"{commit[:12]}. Run loaderbench ab from a directory both commits have (e.g. the repository's top)."
            )
        interpreter, pip = linked_environment(scratch / "venv", head, label)
        project = project_dir(cwd.resolve(), top)
        installed = None
        if project is not None and installable(worktree / project.relative_to(top)):
            installed = str(worktree / project.relative_to(top))
            _install(interpreter, Path(installed), label, pip=pip)
        yield BaseCheckout(ref, commit, worktree, invocation, interpreter, installed, top)
    finally:
        if added:
            with contextlib.suppress(_GitFailed, ABError):
                _git(["worktree", "remove", "--force", str(worktree)], cwd=top, label=label)
        shutil.rmtree(scratch, ignore_errors=True)
        with contextlib.suppress(_GitFailed, ABError):
            _git(["worktree", "prune"], cwd=top, label=label)
