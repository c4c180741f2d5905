"""The A/B child process: ``ARM -m loaderbench.ab.child SPEC.json RECORDS.jsonl``.

Run by the A/B scheduler in each arm's own interpreter and environment, in a fresh
process per block, in the arm's own directory (the head's invocation directory, or
the base checkout's copy of it), whose git commit the environment records as the
pytest session records its rootdir's.  It builds the tier from the spec exactly as
the pytest session does (so ``kind = "user"`` workloads are imported in the arm's
own environment), runs each requested case once, and appends one JSON record per
case to ``RECORDS`` (the protocol: :mod:`loaderbench.ab.records`); a user's ``loader_benchmark``
tests among the cases run through pytest (:mod:`loaderbench.ab.user_tests`).  The spin
calibration comes from ``$LOADERBENCH_SPIN_LOOPS_PER_S``, which the scheduler
sets to the one value it measured, for both arms; glibc's malloc thresholds are
pinned first (:mod:`loaderbench.engine.allocator`), as in the pytest session.

:func:`select_cases` is also how the scheduler itself validates the selection and
learns the case ids.  Exit status: 0 when every case was answered for (a case
that failed is a record, not a crash); 3 when the cases cannot be built; 2 on
bad arguments.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from loaderbench.ab.records import PROTOCOL, TEST_PREFIX, ChildSpec, line, snapshot_variables
from loaderbench.ab.user_tests import run_tests
from loaderbench.engine import allocator
from loaderbench.engine.case import Case
from loaderbench.engine.plan import Plan
from loaderbench.errors import CaseFailed, LoaderbenchError
from loaderbench.selection.run import run_case
from loaderbench.store import environment
from loaderbench.workloads.calibration import spin_loops_per_s
from loaderbench.workloads.recipes import load_scenarios


def select_cases(spec: ChildSpec) -> list[Case]:
    """The spec's cases, selected as ``pytest --benchmark`` selects them (:mod:`loaderbench.selection.select`).
    Raises :class:`~loaderbench.errors.LoaderbenchError` subclasses with the option named."""
    selection = spec.selection
    return selection.cases_of(selection.tier_of(load_scenarios(spec.scenarios)))


def _write(out: TextIO, record: dict[str, Any]) -> None:
    out.write(line(record))
    out.flush()


def run(spec: ChildSpec, out: TextIO) -> int:
    """Measure the spec's cases into ``out`` (see the module docstring)."""
    malloc = allocator.pin()  # before any case, as the pytest session does
    _write(
        out,
        {
            "type": "environment",
            "protocol": PROTOCOL,
            "environment": environment.current(repo=Path.cwd()).as_dict(),
            "variables": snapshot_variables(os.environ),
            "calibration": spin_loops_per_s(),
            "malloc": malloc,
            "executable": sys.executable,
            "pid": os.getpid(),
        },
    )
    try:
        cases = {c.id: c for c in select_cases(spec)}
        plan = Plan(rounds=spec.rounds, round_s=spec.round_s, batch_timeout_s=spec.timeout_s)
    except LoaderbenchError as exc:
        _write(out, {"type": "error", "message": str(exc)})
        return 3
    for case_id in spec.cases:
        if case_id.startswith(TEST_PREFIX):
            continue  # a user's loader_benchmark test: run through pytest below
        case = cases.get(case_id)
        if case is None:
            _write(out, {"type": "missing", "case_id": case_id})
            continue
        try:
            m = run_case(case, plan)
        except CaseFailed as exc:
            _write(out, {"type": "failure", "case_id": case_id, "message": str(exc)})
            continue
        _write(out, {"type": "measurement", "case_id": case_id, "measurement": m.to_json()})
    run_tests(spec, spec.cases, lambda record: _write(out, record))
    _write(out, {"type": "done"})
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        sys.stderr.write("usage: python -m loaderbench.ab.child SPEC.json RECORDS.jsonl (run by the A/B scheduler)\n")
        return 2
    try:
        spec = ChildSpec.from_json(json.loads(Path(args[0]).read_text(encoding="utf-8")))
    except (OSError, KeyError, TypeError, ValueError) as exc:
        sys.stderr.write(f"loaderbench.ab.child: cannot read the spec {args[0]}: {exc}\n")
        return 2
    with open(args[1], "a", encoding="utf-8") as out:
        return run(spec, out)


if __name__ == "__main__":
    raise SystemExit(main())
