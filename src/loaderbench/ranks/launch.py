"""Start one case in N ranks with ``torch.distributed.run`` (torchrun's engine: no launcher of our own).

:func:`launch` pickles the case (:class:`Job`) into a fresh folder and runs::

    python -m torch.distributed.run --standalone --nproc-per-node N --max-restarts 0 \\
        -m loaderbench.ranks.rank_main --case FOLDER/job.pkl --out FOLDER

in its own session, with this interpreter's ``sys.path`` (so a test module's dataset class unpickles) and the
spin calibration in the environment.  Rank 0 writes the job's combined measurement to ``FOLDER/result.json``;
a rank that fails writes ``FOLDER/rank<R>.error.json``.  ``LOADERBENCH_TORCHRUN_ARGS`` replaces
``--standalone --nproc-per-node N`` (several nodes: ``--nnodes``, ``--node-rank``, ``--rdzv-endpoint``...).

Every process below torchrun (ranks run in sessions of their own, workers below them) is tracked while the job
runs and killed when it ends, so a killed, hung or failed rank leaves nothing behind.  The job is bounded by
``timeout_s`` (by default sized from the plan: the harness's own watchdog catches a hung rank first).  A
failure becomes one :class:`~loaderbench.errors.CaseFailed` paragraph naming the rank and the case, from the
rank's own error (the root cause preferred over ranks that were only waiting for it), else from torchrun's
summary (a rank killed by a signal), else from the end of its log.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import os
import pickle
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import torch
import torch.distributed as dist

from loaderbench.cuda.spec import check_start_method
from loaderbench.engine.cleanup import remove_leftover_segments, shm_segments
from loaderbench.engine.consumers import Runner, default_runner
from loaderbench.engine.plan import Plan
from loaderbench.errors import CaseFailed, FailureKind
from loaderbench.interrupts import terminate_interrupts
from loaderbench.measurement import Measurement
from loaderbench.workloads.calibration import CALIBRATION_ENV, calibrated, spin_loops_per_s

if TYPE_CHECKING:
    from loaderbench.engine.case import Case

RESULT = "result.json"
#: Extra torchrun arguments replacing ``--standalone --nproc-per-node N`` (e.g. for several nodes).
TORCHRUN_ARGS_ENV = "LOADERBENCH_TORCHRUN_ARGS"
#: ``CaseFailed.kind`` on a node whose ranks do not include rank 0: the job's result is recorded there.
OTHER_NODE = FailureKind.OTHER_NODE


@dataclasses.dataclass(frozen=True, slots=True)
class Job:
    """What the launcher sends each rank."""

    case: Case
    plan: Plan
    step_ms: float = 0.0


def error_path(out: Path, rank: int) -> Path:
    return out / f"rank{rank}.error.json"


def done_path(out: Path, rank: int) -> Path:
    return out / f"rank{rank}.done"


def write_json(path: Path, doc: Any) -> None:
    """Atomically (the launcher may read while a rank writes)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


def in_process_group() -> bool:
    """Whether this process already is a rank (``torch.distributed`` initialised)."""
    return dist.is_available() and dist.is_initialized()


def default_timeout_s(plan: Plan) -> float | None:
    """A backstop for the whole job: start-up, twice the watchdog's limit, and generous rounds."""
    if math.isinf(plan.batch_timeout_s):
        return None
    return 60.0 + 2 * plan.batch_timeout_s + 4 * (plan.rounds + 4) * plan.round_s


def several_nodes() -> bool:
    """Whether ``LOADERBENCH_TORCHRUN_ARGS`` spreads the ranks over several nodes (``--nnodes`` above 1, or an
    elastic range whose maximum is): a ranked case's fresh process then waits for the other nodes' ranks."""
    args = [*shlex.split(os.environ.get(TORCHRUN_ARGS_ENV, "")), ""]
    for arg, after in itertools.pairwise(args):
        value = arg.split("=", 1)[1] if arg.startswith("--nnodes=") else after if arg == "--nnodes" else None
        if value is not None:
            with contextlib.suppress(ValueError):
                return int(value.rsplit(":", 1)[-1]) > 1
    return False


def torchrun_command(ranks: int, job_file: Path, out: Path, python: str = sys.executable) -> list[str]:
    extra = os.environ.get(TORCHRUN_ARGS_ENV, "").strip()
    where = shlex.split(extra) if extra else ["--standalone", f"--nproc-per-node={ranks}"]
    return [
        python, "-m", "torch.distributed.run", *where, "--max-restarts=0", "--monitor-interval=0.1",
        "-m", "loaderbench.ranks.rank_main", "--case", str(job_file), "--out", str(out),
    ]  # fmt: skip


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)  # what imports here imports there
    env.setdefault("OMP_NUM_THREADS", "1")  # torchrun's own default, without its warning
    if calibrated():
        env[CALIBRATION_ENV] = repr(spin_loops_per_s())
    return env


