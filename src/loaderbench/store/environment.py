"""The environment: the software a session ran under, recorded with every session and compared.

The OS and kernel, Python, torch and its CUDA build, the GPU driver,
loaderbench's own version, the versions of packages the user names, every
installed distribution, the git commit of the working tree, and a hashed host
id.  None of it names a baseline (that is the hardware,
:mod:`loaderbench.store.fingerprint`): a torch, driver or kernel upgrade is what
a comparison exists to catch, so every comparison says what changed
(``torch 2.13.0+cpu -> 2.14.1+cpu``, ``Pillow 11.0.0 -> 12.0.0``,
``torchdata (new) 0.11.0``, ``spdl 0.8.0 (removed)``).

Format (``"version"`` in :meth:`Environment.as_dict`):

* 1 (no ``version`` key): the fields, ``packages`` holding only the packages the user
  named (``--loader-env-packages``; ``"not installed"`` for a missing one).
* 2: adds ``distributions``, every installed distribution (normalised name -> version;
  the workload packages Pillow, numpy, torchdata and spdl always among them when installed).
  A version-1 environment reads with ``distributions=None`` (not recorded), and a
  comparison with it names changes only of what both sides recorded.

Nothing here initialises CUDA: the driver comes from NVML or ``/proc``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.metadata
import platform
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from loaderbench.config_rules import PIPELINE_FACTS
from loaderbench.store.fingerprint import gpus_and_driver, read_text
from loaderbench.version import __version__

#: The format :meth:`Environment.as_dict` writes (see the module docstring).
VERSION = 2
#: The distributions the suite's own workloads and pipelines use: always recorded when installed, and named first.
WORKLOAD_PACKAGES = tuple(
    dict.fromkeys(["Pillow", "numpy", *(dist for f in PIPELINE_FACTS.values() for _, dist in f.requires)])
)
#: At most this many package changes are named; the rest are counted ("and N more").
MAX_NAMED_CHANGES = 12
NOT_INSTALLED = "not installed"
#: Distributions whose change an environment field already names (when both sides know it).
_FIELD_DISTRIBUTIONS = {"torch": "torch", "loaderbench": "loaderbench"}

#: The order changes are named in: the likeliest to explain a difference first.
_BLAME_ORDER = ("torch", "cuda", "gpu_driver", "python", "kernel", "os", "loaderbench", "git_commit", "host_id")
_LABELS = {
    "os": "OS",
    "kernel": "kernel",
    "python": "Python",
    "torch": "torch",
    "cuda": "CUDA (torch build)",
    "gpu_driver": "GPU driver",
    "loaderbench": "loaderbench",
    "git_commit": "git commit",
    "host_id": "host",
}


@dataclass(frozen=True, slots=True)
class Environment:
    """What a session ran under.  ``None``: unknown (not recorded, or not present on this machine)."""

    os: str | None = None
    kernel: str | None = None
    python: str | None = None
    torch: str | None = None
    cuda: str | None = None
    gpu_driver: str | None = None
    loaderbench: str | None = None
    packages: Mapping[str, str] = field(default_factory=dict)
    git_commit: str | None = None
    host_id: str | None = None
    #: Every installed distribution, normalised name -> version; ``None``: not recorded (format 1).
    distributions: Mapping[str, str] | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": VERSION, **dataclasses.asdict(self)}
        out["packages"] = dict(self.packages)
        if self.distributions is not None:
            out["distributions"] = dict(self.distributions)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Environment:
        """Rebuild from :meth:`as_dict` (unknown keys are ignored, missing ones are unknown); raises
        ``ValueError`` naming a mistyped field."""
        version = data.get("version", 1)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(f"environment field 'version' is {version!r}, not a format version (1, 2, ...)")
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            value = data.get(f.name)
            if f.name == "distributions" and value is None:
                pass  # format 1: not recorded
            elif f.name in ("packages", "distributions"):
                value = value or {}
                if not isinstance(value, Mapping) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in value.items()
                ):
                    raise ValueError(f"environment field {f.name!r} is not an object of name -> version")
                value = dict(value)
            elif value is not None and not isinstance(value, str):
                raise ValueError(f"environment field {f.name!r} is not a string")
            kwargs[f.name] = value
        return cls(**kwargs)


def changes(before: Environment, after: Environment, *, limit: int = MAX_NAMED_CHANGES) -> list[str]:
    """What changed, in words: ``["torch 2.13.0+cpu -> 2.14.1+cpu", "kernel 6.18.44-a -> 6.18.44-b",
    "Pillow 11.0.0 -> 12.0.0", "torchdata (new) 0.11.0", "spdl 0.8.0 (removed)"]``.

    A field unknown on either side is not a change (a format-1 baseline recorded no host id), nor is a
    distribution that one side did not record (a format-1 environment knows only the packages the user
    named).  The fields come first, then the packages the user named, the workload packages, and the
    other distributions by name; past ``limit`` package changes, the rest are counted ("and 30 more
    distributions changed")."""
    out = []
    for name in _BLAME_ORDER:
        a, b = getattr(before, name), getattr(after, name)
        if a is not None and b is not None and a != b:
            out.append(f"{_LABELS[name]} {a} -> {b}")
    packages = _package_changes(before, after)
    if len(packages) > limit:
        packages = [*packages[:limit], f"and {len(packages) - limit} more distributions changed"]
    return out + packages


def normalise(name: str) -> str:
    """A distribution's normalised name (PEP 503: ``Typing_Extensions`` -> ``typing-extensions``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


_UNKNOWN = object()


def _version(env: Environment, key: str) -> object:
    """``key``'s version in ``env``: a string, ``None`` (known not installed) or ``_UNKNOWN`` (not recorded)."""
    if env.distributions is not None and key in env.distributions:
        return env.distributions[key]
    for name, version in env.packages.items():
        if normalise(name) == key:
            return None if version == NOT_INSTALLED else version
    return None if env.distributions is not None else _UNKNOWN


def _package_changes(before: Environment, after: Environment) -> list[str]:
    shown: dict[str, str] = {normalise(n): n for n in WORKLOAD_PACKAGES}
    shown.update((normalise(n), n) for env in (before, after) for n in env.packages)
    named = sorted({normalise(n) for env in (before, after) for n in env.packages})
    workload = [normalise(n) for n in WORKLOAD_PACKAGES]
    rest = sorted({*(before.distributions or {}), *(after.distributions or {})})
    out = []
    for key in dict.fromkeys([*named, *workload, *rest]):
        field_name = _FIELD_DISTRIBUTIONS.get(key)
        if field_name is not None and getattr(before, field_name) is not None and getattr(after, field_name):
            continue  # named by its field already
        a, b = _version(before, key), _version(after, key)
        if a is _UNKNOWN or b is _UNKNOWN or a == b:
            continue
        name = shown.get(key, key)
        if a is None:
            out.append(f"{name} (new) {b}")
        elif b is None:
            out.append(f"{name} {a} (removed)")
        else:
            out.append(f"{name} {a} -> {b}")
    return out


def current(*, packages: Sequence[str] = (), repo: str | Path | None = None) -> Environment:
    """This process's environment; ``packages`` are distribution names whose versions to record,
    ``repo`` the working tree whose git commit to record (none when it is not a git checkout)."""
    _, driver = gpus_and_driver()
    return Environment(
        os=_os_name(),
        kernel=platform.release() or None,
        python=f"{platform.python_implementation()} {platform.python_version()}",
        torch=str(torch.__version__),
        cuda=torch.version.cuda,
        gpu_driver=driver,
        loaderbench=__version__,
        packages={name: package_version(name) for name in packages},
        git_commit=git_commit(repo) if repo is not None else None,
        host_id=host_id(),
        distributions=installed_distributions(),
    )


def installed_distributions() -> dict[str, str]:
    """Every installed distribution, normalised name -> version, by name; where a name is installed twice,
    the one found first on ``sys.path`` (the one ``import`` finds).  The workload packages are looked up
    one by one as well, so they are recorded even where another distribution's metadata is unreadable."""
    out: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for dist in importlib.metadata.distributions():
            try:
                name, version = dist.metadata["Name"], dist.version
            except (OSError, ValueError, KeyError):
                continue  # broken metadata: that one distribution is not recorded
            if name and version:
                out.setdefault(normalise(str(name)), str(version))
    for name in WORKLOAD_PACKAGES:
        version = package_version(name)
        if version != NOT_INSTALLED:
            out.setdefault(normalise(name), version)
    return dict(sorted(out.items()))


def package_version(name: str) -> str:
    """The installed version of distribution ``name``, or ``not installed``."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return NOT_INSTALLED


def git_commit(repo: str | Path) -> str | None:
    """``HEAD``'s commit of the working tree at ``repo`` (``+dirty`` with uncommitted changes), or None."""
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = head.stdout.strip()[:12]
    return f"{commit}+dirty" if dirty.returncode == 0 and dirty.stdout.strip() else commit


def host_id(root: Path = Path("/")) -> str | None:
    """A hashed id of this host (``/etc/machine-id``, else the DMI product UUID, else the kernel's boot id):
    tells hosts of one class apart without revealing the id.  The boot id is the last resort, for the
    containers and VMs that have neither (a GPU machine lent for one session had none): it holds for one
    boot, so a rebooted host counts as another one, the cautious side (between-host noise is allowed for)."""
    for path in (
        root / "etc/machine-id",
        root / "var/lib/dbus/machine-id",
        root / "sys/class/dmi/id/product_uuid",
        root / "proc/sys/kernel/random/boot_id",
    ):
        text = (read_text(path) or "").strip()
        if text:
            return hashlib.sha256(text.encode()).hexdigest()[:12]
    return None


def _os_name() -> str:
    system = platform.system() or "unknown"
    pretty = ""
    with contextlib.suppress(OSError):
        pretty = platform.freedesktop_os_release().get("PRETTY_NAME", "")
    return f"{system} ({pretty})" if pretty else system
