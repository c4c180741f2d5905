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


def test_a_host_without_a_machine_id_is_known_by_its_boot_id(tmp_path: Path) -> None:
    (tmp_path / "proc/sys/kernel/random").mkdir(parents=True)
    (tmp_path / "proc/sys/kernel/random/boot_id").write_text("5f1c-boot\n")
    assert envm.host_id(tmp_path) == hashlib.sha256(b"5f1c-boot").hexdigest()[:12]
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/machine-id").write_text("0123456789abcdef\n")
    assert envm.host_id(tmp_path) == hashlib.sha256(b"0123456789abcdef").hexdigest()[:12]


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


# --- every installed distribution ------------------------------------------------------------------


def test_current_records_every_installed_distribution_and_the_workload_packages() -> None:
    env = envm.current()
    assert env.distributions is not None
    assert env.distributions["pytest"] == envm.package_version("pytest")
    assert env.distributions["torch"] == envm.package_version("torch")
    for name in envm.WORKLOAD_PACKAGES:
        installed = envm.package_version(name)
        if installed != envm.NOT_INSTALLED:
            assert env.distributions[envm.normalise(name)] == installed
    assert all(key == envm.normalise(key) for key in env.distributions)
    data = env.as_dict()
    assert data["version"] == envm.VERSION == 2
    assert Environment.from_dict(data) == env


def test_names_are_normalised_like_pip() -> None:
    assert envm.normalise("Typing_Extensions") == "typing-extensions"
    assert envm.normalise("zope.interface") == envm.normalise("Zope-Interface") == "zope-interface"
    assert envm.normalise("Pillow") == "pillow"


BASE = {"pillow": "11.0.0", "numpy": "2.1.0", "spdl": "0.8.0", "torch": "2.13.0+cpu", "pytest": "8.3.0"}


def test_changes_name_every_changed_added_and_removed_distribution() -> None:
    before = Environment(torch="2.13.0+cpu", distributions=BASE)
    installed = {k: v for k, v in BASE.items() if k != "spdl"}  # spdl uninstalled
    after = Environment(
        torch="2.14.1+cpu",
        distributions={**installed, "pillow": "12.0.0", "torchdata": "0.11.0", "torch": "2.14.1+cpu", "aaa-new": "1"},
    )
    assert changes(before, after) == [
        "torch 2.13.0+cpu -> 2.14.1+cpu",  # named once, by its field
        "Pillow 11.0.0 -> 12.0.0",  # the workload packages first, under their usual names
        "torchdata (new) 0.11.0",
        "spdl 0.8.0 (removed)",
        "aaa-new (new) 1",  # then every other distribution, by name
    ]
    assert changes(before, before) == []


def test_the_packages_the_user_named_come_first_and_not_installed_reads_as_absent() -> None:
    before = Environment(packages={"My_Lib": "not installed"}, distributions=BASE)
    after = Environment(packages={"My_Lib": "1.0"}, distributions={**BASE, "my-lib": "1.0", "numpy": "2.2.0"})
    assert changes(before, after) == ["My_Lib (new) 1.0", "numpy 2.1.0 -> 2.2.0"]


def test_a_long_list_of_changes_is_bounded() -> None:
    before = Environment(distributions={f"pkg{i:02d}": "1.0" for i in range(30)})
    after = Environment(distributions={f"pkg{i:02d}": "2.0" for i in range(30)})
    found = changes(before, after)
    assert len(found) == envm.MAX_NAMED_CHANGES + 1 == 13
    assert found[0] == "pkg00 1.0 -> 2.0" and found[11] == "pkg11 1.0 -> 2.0"
    assert found[-1] == "and 18 more distributions changed"
    assert changes(before, after, limit=40)[-1] == "pkg29 1.0 -> 2.0"


def test_an_environment_recorded_before_distributions_loads_and_compares_on_what_it_has() -> None:
    old = Environment.from_dict(  # format 1: no version, no distributions, only the packages the user named
        {"torch": "2.13.0+cpu", "kernel": "6.1", "packages": {"numpy": "2.1.0"}, "host_id": "h"}
    )
    assert old.distributions is None and old.packages == {"numpy": "2.1.0"}
    new = Environment(torch="2.13.0+cpu", kernel="6.1", distributions={**BASE, "numpy": "2.2.0", "extra": "1"})
    # numpy is known on both sides; Pillow, spdl and the rest were not recorded before: not changes
    assert changes(old, new) == ["numpy 2.1.0 -> 2.2.0"]
    assert changes(new, old) == ["numpy 2.2.0 -> 2.1.0"]


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"version": "2"}, "'version' is '2'"),
        ({"version": 2, "distributions": {"numpy": 2}}, "'distributions' is not an object of name -> version"),
        ({"version": 2, "distributions": ["numpy"]}, "'distributions'"),
    ],
)
def test_from_dict_names_a_mistyped_version_or_distributions(data: dict[str, object], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        Environment.from_dict(data)
