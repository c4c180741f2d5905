"""``results.json``: every metric of a run, in a versioned format that reads back into ``Measurement``s.

``loaderbench report RESULTS.json`` regenerates the report and the plots from
it without re-running anything.  :func:`read_results` also reads
pytest-benchmark's own ``--benchmark-json`` output, from the metrics every
case records in ``extra_info``.

Format history (``"version"``):

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

NaN and infinities are written as ``null``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from loaderbench.config import LoaderConfig
from loaderbench.errors import LoaderbenchError, UsageError
from loaderbench.measurement import Measurement

FORMAT = "loaderbench-results"
#: The version this code writes.  Bump it, and add a line to the history above, on any change.
VERSION = 1
#: Versions this code reads.
READABLE = (1,)

_PHASES = ("startup_s", "ttfb_s", "epoch_end_s", "epoch_shutdown_s", "epoch_stall_s", "shutdown_s")
#: ``extra_info`` keys that ``Measurement.extra_info()`` derives itself (everything else is consumer extra).
_DERIVED = frozenset(
    {
        "workload",
        "device",
        "config",
        "config_id",
        "case_id",
        "consumer",
        "loaderbench_config",
        "samples_per_s",
        "batches_per_s",
        "bytes_per_s",
        "peak_memory_bytes",
        "memory_kind",
        "ideal_samples_per_s",
        "efficiency",
        "relative_iqr",
        "steady_batches",
        "bytes_per_sample",
        "torch_threads",
        "cpus",
        "rounds",
        "warnings",
        *_PHASES,
    }
)


@dataclass(frozen=True, slots=True)
class Results:
    """A read-back ``results.json``: the measurements and what was stored beside them."""

    measurements: tuple[Measurement, ...]
    verdicts: Mapping[str, str] = field(default_factory=dict)
    context: Mapping[str, Any] = field(default_factory=dict)
    version: int = VERSION
    source: str = FORMAT


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf -> None, tuples -> lists, unknown objects -> str."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def measurement_to_dict(m: Measurement) -> dict[str, Any]:
    summary = m.extra_info()
    summary.pop("rounds", None)
    return {
        "case_id": m.case_id,
        "workload": m.workload,
        "device": m.device,
        "consumer": m.consumer,
        "config": m.config.as_dict(),
        "rounds": {k: list(v) for k, v in m.rounds.items()},
        "phases": dict(m.phases),
        "steady_batches": m.steady_batches,
        "bytes_per_sample": m.bytes_per_sample,
        "peak_memory_bytes": m.peak_memory_bytes,
        "memory_kind": m.memory_kind,
        "ideal_samples_per_s": m.ideal_samples_per_s,
        "torch_threads": m.torch_threads,
        "cpus": m.cpus,
        "notes": list(m.notes),
        "extra": dict(m.extra),
        "metrics": summary,
    }


def _floats(values: Any) -> tuple[float, ...]:
    return tuple(math.nan if v is None else float(v) for v in values)


def measurement_from_dict(d: Mapping[str, Any]) -> Measurement:
    """Inverse of :func:`measurement_to_dict` (``metrics`` is ignored: it is derived)."""
    ideal = d.get("ideal_samples_per_s")
    memory = d.get("peak_memory_bytes")
    return Measurement(
        workload=str(d["workload"]),
        device=str(d["device"]),
        config=LoaderConfig(**d["config"]),
        rounds={str(k): _floats(v) for k, v in d.get("rounds", {}).items()},
        phases={str(k): float(v) for k, v in d.get("phases", {}).items() if v is not None},
        steady_batches=int(d.get("steady_batches", 0)),
        bytes_per_sample=int(d.get("bytes_per_sample", 0)),
        peak_memory_bytes=None if memory is None else int(memory),
        memory_kind=str(d.get("memory_kind", "")),
        ideal_samples_per_s=None if ideal is None else float(ideal),
        torch_threads=int(d.get("torch_threads", 1)),
        cpus=int(d.get("cpus", 1)),
        notes=tuple(str(n) for n in d.get("notes", ())),
        extra=dict(d.get("extra", {})),
        consumer=str(d.get("consumer", "")),
    )


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
    from loaderbench import __version__

    doc: dict[str, Any] = _clean(
        {
            "format": FORMAT,
            "version": VERSION,
            "written_by": f"loaderbench {__version__}",
            "created": created or datetime.now(UTC).isoformat(timespec="seconds"),
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
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(p)
    return p


def _bad(path: Path, why: str, fix: str) -> UsageError:
    return UsageError(f"results={str(path)!r}: {why}. {fix}.")


def read_results(path: str | Path) -> Results:
    """Read a ``results.json`` written by any readable version, or a pytest-benchmark JSON file."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _bad(
            p, "file not found", "Pass the results.json that --loader-report or loaderbench tune wrote"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _bad(p, f"cannot be read ({exc})", "Pass a readable results.json") from None
    except json.JSONDecodeError as exc:
        raise _bad(p, f"is not JSON ({exc})", "Pass a results.json written by loaderbench") from None
    if isinstance(doc, dict) and doc.get("format") == FORMAT:
        version = doc.get("version")
        if version not in READABLE:
            raise _bad(
                p,
                f"has format version {version!r}; this loaderbench reads {list(READABLE)}",
                "Upgrade loaderbench to read newer files",
            )
        try:
            cases = tuple(measurement_from_dict(c) for c in doc.get("cases", []))
        except (KeyError, TypeError, ValueError, LoaderbenchError) as exc:
            raise _bad(p, f"has a malformed case ({type(exc).__name__}: {exc})", "Regenerate the file") from None
        return Results(cases, dict(doc.get("verdicts", {})), dict(doc.get("context", {})), int(version), FORMAT)
    if isinstance(doc, dict) and isinstance(doc.get("benchmarks"), list):
        return _from_pytest_benchmark(p, doc)
    raise _bad(
        p,
        "is neither a loaderbench results.json nor a pytest-benchmark JSON file",
        "Pass the results.json from --loader-report=DIR, or the file from --benchmark-json",
    )


def from_extra_info(info: Mapping[str, Any]) -> Measurement:
    """A ``Measurement`` rebuilt from the ``extra_info`` a benchmark case recorded."""
    rounds = {str(k): _floats(v) for k, v in info["rounds"].items()}
    base = measurement_from_dict(
        {
            **info,
            "config": info["loaderbench_config"],
            "rounds": rounds,
            "phases": {k: info[k] for k in _PHASES if info.get(k) is not None},
            "notes": (),
            "extra": {k: v for k, v in info.items() if k not in _DERIVED},
        }
    )
    computed = set(base.warnings)
    notes = tuple(w for w in info.get("warnings", ()) if w not in computed)
    return dataclasses.replace(base, notes=notes)


def _from_pytest_benchmark(p: Path, doc: Mapping[str, Any]) -> Results:
    cases = []
    for bench in doc["benchmarks"]:
        info = bench.get("extra_info") or {}
        if "loaderbench_config" not in info or "rounds" not in info:
            continue  # not a pipeline case (e.g. the harness-overhead benchmark)
        try:
            cases.append(from_extra_info(info))
        except (KeyError, TypeError, ValueError, LoaderbenchError) as exc:
            raise _bad(
                p, f"benchmark {bench.get('name')!r} has malformed extra_info ({exc})", "Regenerate the file"
            ) from None
    context = {"source": "pytest-benchmark", "datetime": doc.get("datetime"), "machine_info": doc.get("machine_info")}
    return Results(tuple(cases), {}, context, VERSION, "pytest-benchmark")
