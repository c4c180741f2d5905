"""What a CUDA case is, and whether it may run here: ``CudaSpec``, availability, fork safety.

Nothing in this module creates a CUDA context, so the plugin can use it at
collection time, before any fork-started worker of a CPU case.

Fork safety.  A CUDA case creates a CUDA context in this process, and a process
holding one must not fork DataLoader workers (forked children cannot use CUDA,
and forking a CUDA parent slowed the loader, pytorch#68383).  CUDA cases
therefore use the spawn or forkserver start method (:func:`check_start_method`),
and run after every fork-started CPU case of the session
(:func:`parent_cuda_initialized` and :func:`fork_hazard` tell whether that held).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import torch

from loaderbench import ids
from loaderbench.config import LoaderConfig
from loaderbench.config_rules import fail

#: How a CUDA case copies batches to the GPU (:attr:`CudaSpec.pipeline`); not a loader pipeline
#: (``LoaderConfig.pipeline``, :mod:`loaderbench.pipelines`).
CudaPipeline = Literal["plain", "prefetcher"]
CUDA_PIPELINES: tuple[CudaPipeline, ...] = ("plain", "prefetcher")
_PIPELINE_TOKEN: dict[str, CudaPipeline] = {"plain": "plain", "prefetch": "prefetcher"}

#: Start methods a CUDA case may use for its workers.
SAFE_START_METHODS = ("spawn", "forkserver")


def _ms_token(ms: float) -> str:
    """``5`` for 5.0, ``2.5`` for 2.5, ``0.00001`` for 1e-05: the shortest exact decimal, never an exponent
    (whose ``-`` would split the id), so ids round-trip and never collide in baselines."""
    text = format(Decimal(repr(float(ms))), "f")
    return text[:-2] if text.endswith(".0") else text


#: How each field appears in a CUDA spec id (``CudaSpec.id`` writes them in this order).
_ID_TOKENS: tuple[ids.Token, ...] = (
    ids.Token("step_ms", prefix="step", suffix="ms", parse=float, example="step5ms"),
    *ids.choices("non_blocking", {"nb": True, "sync": False}),
    *ids.choices("pipeline", _PIPELINE_TOKEN),
    ids.Token("queue_depth", prefix="q", parse=ids.digits, example="q1"),
)


@dataclass(frozen=True, slots=True)
class CudaSpec:
    """The consumer side of a CUDA case: how each batch is fed to the GPU.

    ``step_ms`` is the simulated compute per batch (0 is a pure feed, where
    only the copy counts).  ``non_blocking`` is passed to ``Tensor.to``; it
    only overlaps the copy with host work when the batch is pinned
    (``pin_memory=True``), which the consumer records.  ``queue_depth`` bounds
    how many steps the host may run ahead of the GPU, as a training loop that
    reads a loss every step or two does; it also bounds the GPU memory held by
    queued batches.
    """

    step_ms: float = 0.0
    non_blocking: bool = True
    pipeline: CudaPipeline = "plain"
    queue_depth: int = 2

    def __post_init__(self) -> None:
        ms = self.step_ms
        if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not math.isfinite(ms) or ms < 0:
            raise fail(
                "step_ms", ms, "must be a finite number of milliseconds >= 0", "Use 0 for a pure feed, or e.g. 5"
            )
        object.__setattr__(self, "step_ms", float(ms))  # 5 and 5.0 give one id and one JSON value
        if not isinstance(self.non_blocking, bool):
            raise fail("non_blocking", self.non_blocking, "must be True or False", "Pass a bool")
        if self.pipeline not in CUDA_PIPELINES:
            raise fail("pipeline", self.pipeline, "is not a CUDA pipeline", f"Use one of {CUDA_PIPELINES}")
        q = self.queue_depth
        if isinstance(q, bool) or not isinstance(q, int) or q < 1:
            raise fail(
                "queue_depth", q, "must be an integer >= 1", "Use 2 (the default) or 1 for a loop that syncs every step"
            )

    @property
    def id(self) -> str:
        """Short readable id appended to the case id, e.g. ``step5ms-nb-plain`` or ``step0ms-sync-prefetch``."""
        parts = [f"step{_ms_token(self.step_ms)}ms", "nb" if self.non_blocking else "sync"]
        parts.append("plain" if self.pipeline == "plain" else "prefetch")
        if self.queue_depth != 2:
            parts.append(f"q{self.queue_depth}")
        return ids.encode(parts)

    @classmethod
    def from_id(cls, text: str) -> CudaSpec:
        """Parse an id written by :attr:`id` (for baselines and command-line selection)."""
        return cls(**ids.decode(text, _ID_TOKENS, name="cuda_spec"))

    def as_dict(self) -> dict[str, Any]:
        return {
            "step_ms": self.step_ms,
            "non_blocking": self.non_blocking,
            "pipeline": self.pipeline,
            "queue_depth": self.queue_depth,
        }


def cuda_available() -> tuple[bool, str]:
    """``(True, description)`` when a CUDA GPU can be used, else ``(False, the skip reason)``.

    Uses ``torch.cuda.is_available()`` and ``device_count()``, which ask the
    driver for a device count but create no CUDA context
    (``torch.cuda.is_initialized()`` stays False).  It reads no device
    properties, because those would initialise CUDA in this process.
    """
    version = torch.__version__
    if not torch.cuda.is_available():
        if torch.version.cuda is None:
            detail = f"torch {version} is a CPU-only build; install a CUDA build of torch"
        else:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            detail = f"torch {version}, CUDA {torch.version.cuda}, no usable device or driver"
            if visible is not None:
                detail += f", CUDA_VISIBLE_DEVICES={visible!r}"
        return False, f"no CUDA GPU: torch.cuda.is_available() is False ({detail})"
    return True, f"CUDA available: {torch.cuda.device_count()} device(s), torch {version}, CUDA {torch.version.cuda}"


def parent_cuda_initialized() -> bool:
    """Whether this process already holds a CUDA context (then it must not fork workers)."""
    return bool(torch.cuda.is_initialized())  # type: ignore[no-untyped-call]


def check_start_method(config: LoaderConfig) -> None:
    """Raise :class:`InvalidConfig` for a CUDA case whose workers would be forked.

    The CUDA consumer creates a CUDA context in this process; workers forked
    from it cannot use CUDA, and the fork itself slowed the loader
    (pytorch#68383).  The platform default counts: on Linux it is fork.
    """
    method = config.start_method
    if method is None or method in SAFE_START_METHODS:
        return
    default = " (the platform default)" if config.multiprocessing_context is None else ""
    raise fail(
        "multiprocessing_context",
        config.multiprocessing_context,
        f"a CUDA case with num_workers={config.num_workers} would start its workers with {method}{default}, "
        "forking a process that holds a CUDA context (pytorch#68383)",
        "Use multiprocessing_context='spawn' or 'forkserver' for CUDA cases",
    )


def fork_hazard(config: LoaderConfig) -> str | None:
    """A note for a case that forks workers from a CUDA-initialised process (``None`` when safe).

    For the plugin to record on CPU cases: they must run before any CUDA case,
    or their fork numbers measure the pytorch#68383 slowdown instead.
    """
    if config.start_method == "fork" and parent_cuda_initialized():
        return (
            "workers were forked from a process that already holds a CUDA context (pytorch#68383); "
            "run CPU fork cases before CUDA cases, or in a separate pytest run"
        )
    return None
