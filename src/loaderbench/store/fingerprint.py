"""The hardware fingerprint: what names a baseline, because it makes numbers incomparable by nature.

It holds the architecture, the CPU model, the CPUs in the affinity mask and
the cgroup CPU quota, total RAM (rounded) and the GPU models, and nothing
volatile (clock speed, load, free memory, host name), so the same runner class
gives the same fingerprint on every run.  Software is not part of it: the
kernel, Python, torch, CUDA and the GPU driver are the *environment*
(:mod:`loaderbench.store.environment`), recorded with every session and
compared, never keyed, so a torch or driver upgrade is exactly what a baseline
comparison catches.

Nothing here initialises CUDA: GPU names and the driver come from NVML or from
``/proc/driver/nvidia``, never from ``torch.cuda`` (initialising CUDA in the
parent breaks fork-started workers, pytorch#68383).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from loaderbench.machine import affinity_cpus

#: RAM is rounded to this many bytes, so kernel reservations that differ by a few MiB do not split baselines.
_RAM_ROUNDING = 256 * 2**20

_LABELS = {
    "machine": "architecture",
    "cpu_model": "CPU model",
    "affinity_cpus": "CPUs in the affinity mask",
    "cpu_quota": "cgroup CPU quota",
    "ram_bytes": "total RAM",
    "gpus": "GPUs",
}
#: Fields that format-1 fingerprints also held; they are the environment now.
ENVIRONMENT_FIELDS = ("os", "python", "torch", "cuda", "gpu_driver")


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """The hardware identity of a machine.  ``cpu_quota`` is in CPUs (None: no quota); ``gpus`` lists
    GPU model names."""

    machine: str
    cpu_model: str
    affinity_cpus: int
    cpu_quota: float | None
    ram_bytes: int
    gpus: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["gpus"] = list(self.gpus)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fingerprint:
        """Rebuild from :meth:`as_dict` (format-1 documents' extra software fields are ignored: they are
        the environment now); raises ``ValueError`` naming a missing or mistyped field."""
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in data:
                raise ValueError(f"fingerprint field {f.name!r} is missing")
            kwargs[f.name] = data[f.name]
        if not isinstance(kwargs["gpus"], list) or not all(isinstance(g, str) for g in kwargs["gpus"]):
            raise ValueError("fingerprint field 'gpus' is not a list of names")
        kwargs["gpus"] = tuple(kwargs["gpus"])
        for name in ("affinity_cpus", "ram_bytes"):
            if not isinstance(kwargs[name], int) or isinstance(kwargs[name], bool):
                raise ValueError(f"fingerprint field {name!r} is not an integer")
        quota = kwargs["cpu_quota"]
        if quota is not None and not isinstance(quota, (int, float)):
            raise ValueError("fingerprint field 'cpu_quota' is not a number")
        for name in ("machine", "cpu_model"):
            if not isinstance(kwargs[name], str):
                raise ValueError(f"fingerprint field {name!r} is not a string")
        return cls(**kwargs)

    @property
    def key(self) -> str:
        """A short stable key for file names: a readable prefix plus a hash of every field.

        For example ``x86_64-2cpu-24gib-cpu-1a2b3c4d5e6f``.
        """
        canonical = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(canonical.encode()).hexdigest()[:12]
        cpus = self.affinity_cpus if self.cpu_quota is None else min(self.affinity_cpus, self.cpu_quota)
        gpu = _slug(self.gpus[0]) if self.gpus else "cpu"
        return f"{_slug(self.machine)}-{cpus:g}cpu-{round(self.ram_bytes / 2**30)}gib-{gpu}-{digest}"


def _slug(text: str) -> str:
    words = re.sub(r"[^a-z0-9_]+", "-", text.lower()).strip("-").split("-")
    drop = {"nvidia", "geforce", "tesla", "amd", "intel", "r", "tm", "cpu", "pcie", "sxm", "sxm5", "gb", "nvl"}
    kept = [w for w in words if w and w not in drop]
    return "-".join(kept[:2]) or "unknown"


def diff(baseline: Fingerprint, current: Fingerprint) -> list[str]:
    """What differs, in words: ``"torch: 2.12.0 (baseline) vs 2.13.0 (this machine)"``.  Empty when equal."""
    out = []
    for f in dataclasses.fields(Fingerprint):
        a, b = getattr(baseline, f.name), getattr(current, f.name)
        if a != b:
            out.append(f"{_LABELS[f.name]}: {_show(f.name, a)} (baseline) vs {_show(f.name, b)} (this machine)")
    return out


def _show(name: str, value: Any) -> str:
    if value is None:
        return "none"
    if name == "ram_bytes":
        return f"{value / 2**30:.2f} GiB"
    if name == "gpus":
        return ", ".join(value) if value else "no GPU"
    return str(value)


# --- probing this machine -----------------------------------------------------------


#: The GPU model of a run on the simulated device (``--loader-simulated-gpu``); the name of
#: :data:`loaderbench.testing.simulated_gpu.SIMULATED_GPU_NAME`, kept here so that reading a fingerprint
#: imports nothing of the simulation.
SIMULATED_GPU = "loaderbench simulated GPU"


def current(*, root: str | os.PathLike[str] = "/", simulated_gpu: bool = False) -> Fingerprint:
    """The fingerprint of this machine.  ``root`` lets tests point the /proc and /sys probes elsewhere.

    With ``simulated_gpu`` (a run on the simulated device) the GPU list starts with :data:`SIMULATED_GPU`, so
    its baseline is keyed apart from this machine's real GPUs (and from a CPU-only run) and never compared
    with a real GPU's, whichever GPUs the machine has."""
    base = Path(root)
    gpus, _ = gpus_and_driver(base)
    if simulated_gpu:
        gpus = (SIMULATED_GPU, *gpus)
    affinity = affinity_cpus()
    ram = int(psutil.virtual_memory().total)
    return Fingerprint(
        machine=platform.machine() or "unknown",
        cpu_model=_cpu_model(base),
        affinity_cpus=affinity,
        cpu_quota=cgroup_cpu_quota(base),
        ram_bytes=round(ram / _RAM_ROUNDING) * _RAM_ROUNDING,
        gpus=gpus,
    )


