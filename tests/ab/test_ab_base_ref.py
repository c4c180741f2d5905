"""``loaderbench ab --base-ref REF``: the A/B of a pull request in the user's own repository, in one command.

The end-to-end test is the recipe of docs/ab.md as a user runs it: a fresh git repository with a ``src/`` package
and no remote, the project installed editable in its own environment (the head), an uncommitted change that
makes the dataset slower, and ``loaderbench ab --base-ref main HEAD_PYTHON``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from loaderbench import cli
from loaderbench.ab.checkout import base_checkout, installable, linked_environment, project_dir
from loaderbench.ab.errors import ABError
from loaderbench.ab.schedule import moved

PYPROJECT = """
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "userpkg"
version = "0.1"

[tool.setuptools.packages.find]
where = ["src"]
"""
#: The user's dataset: COST_S of sleep per sample (sleep, so the figure does not depend on the CPU's load).
DATASET = """
import time

import torch
from torch.utils.data import Dataset

COST_S = {cost}


class Items(Dataset):
    def __len__(self):
        return 64

    def __getitem__(self, i):
        time.sleep(COST_S)
        return torch.zeros(4)
"""
BENCH = """
from loaderbench.config import LoaderConfig
from userpkg import Items


def test_items(loader_benchmark):
    loader_benchmark(Items, LoaderConfig(batch_size=8))
