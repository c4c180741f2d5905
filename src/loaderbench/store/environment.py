"""The environment: the software a session ran under, recorded with every session and compared.

The OS and kernel, Python, torch and its CUDA build, the GPU driver,
loaderbench's own version, the versions of packages the user names, the git
commit of the working tree, and a hashed host id.  None of it names a baseline
(that is the hardware, :mod:`loaderbench.store.fingerprint`): a torch, driver
or kernel upgrade is what a comparison exists to catch, so every comparison
says what changed (``torch 2.13.0+cpu -> 2.14.1+cpu``).

Nothing here initialises CUDA: the driver comes from NVML or ``/proc``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.metadata
import platform
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from loaderbench.store.fingerprint import gpus_and_driver, read_text
from loaderbench.version import __version__

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

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["packages"] = dict(self.packages)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Environment:
        """Rebuild from :meth:`as_dict` (unknown keys are ignored, missing ones are unknown); raises
        ``ValueError`` naming a mistyped field."""
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            value = data.get(f.name)
            if f.name == "packages":
                value = value or {}
                if not isinstance(value, Mapping) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in value.items()
                ):
                    raise ValueError("environment field 'packages' is not an object of name -> version")
                value = dict(value)
            elif value is not None and not isinstance(value, str):
                raise ValueError(f"environment field {f.name!r} is not a string")
            kwargs[f.name] = value
        return cls(**kwargs)


def changes(before: Environment, after: Environment) -> list[str]:
    """What changed, in words: ``["torch 2.13.0+cpu -> 2.14.1+cpu", "kernel 6.18.44-a -> 6.18.44-b"]``.

    A field unknown on either side is not a change (a format-1 baseline recorded no host id)."""
    out = []
    for name in _BLAME_ORDER:
        a, b = getattr(before, name), getattr(after, name)
        if a is not None and b is not None and a != b:
            out.append(f"{_LABELS[name]} {a} -> {b}")
    for name in sorted(set(before.packages) | set(after.packages)):
        a, b = before.packages.get(name), after.packages.get(name)
        if a is not None and b is not None and a != b:
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
    )


def package_version(name: str) -> str:
    """The installed version of distribution ``name``, or ``not installed``."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


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
    """A hashed id of this host (``/etc/machine-id``, else the DMI product UUID): tells hosts of one
    class apart without revealing the id."""
    for path in (root / "etc/machine-id", root / "var/lib/dbus/machine-id", root / "sys/class/dmi/id/product_uuid"):
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
