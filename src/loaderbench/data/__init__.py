"""The suite's data, kept once and shipped in the package: the workload scenarios (``workloads.toml``) and the
gate's noise priors (``noise.toml``).  A rootdir's own ``fixtures/workloads.toml`` or ``fixtures/noise.toml``
(a user's repository) takes their place; without one, these are used, so an installed loaderbench runs anywhere."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

#: The packaged scenario and noise-prior files.
WORKLOADS = Path(str(files(__name__) / "workloads.toml"))
NOISE = Path(str(files(__name__) / "noise.toml"))


def local_or_packaged(root: Path, packaged: Path) -> Path:
    """``fixtures/<name>`` under the rootdir when it exists (a user's own), else the packaged file."""
    local = root / "fixtures" / packaged.name
    return local if local.exists() else packaged
