"""The protocol between the A/B scheduler and its child processes: the spec it hands a child, and the JSON
lines a child writes back, one record a line.

The scheduler writes a :class:`ChildSpec` as JSON; the child (``ARM -m loaderbench.ab.child SPEC RECORDS``)
appends to ``RECORDS``, flushing each line:

* ``{"type": "environment", "protocol": 1, "environment": ..., "variables": ..., "calibration": ...,
  "executable": ..., "pid": ...}`` first: what the arm runs under
  (:func:`loaderbench.store.environment.current`), its environment variables (values of names that
  look secret are replaced by a hash), and the spin calibration it used;
* ``{"type": "measurement", "case_id": ..., "measurement": Measurement.to_json()}`` per case measured;
  a case id that starts with :data:`TEST_PREFIX` names a user's own ``loader_benchmark`` test by its
  pytest node id (relative to ``ChildSpec.rootdir``), which the child runs through pytest;
* ``{"type": "failure", "case_id": ..., "message": ...}`` per case that failed (``CaseFailed``);
* ``{"type": "missing", "case_id": ...}`` per requested case the arm's own tier does not have;
* ``{"type": "error", "message": ...}`` when the arm cannot build the cases at all;
* ``{"type": "done"}`` last.  A records file without it is a crashed child.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loaderbench.ab.errors import ABError
from loaderbench.errors import InvalidConfig
from loaderbench.measurement import Measurement
from loaderbench.selection.select import Selection
from loaderbench.store.environment import Environment

#: The protocol version a child writes and the scheduler reads.
PROTOCOL = 1
#: The prefix of a case id that is a ``loader_benchmark`` test's pytest node id.
TEST_PREFIX = "test:"
#: Set by ``loaderbench ab`` for the pytest it starts under HEAD: the environment (JSON) the command was
#: started with, which the base arm's children get, so that what a HEAD wrapper script exports (an
#: environment variable under test) reaches the head arm only.
BASE_ENVIRON = "LOADERBENCH_AB_BASE_ENVIRON"
#: Environment variables whose values are never recorded (only a hash of them).
_SECRET = re.compile(r"TOKEN|SECRET|PASS|KEY|AUTH|CRED|COOKIE|SESSION|PRIVATE|SIGNATURE", re.IGNORECASE)
#: Variables that differ between the arms for reasons of the scheduler or the shell, not of the arms.
IGNORED_PREFIXES = ("PYTEST_", "LOADERBENCH_AB_")
IGNORED_NAMES = frozenset({"_", "PWD", "OLDPWD", "SHLVL"})


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """What a child measures: the tier selection (as the pytest options give it) and the case ids to run,
    in order (CPU cases first; ``loader_benchmark`` tests, :data:`TEST_PREFIX` plus their node id, after
    them, run through pytest from ``rootdir``).  ``batch_timeout_s`` None: no watchdog."""

    scenarios: str
    tier: str
    device: str
    rounds: int
    round_s: float
    batch_timeout_s: float | None
    workloads: tuple[str, ...] | None = None
    config: str | None = None
    cases: tuple[str, ...] = ()
    rootdir: str = ""
    ranks: int = 1  # --loader-ranks: each case in that many ranks
    simulated_gpu: bool = False  # --loader-simulated-gpu: CUDA cases on the simulated device

    @property
    def selection(self) -> Selection:
        return Selection(self.tier, self.workloads, self.config, self.device, self.simulated_gpu, self.ranks)

    def to_json(self) -> dict[str, Any]:
        return {
            "protocol": PROTOCOL,
            "scenarios": self.scenarios,
            "tier": self.tier,
            "device": self.device,
            "rounds": self.rounds,
            "round_s": self.round_s,
            "batch_timeout_s": self.batch_timeout_s,
            "workloads": None if self.workloads is None else list(self.workloads),
            "config": self.config,
            "cases": list(self.cases),
            "rootdir": self.rootdir,
            **({"ranks": self.ranks} if self.ranks != 1 else {}),
            **({"simulated_gpu": True} if self.simulated_gpu else {}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ChildSpec:
        """Inverse of :meth:`to_json`; raises ``KeyError``/``TypeError``/``ValueError`` when malformed."""
        if data.get("protocol") != PROTOCOL:
            raise ValueError(f"spec protocol {data.get('protocol')!r}, this child speaks {PROTOCOL}")
        workloads = data.get("workloads")
        timeout = data.get("batch_timeout_s")
        return cls(
            scenarios=str(data["scenarios"]),
            tier=str(data["tier"]),
            device=str(data["device"]),
            rounds=int(data["rounds"]),
            round_s=float(data["round_s"]),
            batch_timeout_s=None if timeout is None else float(timeout),
            workloads=None if workloads is None else tuple(str(w) for w in workloads),
            config=None if data.get("config") is None else str(data["config"]),
            cases=tuple(str(c) for c in data.get("cases", ())),
            rootdir=str(data.get("rootdir", "")),
            ranks=int(data.get("ranks", 1)),
            simulated_gpu=bool(data.get("simulated_gpu", False)),
        )

    @property
    def timeout_s(self) -> float:
        return math.inf if self.batch_timeout_s is None else self.batch_timeout_s


@dataclass(slots=True)
class ChildOutput:
    """What one child wrote: its environment, and per case a measurement, a failure, or nothing."""

    environment: Environment | None = None
    variables: dict[str, str] = field(default_factory=dict)
    calibration: float | None = None
    executable: str = ""
    measurements: dict[str, Measurement] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    error: str = ""
    done: bool = False

    @property
    def recorded(self) -> int:
        """Cases the child answered for (measured, failed or missing)."""
        return len(self.measurements) + len(self.failures) + len(self.missing)


def line(record: Mapping[str, Any]) -> str:
    """One record as a JSON line (strict JSON: non-finite numbers are written as null)."""
    return json.dumps(_finite(record), allow_nan=False) + "\n"


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def read_records(path: Path, *, where: str) -> ChildOutput:
    """Parse a records file; raises :class:`ABError` naming ``where`` (the arm and block) when a line is
    not a record of this protocol."""
    out = ChildOutput()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return out
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
            kind = record["type"]
            if kind == "environment":
                if record.get("protocol") != PROTOCOL:
                    raise ValueError(f"protocol {record.get('protocol')!r}, the scheduler speaks {PROTOCOL}")
                out.environment = Environment.from_dict(record.get("environment") or {})
                out.variables = {str(k): str(v) for k, v in (record.get("variables") or {}).items()}
                calibration = record.get("calibration")
                out.calibration = None if calibration is None else float(calibration)
                out.executable = str(record.get("executable", ""))
            elif kind == "measurement":
                out.measurements[str(record["case_id"])] = Measurement.from_json(record["measurement"])
            elif kind == "failure":
                out.failures[str(record["case_id"])] = str(record["message"])
            elif kind == "missing":
                out.missing.append(str(record["case_id"]))
            elif kind == "error":
                out.error = str(record["message"])
            elif kind == "done":
                out.done = True
            else:
                raise ValueError(f"unknown record type {kind!r}")
        except (KeyError, TypeError, ValueError, InvalidConfig) as exc:
            raise ABError(
                f"{where}: line {number} of its records ({path}) is not a record of the A/B protocol "
                f"({type(exc).__name__}: {exc}). Both arms need the same loaderbench A/B protocol (version "
                f"{PROTOCOL}): install the same loaderbench release, or one compatible with it, in both."
            ) from None
    return out


def snapshot_variables(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment variables as recorded: values of names that look secret become ``sha256:...``."""
    out = {}
    for name, value in environ.items():
        if name in IGNORED_NAMES or name.startswith(IGNORED_PREFIXES):
            continue
        if _SECRET.search(name):
            value = "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:12]
        out[name] = value
    return out


def variable_changes(base: Mapping[str, str], head: Mapping[str, str], *, limit: int = 60) -> list[str]:
    """``["AB_SLOW unset -> 1", "OMP_NUM_THREADS 4 -> 1"]``: the variables that differ between the arms."""

    def show(value: str | None) -> str:
        if value is None:
            return "unset"
        return value if len(value) <= limit else value[: limit - 3] + "..."

    out = []
    for name in sorted(set(base) | set(head)):
        a, b = base.get(name), head.get(name)
        if a != b:
            out.append(f"${name} {show(a)} -> {show(b)}")
    return out
