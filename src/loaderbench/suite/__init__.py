"""The suite's own benchmark cases, shipped in the package so an installed loaderbench runs its tiers anywhere::

    pytest --benchmark --pyargs loaderbench.suite

``workloads.toml`` and ``noise.toml`` here are the scenario and noise-prior files used when the rootdir has no
``fixtures/workloads.toml`` / ``fixtures/noise.toml`` (kept identical to this repository's ``fixtures/`` copies).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

#: The packaged scenario and noise-prior files.
WORKLOADS = Path(str(files(__name__) / "workloads.toml"))
NOISE = Path(str(files(__name__) / "noise.toml"))


def local_or_packaged(root: Path, packaged: Path) -> Path:
    """``fixtures/<name>`` under the rootdir when it exists (this repository, or a user's own), else the
    packaged copy: an installed loaderbench runs in any directory."""
    local = root / "fixtures" / packaged.name
    return local if local.exists() else packaged
