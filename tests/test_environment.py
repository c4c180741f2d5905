"""The environment: what a session ran under, recorded and compared (never part of the baseline's name)."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from loaderbench.store import environment as envm
from loaderbench.store.environment import Environment, changes


def test_current_records_the_software_and_a_hashed_host(tmp_path: Path) -> None:
    env = envm.current(packages=["pytest", "surely-not-a-package"], repo=tmp_path)
    assert env.torch and env.python and env.python.startswith(("CPython", "PyPy"))
    assert env.kernel and env.loaderbench
    assert env.packages["surely-not-a-package"] == "not installed" and env.packages["pytest"][0].isdigit()
    assert env.git_commit is None  # not a git checkout
    assert Environment.from_dict(env.as_dict()) == env


def test_host_id_is_a_hash_of_the_machine_id(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/machine-id").write_text("0123456789abcdef\n")
    assert envm.host_id(tmp_path) == hashlib.sha256(b"0123456789abcdef").hexdigest()[:12]
    assert envm.host_id(tmp_path / "nowhere") is None


def test_git_commit_of_the_working_tree(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "f").write_text("a")
    git("add", "f")
    git("-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "-m", "x")
    commit = envm.git_commit(tmp_path)
    assert commit is not None and len(commit) == 12
    (tmp_path / "f").write_text("b")
    assert envm.git_commit(tmp_path) == f"{commit}+dirty"


def test_changes_name_what_changed_torch_first_and_skip_the_unknown() -> None:
    before = Environment(
        torch="2.13.0+cpu", kernel="6.18.44-fc-v669", python="CPython 3.11.7", packages={"numpy": "2.1"}
    )
    after = Environment(
        torch="2.14.1+cpu", kernel="6.18.44-fc-v857", python="CPython 3.11.7", packages={"numpy": "2.2"}
    )
    assert changes(before, after) == [
        "torch 2.13.0+cpu -> 2.14.1+cpu",
        "kernel 6.18.44-fc-v669 -> 6.18.44-fc-v857",
        "numpy 2.1 -> 2.2",
    ]
    assert changes(Environment(), after) == []  # nothing known before: nothing to blame


def test_from_dict_names_a_mistyped_field() -> None:
    with pytest.raises(ValueError, match="'torch' is not a string"):
        Environment.from_dict({"torch": 2})
    with pytest.raises(ValueError, match="'packages'"):
        Environment.from_dict({"packages": ["numpy"]})
