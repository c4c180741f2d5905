"""``results.json``: every metric of a run, in a versioned format that reads back into ``Measurement``s.

``loaderbench report RESULTS.json`` regenerates the report and the plots from
it without re-running anything.  :func:`read_results` also reads
pytest-benchmark's own ``--benchmark-json`` output, from the metrics every
case records in ``extra_info``.

Format history (``"version"``):

* 2: a case is the measurement record (``Measurement.to_json()``, which
  adds ``session`` and ``recorded``) plus its ``metrics`` summary.  Version-1
  files read as before (the new keys are optional).
* 1: first version.  Top level: ``format`` (``"loaderbench-results"``),
  ``version``, ``written_by`` (loaderbench version), ``created`` (UTC, ISO
  8601), ``environment`` (python, torch, platform), ``context`` (free-form:
  tier, device, fingerprint, the tuner's recommendation...), ``verdicts``
  (case_id -> the gate's short verdict text) and ``cases``.  A case:
  ``case_id``, ``workload``, ``device``, ``consumer``, ``config``
  (``LoaderConfig.as_dict()``), ``rounds`` (metric -> raw per-round values),
  ``phases`` (seconds), ``steady_batches``, ``bytes_per_sample``,
  ``peak_memory_bytes``, ``memory_kind``, ``ideal_samples_per_s``,
  ``torch_threads``, ``cpus``, ``notes``, ``extra`` (consumer metrics such as
  the CUDA ones), and ``metrics``: the derived summary
  (``Measurement.extra_info()`` less the raw rounds), for people and other
  tools; it is recomputed, never trusted, on load.

NaN and infinities are written as ``null`` (the rules of :mod:`loaderbench.jsondoc`).
"""

from __future__ import annotations

import json
import platform
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from loaderbench import jsondoc
from loaderbench.errors import InvalidConfig, LoaderbenchError, UsageError
from loaderbench.measurement import Measurement, from_extra_info, now

FORMAT = "loaderbench-results"
#: The version this code writes.  Bump it, and add a line to the history above, on any change.
VERSION = 2
#: Versions this code reads.
READABLE = (1, 2)


@dataclass(frozen=True, slots=True)
class Results:
    """A read-back ``results.json``: the measurements and what was stored beside them."""

    measurements: tuple[Measurement, ...]
    verdicts: Mapping[str, str] = field(default_factory=dict)
    context: Mapping[str, Any] = field(default_factory=dict)
    version: int = VERSION
    source: str = FORMAT


def measurement_to_dict(m: Measurement) -> dict[str, Any]:
    """A case of the document: the record plus its derived summary (``extra_info`` less the raw rounds)."""
    summary = m.extra_info()
    summary.pop("rounds", None)
    return {**m.to_json(), "metrics": jsondoc.clean(summary)}


def environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "platform": platform.platform(),
        "argv": list(sys.argv),
    }


def results_document(
    measurements: Sequence[Measurement],
    *,
    verdicts: Mapping[str, str] | None = None,
    context: Mapping[str, Any] | None = None,
    created: str | None = None,
) -> dict[str, Any]:
    doc: dict[str, Any] = jsondoc.clean(
        {
            "format": FORMAT,
            "version": VERSION,
            "written_by": jsondoc.WRITTEN_BY,
            "created": created or now(),
            "environment": environment(),
            "context": dict(context or {}),
            "verdicts": dict(verdicts or {}),
            "cases": [measurement_to_dict(m) for m in measurements],
        }
    )
    return doc


def write_results(
    path: str | Path,
    measurements: Sequence[Measurement],
    *,
    verdicts: Mapping[str, str] | None = None,
    context: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``results.json`` (replacing the file atomically) and return its path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    doc = results_document(measurements, verdicts=verdicts, context=context)
    jsondoc.atomic_write(p, jsondoc.dumps(doc, indent=1))
    return p


def _bad(path: Path, why: str, fix: str) -> UsageError:
    return UsageError(f"results={str(path)!r}: {why}. {fix}.")


def read_results(path: str | Path) -> Results:
    """Read a ``results.json`` written by any readable version, or a pytest-benchmark JSON file."""
    p = Path(path)
    prefix = f"results={str(p)!r}"
    fix = "Pass the results.json from --loader-report=DIR or loaderbench tune, or the file from --benchmark-json"
    try:
        version, doc = jsondoc.load(p, fmt=FORMAT, readable=READABLE, error=UsageError, prefix=prefix, fix=fix)
    except UsageError:
        other = _pytest_benchmark_json(p)
        if other is None:
            raise
        return _from_pytest_benchmark(p, other)
    try:
        cases = tuple(Measurement.from_json(c) for c in _list(doc.get("cases", []), "cases"))
        verdicts = {str(k): str(v) for k, v in _dict(doc.get("verdicts", {}), "verdicts").items()}
        context = dict(_dict(doc.get("context", {}), "context"))
    except (KeyError, TypeError, ValueError, InvalidConfig, LoaderbenchError) as exc:
        raise _bad(p, f"has a malformed case ({type(exc).__name__}: {exc})", "Regenerate the file") from None
    return Results(cases, verdicts, context, version, FORMAT)


def _pytest_benchmark_json(p: Path) -> dict[str, Any] | None:
    """The file as a pytest-benchmark JSON document, or None when it is not one."""
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("benchmarks"), list) else None


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"{where!r} is not a JSON list")
    return value


def _dict(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"{where!r} is not a JSON object")
    return value


def _from_pytest_benchmark(p: Path, doc: Mapping[str, Any]) -> Results:
    cases = []
    for bench in doc["benchmarks"]:
        if not isinstance(bench, dict):
            raise _bad(p, "has a benchmark that is not a JSON object", "Regenerate the file")
        info = bench.get("extra_info") or {}
        if "loaderbench_config" not in info or "rounds" not in info:
            continue  # not a pipeline case (e.g. the harness-overhead benchmark)
        try:
            cases.append(from_extra_info(info))
        except (KeyError, TypeError, ValueError, InvalidConfig, LoaderbenchError) as exc:
            raise _bad(
                p, f"benchmark {bench.get('name')!r} has malformed extra_info ({exc})", "Regenerate the file"
            ) from None
    context = {"source": "pytest-benchmark", "datetime": doc.get("datetime"), "machine_info": doc.get("machine_info")}
    return Results(tuple(cases), {}, context, VERSION, "pytest-benchmark")