#: How often the launcher walks torchrun's process tree (each walk costs about a millisecond of CPU).
_SCAN_INTERVAL_S = 1.0


class _Tree:
    """Every process seen below ``root`` (torchrun), so all of them can be killed at the end."""

    def __init__(self, root: psutil.Process) -> None:
        self.root = root
        self.seen: dict[int, float] = {}

    def scan(self) -> None:
        with contextlib.suppress(psutil.Error):
            for p in self.root.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    self.seen.setdefault(p.pid, p.create_time())

    def kill(self) -> int:
        """SIGKILL whatever is still alive (torchrun first); the number of processes killed."""
        self.scan()
        alive: list[psutil.Process] = []
        for pid, created in [(self.root.pid, None), *self.seen.items()]:
            with contextlib.suppress(psutil.Error):
                p = psutil.Process(pid)
                if created is not None and p.create_time() != created:
                    continue  # the pid was reused
                if p.status() != psutil.STATUS_ZOMBIE:
                    p.kill()
                    alive.append(p)
        psutil.wait_procs(alive, timeout=5)
        return len([p for p in alive if p.pid != self.root.pid])


def launch(
    case: Case,
    plan: Plan,
    *,
    runner: Runner = default_runner,
    step_ms: float = 0.0,
    timeout_s: float | None = -1.0,
    python: str = sys.executable,
) -> Measurement:
    """Measure ``case`` in ``case.config.ranks`` ranks; raises ``CaseFailed`` naming the rank on a fault.
    ``runner`` is then called with a no-op round per measured round (pytest-benchmark's pedantic needs rounds
    to replace with the job's figures).  ``timeout_s=-1``: :func:`default_timeout_s`; ``None``: no limit."""
    ranks = case.config.ranks
    _check_devices(case)
    limit = default_timeout_s(plan) if timeout_s == -1.0 else timeout_s
    with tempfile.TemporaryDirectory(prefix="loaderbench-ranks-") as tmp:
        out = Path(tmp)
        job_file = out / "job.pkl"
        try:
            job_file.write_bytes(pickle.dumps(Job(case, plan, step_ms)))
        except Exception as exc:
            raise CaseFailed(
                f"case {case.id} failed: the case cannot be sent to its {ranks} ranks: pickling it raised "
                f"{type(exc).__name__}: {exc}. Define the dataset (or its factory) at module level in an importable "
                "module, so each rank can rebuild it.",
                case=case.id,
                phase="starting the ranks",
                kind=FailureKind.PICKLING,
            ) from None
        log_path = out / "torchrun.log"
        started = time.time()
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                torchrun_command(ranks, job_file, out, python),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_environment(),
                start_new_session=True,
            )
            timed_out = _wait(proc, limit)
        code = proc.returncode
        result = out / RESULT
        if code == 0 and result.exists():
            doc = json.loads(result.read_text())
            m = Measurement.from_json(doc["measurement"])
            launch_s = max(doc["ready_at"]) - started  # torchrun's start-up: launch to every rank joined
            m = dataclasses.replace(m, extra={**m.extra, "launch_s": launch_s})
            rounds = len(m.rounds.get("samples_per_s", ()))
            if rounds:
                runner(_no_op, rounds, _no_op)
            return m
        raise diagnose(case, out, log_path.read_text(errors="replace"), code, timed_out=timed_out, limit=limit)


def _no_op() -> None:
    return None


def _check_devices(case: Case) -> None:
    ranks = case.config.ranks
    if case.device == "cuda":
        check_start_method(case.config)  # as a one-process CUDA case: never fork workers from a CUDA parent
    if case.device == "cuda" and not os.environ.get(TORCHRUN_ARGS_ENV):
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if ranks > gpus:
            raise CaseFailed(
                f"case {case.id} failed: --loader-ranks={ranks} but this machine has {gpus} GPU(s), and a CUDA "
                f"case runs one rank per GPU. Use --loader-ranks={max(gpus, 1)} or fewer.",
                case=case.id,
                phase="starting the ranks",
                kind=FailureKind.RANKS,
            )


def _wait(proc: subprocess.Popen[bytes], limit: float | None) -> bool:
    """Wait for torchrun, tracking its tree; kill the tree at the end.  True when ``limit`` passed."""
    tree = _Tree(psutil.Process(proc.pid))
    deadline = None if limit is None else time.monotonic() + limit
    timed_out = False
    shm_before = shm_segments()
    scanned = -math.inf
    try:
        with terminate_interrupts():  # a cancelled job (SIGTERM) kills the ranks on the way out, as Ctrl-C does
            while proc.poll() is None:
                if time.monotonic() - scanned >= _SCAN_INTERVAL_S:  # a /proc walk: rarely, not every poll
                    tree.scan()
                    scanned = time.monotonic()
                if deadline is not None and time.monotonic() > deadline:
                    timed_out = True
                    break
                time.sleep(0.1)
    finally:
        tree.kill()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything left in torchrun's own session
        proc.wait()
        # killed ranks and workers cannot unlink what they shared under the file_system strategy
        remove_leftover_segments(shm_before, tree.seen)
    return timed_out