"""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


def user_repo(path: Path, cost: float = 0.0005) -> Path:
    """A fresh repository with one commit on ``main``, no remote."""
    (path / "src" / "userpkg").mkdir(parents=True)
    (path / "tests").mkdir()
    (path / "pyproject.toml").write_text(PYPROJECT)
    (path / "src" / "userpkg" / "__init__.py").write_text(DATASET.format(cost=cost))
    (path / "tests" / "test_bench.py").write_text(BENCH)
    git(path, "init", "-q", "-b", "main")
    git(path, "-c", "user.name=u", "-c", "user.email=u@example.com", "commit", "-q", "--allow-empty", "-m", "empty")
    git(path, "add", ".")
    git(path, "-c", "user.name=u", "-c", "user.email=u@example.com", "commit", "-q", "-m", "the dataset")
    return path


def descendants() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


@pytest.mark.slow
def test_a_pull_request_against_main_in_the_users_own_repository(pytester: pytest.Pytester, tmp_path: Path) -> None:
    repo = user_repo(pytester.path)
    base_commit = git(repo, "rev-parse", "HEAD")[:12]
    # the pull request: an uncommitted change that makes every sample 8x slower, and a new benchmark test
    (repo / "src" / "userpkg" / "__init__.py").write_text(DATASET.format(cost=0.004))
    (repo / "tests" / "test_new.py").write_text(BENCH.replace("test_items", "test_added"))
    # the user's environment: their project installed editable beside loaderbench and torch
    head, _ = linked_environment(tmp_path / "head-venv", sys.executable, "test")
    subprocess.run(
        [str(head), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e", str(repo)], check=True
    )
    worktrees_before = git(repo, "worktree", "list")
    before = descendants()
    script = Path(sys.executable).parent / "loaderbench"
    result = pytester.run(
        str(script), "ab", "--base-ref", "main", str(head), "--",
        "--loader-rounds=3", "--loader-round-seconds=0.03", "--loader-ab-pairs=6", "-p", "no:cacheprovider",
        timeout=600,
    )  # fmt: skip
    out = result.stdout.str() + result.stderr.str()
    assert result.ret == 1, out
    assert "Traceback" not in out
    made = re.search(r"loaderbench ab: base main = (\w+): worktree (\S+), (\S+) installed into it", out)
    assert made is not None, out
    assert made.group(1) == base_commit
    assert "comparing 2 loader_benchmark test(s) of this repository" in out and "of tier" not in out
    row = next(ln for ln in out.splitlines() if ln.strip().startswith("test:tests/test_bench.py::test_items "))
    assert "samples_per_s" in row and "slower" in row, row
    # the test the pull request adds has no base: said so, and the other test is still compared
    assert "test:tests/test_new.py::test_added" in out and "a test the head adds or renames" in out
    # the arms ran different commits of the user's project, and the A/B says so
    assert re.search(rf"git commit {base_commit} -> {base_commit}\+dirty", out), out
    # cleaned up: the worktree, its environment, every process
    assert not Path(made.group(2)).exists()
    assert git(repo, "worktree", "list") == worktrees_before
    assert descendants() <= before


@pytest.mark.slow
def test_the_base_arm_imports_the_base_commits_code_though_the_head_has_it_editable(tmp_path: Path) -> None:
    repo = user_repo(tmp_path / "repo", cost=0.001)
    (repo / "src" / "userpkg" / "__init__.py").write_text(DATASET.format(cost=0.003))
    head, _ = linked_environment(tmp_path / "head-venv", sys.executable, "test")
    subprocess.run(
        [str(head), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e", str(repo)], check=True
    )
    ask = "import userpkg, torch, loaderbench; print(userpkg.COST_S, userpkg.__file__)"
    with base_checkout("main", cwd=repo, head=str(head)) as base:
        seen = subprocess.run([str(base.interpreter), "-c", ask], capture_output=True, text=True, check=True).stdout
        assert seen.split()[0] == "0.001" and str(base.worktree) not in seen.split()[1]  # installed, not editable
        assert base.installed == str(base.worktree) and base.invocation_dir == base.worktree
    head_seen = subprocess.run([str(head), "-c", ask], capture_output=True, text=True, check=True).stdout
    assert head_seen.split()[0] == "0.003"
    assert not base.worktree.exists() and not base.interpreter.exists()
    assert git(repo, "worktree", "list").count("\n") == 0


def test_base_ref_errors_name_the_ref_and_the_fix(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with (
        pytest.raises(ABError, match=r"--base-ref=main: .* is not inside a git repository"),
        base_checkout("main", cwd=plain, head=sys.executable),
    ):
        pass
    repo = user_repo(tmp_path / "repo")
    with (
        pytest.raises(ABError, match=r"--base-ref=no-such-branch: no such commit .*git branch --all"),
        base_checkout("no-such-branch", cwd=repo, head=sys.executable),
    ):
        pass
    with (
        pytest.raises(ABError, match=r"--base-ref=--x: not a git revision"),
        base_checkout("--x", cwd=repo, head=sys.executable),
    ):
        pass
    assert git(repo, "worktree", "list").count("\n") == 0


def test_a_directory_the_base_commit_lacks_is_an_error_and_leaves_nothing(tmp_path: Path) -> None:
    repo = user_repo(tmp_path / "repo")
    (repo / "newdir").mkdir()
    with (
        pytest.raises(ABError, match=r"the directory you run from, newdir, does not exist at"),
        base_checkout("main", cwd=repo / "newdir", head=sys.executable),
    ):
        pass
    assert git(repo, "worktree", "list").count("\n") == 0


def test_the_project_is_the_nearest_directory_pip_can_install(tmp_path: Path) -> None:
    repo = user_repo(tmp_path / "repo")
    assert project_dir(repo / "tests", repo) == repo
    assert project_dir(tmp_path / "repo" / "src", tmp_path / "repo") == repo
    bare = tmp_path / "bare"
    (bare / "sub").mkdir(parents=True)
    assert project_dir(bare / "sub", bare) is None
    (bare / "pyproject.toml").write_text("[tool.pytest.ini_options]\naddopts = '-q'\n")  # tool settings only
    assert not installable(bare) and project_dir(bare / "sub", bare) is None
    (bare / "setup.cfg").write_text("[metadata]\nname = x\n")
    assert installable(bare)


def test_pythonpath_entries_inside_the_repository_move_to_the_worktree(tmp_path: Path) -> None:
    repo = user_repo(tmp_path / "repo")
    with base_checkout("main", cwd=repo, head=sys.executable) as base:
        value = os.pathsep.join([str(repo / "src"), "relative/dir", str(tmp_path / "elsewhere"), ""])
        moved = base.moved_path_list(value).split(os.pathsep)
        assert moved == [str(base.worktree / "src"), "relative/dir", str(tmp_path / "elsewhere"), ""]


def test_the_base_arms_paths_move_into_its_checkout(tmp_path: Path) -> None:
    head, base = tmp_path / "head" / "sub", tmp_path / "base" / "sub"
    for d in (head, base):
        (d / "fixtures").mkdir(parents=True)
        (d / "fixtures" / "workloads.toml").write_text("")
    assert moved(str(head / "fixtures" / "workloads.toml"), head, base) == str(base / "fixtures" / "workloads.toml")
    assert moved(str(head.parent), head, base) == str(base.parent)  # a rootdir above the invocation directory
    elsewhere = str(tmp_path / "site-packages" / "workloads.toml")
    assert moved(elsewhere, head, base) == elsewhere  # not in the checkout: unchanged
    assert moved(str(head), head, None) == str(head)


def test_cli_ab_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli._split_pytest_args(["ab", "--base-ref", "main", "--", "-k", "x"]) == (
        ["ab", "--base-ref", "main"],
        ["-k", "x"],
    )
    assert cli._split_pytest_args(["ab", "A", "B", "-q"]) == (["ab", "A", "B", "-q"], [])
    with pytest.raises(SystemExit) as exc:
        cli.main(["ab", "--base-ref", "main", "A", "B"])
    assert exc.value.code == 2 and "give at most HEAD" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["ab", "--base-ref", "main", "tests/test_x.py"])
    assert exc.value.code == 2 and "put pytest's arguments after --" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["ab", "A"])
    assert exc.value.code == 2 and "give BASE and HEAD" in capsys.readouterr().err


@pytest.mark.slow
def test_base_dir_without_an_ab_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--benchmark", f"--loader-ab-base-dir={pytester.path}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--loader-ab-base-dir=*: only applies to an A/B. Add --loader-ab=BASE*"])
