"""The versioned JSON documents loaderbench writes (baselines and ``results.json``): one set of rules.

* **Versions.**  Every document has ``format`` and ``version``; a reader lists
  the versions it reads and migrates the older ones.  A newer version is refused
  with "upgrade loaderbench", an unknown one with the document's own fix.
* **NaN rule.**  JSON has no NaN or infinity: they are written as ``null``
  (:func:`clean`), and ``allow_nan=False`` makes any that slip through an error.
* **Atomic writes.**  A temporary file in the same directory, fsynced, then
  ``os.replace``-d over the old one (and the directory fsynced): a reader, or a
  crash at any point, sees the old document or the new one, never a mix.
* **Locking.**  Writers that read, merge and write take an exclusive
  :mod:`filelock` lock beside the document; a writer that cannot take it in
  time fails with a clear message and writes nothing.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import filelock

from loaderbench.errors import LoaderbenchError
from loaderbench.version import __version__

#: ``written_by`` of every document this code writes.
WRITTEN_BY = f"loaderbench {__version__}"


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
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
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


def stale_temporaries(path: Path) -> list[Path]:
    """Temporary files that a writer of ``path`` left when it was killed mid-write."""
    return sorted(path.parent.glob(f".{path.name}.*.tmp"))


@contextlib.contextmanager
def locked(path: Path, *, timeout_s: float, error: Callable[[str], LoaderbenchError]) -> Iterator[None]:
    """An exclusive lock on ``path``'s lock file (``.NAME.lock`` beside it) for a read-merge-write.

    The lock file stays in place on purpose: deleting it would let two writers lock two different files.
    """
    lock_path = path.parent / f".{path.name}.lock"
    lock = filelock.FileLock(str(lock_path), timeout=timeout_s)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise error(
            f"{lock_path}: another process has held the lock for {timeout_s:g} s. "
            "Wait for the other save to finish, or remove the lock file if no save is running."
        ) from None
    except OSError as exc:
        raise error(f"{lock_path}: cannot take the lock ({exc.strerror}). Check the directory is writable.") from None
    try:
        yield
    finally:
        lock.release()


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
    except OSError as exc:
        raise error(f"{prefix}: cannot read it ({exc.strerror}). Check the file's permissions.") from None
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