def _rank_errors(out: Path) -> list[dict[str, Any]]:
    found = []
    for path in sorted(out.glob("rank*.error.json")):
        with contextlib.suppress(OSError, ValueError):
            found.append(json.loads(path.read_text()))
    return found


def _body(message: str, cid: str) -> str:
    """A rank's message without its leading ``case ... failed:``."""
    prefix = f"case {cid} failed: "
    body = (message[len(prefix) :] if message.startswith(prefix) else message).strip()
    return body if body.endswith(".") else body + "."


def _signal_name(code: int) -> str:
    with contextlib.suppress(ValueError):
        return signal.Signals(-code).name
    return f"signal {-code}"


def diagnose(case: Case, out: Path, log: str, code: int | None, *, timed_out: bool, limit: float | None) -> CaseFailed:
    """The one-paragraph error for a job that produced no result: a rank's own error (not one that only waited
    for another at the all-reduce), else a rank torchrun saw die, else the ranks that went silent."""
    cid, ranks = case.id, case.config.ranks
    errors = _rank_errors(out)
    waiting = sorted(int(e["rank"]) for e in errors if e.get("kind") == "rank-wait")
    others = f" Rank(s) {_list(waiting)} were waiting for it at the per-step all-reduce." if waiting else ""
    roots = [e for e in errors if e.get("kind") != "rank-wait"]
    if roots:
        root = min(roots, key=lambda e: int(e["rank"]))
        where = "" if root.get("kind") == "same-samples" else f" on rank {root['rank']} of {ranks}"  # every rank's
        return CaseFailed(
            f"case {cid} failed{where}: {_body(str(root['message']), cid)}{others} Every rank and worker was stopped.",
            case=cid,
            phase=str(root.get("phase", "")),
            kind=str(root.get("kind", "")),
        )
    found = _root_cause(log)
    if found is not None and found[0] not in waiting:
        rank, exitcode = found
        how = (
            f"was killed by {_signal_name(exitcode)} (exit code {exitcode})"
            if exitcode < 0
            else f"exited with code {exitcode}"
        )
        hint = (
            " Something outside the case killed it: the OOM killer (see dmesg), a job scheduler, or a kill -9."
            if exitcode in (-signal.SIGKILL, -signal.SIGTERM)
            else ""
        )
        return CaseFailed(
            f"case {cid} failed: rank {rank} of {ranks} {how} before reporting a result.{hint}{others} torchrun "
            "stopped the other ranks; every rank and worker was stopped.",
            case=cid,
            phase="running the ranks",
            kind=FailureKind.RANK_DIED,
        )
    if timed_out or waiting:
        done = {r for r in range(ranks) if done_path(out, r).exists()}
        silent = [r for r in range(ranks) if r not in done and r not in waiting]
        why = f"did not finish within {limit:g} s" if timed_out and limit is not None else "stopped stepping"
        return CaseFailed(
            f"case {cid} failed: rank(s) {_list(silent) or 'unknown'} of {ranks} {why} and reported no error (a hang "
            "the harness's watchdog could not interrupt, e.g. in a C call, or a death torchrun did not see)."
            f"{others} Every rank and worker was killed. Raise --loader-batch-timeout if the case is only slow, "
            "or find where that rank blocks (py-spy dump --pid).",
            case=cid,
            phase="waiting for the ranks",
            kind=FailureKind.HANG,
        )
    if code == 0 and os.environ.get(TORCHRUN_ARGS_ENV):
        return CaseFailed(
            f"case {cid}: measured in {ranks} ranks; the job's result is recorded on the node that runs rank 0.",
            case=cid,
            phase="gathering",
            kind=OTHER_NODE,
        )
    tail = " | ".join(line.strip() for line in log.strip().splitlines()[-6:])
    return CaseFailed(
        f"case {cid} failed: torchrun ended with exit code {code} and no rank reported a result. The end of its "
        f"log: {tail or '(empty)'}",
        case=cid,
        phase="starting the ranks",
        kind=FailureKind.RANKS,
    )


def _list(ranks: list[int]) -> str:
    return ", ".join(map(str, ranks))


def _root_cause(log: str) -> tuple[int, int] | None:
    """(rank, exit code) of torchrun's "Root Cause (first observed failure)" summary."""
    at = log.rfind("Root Cause")
    if at < 0:
        return None
    rank = re.search(r"rank\s*:\s*(\d+)", log[at:])
    code = re.search(r"exitcode\s*:\s*(-?\d+)", log[at:])
    if rank is None or code is None:
        return None
    return int(rank.group(1)), int(code.group(1))
