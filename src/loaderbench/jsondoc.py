"""The versioned JSON documents loaderbench writes (baselines and ``results.json``): one set of rules.

* **Versions.**  Every document has ``format`` and ``version``; a reader lists
  the versions it reads and migrates the older ones.  A newer version is refused
  with "upgrade loaderbench", an unknown one with the document's own fix.
* **NaN rule.**  JSON has no NaN or infinity: they are written as ``null``
  (:func:`clean`), and ``allow_nan=False`` makes any that slip through an error.
* **Atomic writes.**  A temporary file in the same directory, fsynced, then
  ``os.replace``-d over the old one (and the directory fsynced): a reader, or a
  crash at any point, sees the old document or the new one, never a mix.  A
  writer killed mid-write leaves a ``.NAME.*.tmp`` file; the next locked writer
  removes it (:func:`stale_temporaries` logs a note), and readers never look at it.
* **Locking.**  Writers that read, merge and write take an exclusive ``flock``
  on ``.NAME.lock`` beside the document (:func:`locked`); a writer that cannot
  take it in time fails with a clear message and writes nothing.  The lock file
  is removed when the lock is released, so it does not litter the directory.
* **Fault hook (tests only).**  With the environment variable
  ``LOADERBENCH_FAULT_STEP`` set to one of :data:`FAULT_STEPS`, a writer kills
  itself with SIGKILL at that step of a locked atomic write: the crash tests
  (``tests/store/test_store_crash.py``) use it to prove the rules above.  Unset, it
  costs one dictionary lookup per step.  Other writers (the history's appends) call :func:`fault` at steps
  of their own.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from loaderbench.errors import LoaderbenchError

if sys.platform == "win32":  # pragma: no cover - no flock there: filelock's lock (whose file stays)
    import filelock
else:
    import fcntl
from loaderbench.version import __version__

#: ``written_by`` of every document this code writes.
WRITTEN_BY = f"loaderbench {__version__}"

#: The environment variable of the fault hook: the step (one of :data:`FAULT_STEPS`) to die at.
FAULT_ENV = "LOADERBENCH_FAULT_STEP"
#: The steps of a locked atomic write, in order, at which the fault hook can kill the writer.
FAULT_STEPS = ("locked", "temp-created", "temp-half-written", "temp-written", "replaced", "synced")

_log = logging.getLogger(__name__)


def fault(step: str) -> None:
    """The fault hook: SIGKILL this process at ``step`` when ``LOADERBENCH_FAULT_STEP`` names it."""
    if os.environ.get(FAULT_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def clean(value: Any) -> Any:
    """JSON-safe: NaN/inf -> None, tuples -> lists, unknown objects -> str."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old content or the new, never a mix."""
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        fault("temp-created")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            half = len(text) // 2
            fh.write(text[:half])
            fh.flush()
            fault("temp-half-written")
            fh.write(text[half:])
            fh.flush()
            os.fsync(fh.fileno())
        fault("temp-written")
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        fault("replaced")
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename durable; not possible on every filesystem
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    fault("synced")


def stale_temporaries(path: Path) -> list[Path]:
    """Temporary files that a writer of ``path`` left when it was killed mid-write (a note is logged).

    Only a writer holding :func:`locked` may remove them: a live writer's temporary file looks the same.
    """
    found = sorted(path.parent.glob(f".{path.name}.*.tmp"))
    if found:
        _log.warning(
            "%s: %d temporary file(s) left by a save that was killed mid-write (%s); the document itself is "
            "intact (old or new, never a mix) and they are removed",
            path,
            len(found),
            ", ".join(p.name for p in found),
        )
    return found


@contextlib.contextmanager
def locked(path: Path, *, timeout_s: float, error: Callable[[str], LoaderbenchError]) -> Iterator[None]:
    """An exclusive lock for a read-merge-write of ``path``: ``flock`` on ``.NAME.lock`` beside it.

    The lock file is removed on release, so a custom baseline directory is not littered.  Deleting a lock
    file is the classic way to let two writers in at once (one holds the deleted file, the next locks a new
    one), so the protocol keeps one invariant: **only the holder unlinks, and it unlinks before it unlocks**.
    A waiter that gets the lock then checks that the file it locked is still the one at the path (same
    device and inode); if not, its holder removed it while it waited, and it starts over on the new file.
    Two writers can therefore never both hold a lock on the file the path names.  A writer killed while
    holding leaves the file behind unlocked (the kernel drops ``flock`` locks with the process): the next
    writer takes it at once and removes it.  The lock lives beside the document rather than in a temporary
    directory so that every process that can write the document (other users, containers) sees it.
    """
    lock_path = path.parent / f".{path.name}.lock"
    if sys.platform == "win32":  # pragma: no cover - Windows cannot delete an open file: the lock file stays
        lock = filelock.FileLock(str(lock_path), timeout=timeout_s)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise error(f"{lock_path}: another process has held the lock for {timeout_s:g} s. {_WAIT}") from None
        try:
            yield
        finally:
            lock.release()
        return
    fd = _acquire(lock_path, timeout_s, error)
    try:
        fault("locked")
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock_path)  # still holding it: see the invariant above
        os.close(fd)  # releases the lock


