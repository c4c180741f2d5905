"""Which pipelines are installed, and the adapter for a case's ``LoaderConfig.pipeline``.

The rival pipelines import their packages (torchdata, SPDL) only when asked,
so loaderbench works without them; :func:`unavailable_reason` gives the one
sentence a skipped case shows.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from typing import Any

from torch.utils.data import Dataset

from loaderbench.config import LoaderConfig
from loaderbench.config_rules import PIPELINE_FACTS, PIPELINE_UNSUPPORTED, PIPELINES
from loaderbench.errors import CaseFailed, FailureKind, InvalidConfig
from loaderbench.pipelines.base import Pipeline
from loaderbench.pipelines.dataloader import DataLoaderPipeline, stateful_pipeline
from loaderbench.pipelines.nodes import NodesPipeline
from loaderbench.pipelines.spdl_pipeline import SpdlPipeline

#: The modules each pipeline imports, and the distribution that provides them (``PipelineFacts.requires``; a
#: dict, so that a test can make a pipeline look uninstalled).
REQUIRES: dict[str, tuple[tuple[str, str], ...]] = {name: f.requires for name, f in PIPELINE_FACTS.items()}

#: How to install every rival pipeline.
INSTALL = 'pip install "loaderbench[rivals]"'


@functools.cache
def unavailable_reason(name: str) -> str | None:
    """None when pipeline ``name`` can run here, else one sentence saying why not and what to install."""
    if name not in PIPELINES:
        return f"pipeline={name!r} is not a known pipeline (use one of {list(PIPELINES)})"
    for module, dist in REQUIRES[name]:
        try:
            importlib.import_module(module)
        except Exception as exc:  # an ImportError, or a build of it that does not load beside this torch
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            return (
                f"pipeline {name!r} ({PIPELINES[name]}) needs {dist}, which does not import here ({first}): {INSTALL}"
            )
    return None


def is_available(name: str) -> bool:
    return unavailable_reason(name) is None


def installed() -> tuple[str, ...]:
    """The pipelines that can run here, in :data:`PIPELINES` order."""
    return tuple(p for p in PIPELINES if is_available(p))


def nearest(config: LoaderConfig, pipeline: str) -> LoaderConfig:
    """``config`` run through ``pipeline``: the knobs that pipeline has no equivalent for go back to their
    defaults (``batching='sampler'`` becomes ``'auto'``: the same batches), the rest are kept."""
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    return config.replace(pipeline=pipeline, **{k: defaults[k] for k in PIPELINE_UNSUPPORTED.get(pipeline, ())})


def build(name: str, dataset: Dataset[Any], kwargs: dict[str, Any], config: Any) -> Pipeline:
    """The adapter for pipeline ``name`` over ``dataset`` with the DataLoader keyword arguments ``kwargs``
    (the harness's, collate wrapper included) and the rest of the setting from ``config``."""
    if name == "dataloader":
        return DataLoaderPipeline(dataset, kwargs)
    if name == "stateful":
        return stateful_pipeline(dataset, kwargs)
    if name in ("nodesthread", "nodesprocess"):
        return NodesPipeline(dataset, kwargs, config, "thread" if name == "nodesthread" else "process")
    if name == "spdl":
        return SpdlPipeline(dataset, kwargs, config)
    raise KeyError(name)


def check_for_case(config: LoaderConfig, cid: str, phase: str) -> None:
    """A case whose pipeline is not installed fails with the one reason (the plugin skips it earlier)."""
    reason = unavailable_reason(config.pipeline)
    if reason is not None:
        raise CaseFailed(f"case {cid} failed: {reason}.", case=cid, phase=phase, kind=FailureKind.PIPELINE)


def build_for_case(config: LoaderConfig, dataset: Any, kwargs: dict[str, Any], cid: str, phase: str) -> Pipeline:
    """:func:`build` for a case: a pipeline that cannot take this dataset fails the case, naming it."""
    try:
        return build(config.pipeline, dataset, kwargs, config)
    except InvalidConfig as exc:  # e.g. a map-only pipeline over an iterable dataset
        raise CaseFailed(f"case {cid} failed: {exc}", case=cid, phase=phase, kind=FailureKind.PIPELINE) from None