def read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _cpu_model(root: Path) -> str:
    text = read_text(root / "proc/cpuinfo") or ""
    for key in ("model name", "Hardware", "Processor", "cpu model"):
        for line in text.splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip() == key and value.strip():
                return " ".join(value.split())
    return platform.processor() or platform.machine() or "unknown"


def cgroup_cpu_quota(root: Path = Path("/")) -> float | None:
    """The cgroup CPU quota in CPUs (cgroup v2 ``cpu.max`` or v1 ``cfs_quota_us``); None when unlimited."""
    groups = read_text(root / "proc/self/cgroup") or ""
    v2_paths, v1_paths = [], []
    for line in groups.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            v2_paths.append(path)
        elif "cpu" in controllers.split(","):
            v1_paths.append((controllers, path))
    sysfs = root / "sys/fs/cgroup"
    for path in v2_paths:
        for base in (sysfs / path.lstrip("/"), sysfs):
            text = read_text(base / "cpu.max")
            if text is not None:
                quota, _, period = text.strip().partition(" ")
                if quota == "max" or not period:
                    return None
                return _ratio(quota, period)
    for controllers, path in v1_paths:
        for mount in (sysfs / controllers, sysfs / "cpu", sysfs / "cpu,cpuacct"):
            for base in (mount / path.lstrip("/"), mount):
                quota_text = read_text(base / "cpu.cfs_quota_us")
                period_text = read_text(base / "cpu.cfs_period_us")
                if quota_text is not None and period_text is not None:
                    if quota_text.strip().startswith("-"):
                        return None
                    return _ratio(quota_text.strip(), period_text.strip())
    return None


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return round(q / p, 2) if p > 0 else None


def gpus_and_driver(root: Path = Path("/")) -> tuple[tuple[str, ...], str | None]:
    """GPU names and the driver version, without initialising CUDA: NVML first, then /proc/driver/nvidia."""
    try:
        import pynvml  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        pynvml = None
    if pynvml is not None and root == Path("/"):
        try:
            pynvml.nvmlInit()
            try:
                driver = _text(pynvml.nvmlSystemGetDriverVersion())
                count = pynvml.nvmlDeviceGetCount()
                handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
                return tuple(sorted(_text(pynvml.nvmlDeviceGetName(h)) for h in handles)), driver
            finally:
                pynvml.nvmlShutdown()
        except Exception:  # NVML missing or broken: fall back to /proc
            pass
    proc = root / "proc/driver/nvidia"
    version = read_text(proc / "version")
    found: str | None = None
    if version:
        match = re.search(r"Kernel Module(?: for [\w_]+)?\s+([\d.]+)", version)
        found = match.group(1) if match else None
    names: list[str] = []
    gpus_dir = proc / "gpus"
    if gpus_dir.is_dir():
        for info in sorted(gpus_dir.glob("*/information")):
            for line in (read_text(info) or "").splitlines():
                key, sep, value = line.partition(":")
                if sep and key.strip() == "Model":
                    names.append(value.strip())
    return tuple(sorted(names)), found


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