def _acquire(lock_path: Path, timeout_s: float, error: Callable[[str], LoaderbenchError]) -> int:
    """An open descriptor of ``lock_path`` holding its exclusive ``flock``, that is still the file at the path."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise error(
                f"{lock_path}: cannot take the lock ({exc.strerror}). Check the directory is writable."
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() >= deadline:
                raise error(
                    f"{lock_path}: another process{_holder(lock_path)} has held the lock for {timeout_s:g} s. {_WAIT}"
                ) from None
            time.sleep(0.02)
            continue
        except OSError as exc:
            os.close(fd)
            raise error(
                f"{lock_path}: cannot take the lock ({exc.strerror}). Use a local directory for the baselines."
            ) from None
        try:
            ours = os.fstat(fd)
            now_at_path = os.stat(lock_path)
            current = (ours.st_dev, ours.st_ino) == (now_at_path.st_dev, now_at_path.st_ino)
        except FileNotFoundError:
            current = False
        if current:
            with contextlib.suppress(OSError):  # who holds it, for the message of a writer that times out
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)  # the previous holder removed the file we waited on: lock the new one


_WAIT = "Wait for the other save to finish and run again (a crashed save never holds the lock)."


def _holder(lock_path: Path) -> str:
    try:
        pid = lock_path.read_text(encoding="utf-8").strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""


def load(
    path: Path,
    *,
    fmt: str,
    readable: Sequence[int],
    error: Callable[[str], LoaderbenchError],
    prefix: str,
    fix: str,
) -> tuple[int, dict[str, Any]]:
    """Read ``path`` as a document of format ``fmt``; returns ``(version, data)``.

    Every problem (unreadable, empty, not UTF-8, not JSON, another format, an unreadable version) is
    ``error("PREFIX: why. FIX.")``.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise error(f"{prefix}: file not found. {fix}.") from None
    except IsADirectoryError:
        raise error(f"{prefix}: is a directory, not a file. {fix}.") from None
    except OSError as exc:
        raise error(f"{prefix}: cannot read it ({exc.strerror}). Check the file's permissions.") from None
    except ValueError:  # a NUL byte in the name: no file can have it
        raise error(f"{prefix}: not a file name (it contains a NUL byte). {fix}.") from None
    if not raw.strip():
        raise error(f"{prefix}: the file is empty (a truncated write). {fix}.")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise error(f"{prefix}: not UTF-8 text; the file is corrupt. {fix}.") from None
    except json.JSONDecodeError as exc:
        raise error(
            f"{prefix}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
            f"the file is truncated or corrupt. {fix}."
        ) from None
    except RecursionError:
        raise error(f"{prefix}: nested too deeply to be a loaderbench document. {fix}.") from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise error(f'{prefix}: not a loaderbench document of format "{fmt}" (no "format": "{fmt}"). {fix}.')
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version not in readable:
        if isinstance(version, int) and not isinstance(version, bool) and version > max(readable):  # newer
            raise error(
                f"{prefix}: it was written by a newer loaderbench (format version {version}; this one reads "
                f"{', '.join(map(str, readable))}). Upgrade loaderbench, or record a new one with this version."
            )
        raise error(
            f"{prefix}: its format version is {version!r}, and this loaderbench reads only "
            f"{', '.join(map(str, readable))}. {fix}."
        )
    return version, data


def dumps(data: Mapping[str, Any], *, indent: int = 2) -> str:
    """``data`` as JSON text (NaN refused: :func:`clean` first), ending in a newline."""
    return json.dumps(data, indent=indent, allow_nan=False) + "\n"


# --- reading a loaded document's fields: a wrong type is a TypeError naming where, which the caller reports ------
def mapping(value: Any, where: str) -> dict[str, Any]:
    """``value`` as a JSON object (or TOML table); else a :class:`TypeError` naming ``where``."""
    if not isinstance(value, Mapping):
        raise TypeError(f"{where} is not a JSON object")
    return dict(value)


def items(value: Any, where: str) -> list[Any]:
    """``value`` as a JSON list; else a :class:`TypeError` naming ``where``."""
    if not isinstance(value, list):
        raise TypeError(f"{where} is not a JSON list")
    return value


def number(value: Any, where: str, *, minimum: float = -math.inf) -> float:
    """``value`` as a finite number of at least ``minimum`` (never a bool); else a :class:`TypeError` naming
    ``where``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{where} is not a finite number")
    if value < minimum:
        raise TypeError(f"{where} is below {minimum:g}")
    return float(value)
