"""The ImageNet-style decode workload: real JPEG files, decoded and augmented as the reference training does.

:func:`make_jpegs` writes seeded JPEG files at setup (ImageNet's typical 500x375, quality 90), whose
content is smooth structure plus texture and grain, so they compress about as photographs do (about
90 kB each at 500x375; ImageNet's training JPEGs average about 110 kB).
:class:`DecodeDataset` reads a file, decodes it with Pillow and applies what torchvision's ImageNet
reference applies for training: ``RandomResizedCrop(224)`` (scale 0.08-1, ratio 3/4-4/3, bilinear),
a horizontal flip with probability 0.5, conversion to a float tensor in [0, 1] and normalisation with
ImageNet's mean and standard deviation.  It is written against Pillow alone (torchvision's binary
build must match torch's exactly, and often does not install beside a pinned torch); the crop and flip
follow torchvision's sampling rules, seeded per ``(seed, index)``.

Generated once per process: :func:`shared_jpegs` keeps one set of files per parameters (size, quality,
count, seed) for the whole process, in a directory of its own on the work directory's file system, which
every dataset built with those parameters reads and which is removed when the interpreter exits (writing
256 files takes about 1.4 s on a 2-core machine, once rather than once per case).  A cold-cache build
drops the files' pages every time (:func:`drop_pages`), a warm one reads them all in (:func:`warm_pages`),
so a set shared by warm and cold workloads is in the state each case asks for.

Page cache: ``cold=True`` drops each file's pages right after reading it
(``posix_fadvise(POSIX_FADV_DONTNEED)``), so every read goes to the storage device; this needs a
file system that keeps a page cache of its own (not tmpfs), which :func:`check_cold` verifies.  Decode
and resize run in C and release the GIL, which is where processes, threads and other pipelines differ.
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import io
import math
import mmap
import os
import random
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from loaderbench.errors import WorkloadError

#: ImageNet's per-channel mean and standard deviation (what the reference training normalises with).
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)

#: File systems whose pages live only in memory: dropping them would lose the file, so nothing is dropped.
_MEMORY_FILE_SYSTEMS = frozenset({"tmpfs", "ramfs", "devtmpfs", "shm"})


def make_jpegs(directory: Path, *, n_files: int, width: int, height: int, quality: int, seed: int) -> int:
    """Write ``n_files`` seeded JPEGs into ``directory`` (kept if already there); returns their total bytes.

    Each image is a coarse random field (the scene), a finer one (objects and edges) and a little
    pixel noise (sensor grain), upsampled bicubically: photographs' mix of smooth regions and texture.
    """
    directory.mkdir(parents=True, exist_ok=True)
    total = 0
    for i in range(n_files):
        path = directory / f"{i:06d}.jpg"
        if not path.exists():
            g = torch.Generator().manual_seed(seed * 1_000_003 + i)
            scene = F.interpolate(torch.rand(1, 3, 6, 8, generator=g), size=(height, width), mode="bicubic")
            detail = F.interpolate(
                torch.rand(1, 3, height // 8, width // 8, generator=g), size=(height, width), mode="bilinear"
            )
            grain = torch.rand(1, 3, height, width, generator=g)
            pixels = (0.5 * scene + 0.3 * detail + 0.2 * grain).clamp_(0, 1).mul_(255).to(torch.uint8)
            hwc = pixels[0].permute(1, 2, 0).contiguous()
            image = Image.frombytes("RGB", (width, height), bytes(hwc.numpy().tobytes()))
            tmp = path.with_suffix(".tmp")
            with open(tmp, "wb") as fh:
                image.save(fh, format="JPEG", quality=quality)
                fh.flush()
                os.fsync(fh.fileno())  # dirty pages cannot be dropped: a cold read needs them written back
            tmp.replace(path)
        total += path.stat().st_size
    return total


#: This process's generated sets, by (n_files, width, height, quality, seed, device of the work directory).
_shared: dict[tuple[int, ...], Path] = {}
#: This process's directories for them, by device, with the id of the process that made them.
_roots: dict[int, Path] = {}
_owner: list[int] = []
_lock = threading.Lock()


def shared_jpegs(workdir: Path, *, n_files: int, width: int, height: int, quality: int, seed: int) -> Path:
    """The directory of this process's JPEG set with these parameters, written by :func:`make_jpegs` on first
    use (or if its files went missing) and shared by every later call.

    The set lives on ``workdir``'s file system (whose page cache a cold-cache case drops): in a directory of
    this process's under the temporary directory when that is the same file system, else under ``workdir``.
    Removed when the interpreter exits."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    device = workdir.stat().st_dev
    key = (n_files, width, height, quality, seed, device)
    with _lock:
        directory = _shared.get(key)
        if directory is None or not all((directory / f"{i:06d}.jpg").is_file() for i in range(n_files)):
            directory = _root(workdir, device) / f"jpegs-{width}x{height}-q{quality}-n{n_files}-s{seed}"
            make_jpegs(directory, n_files=n_files, width=width, height=height, quality=quality, seed=seed)
            _shared[key] = directory
    return directory


def _root(workdir: Path, device: int) -> Path:
    root = _roots.get(device)
    if root is not None and root.is_dir():
        return root
    base = Path(tempfile.gettempdir())
    try:
        same = base.stat().st_dev == device
    except OSError:
        same = False
    root = Path(tempfile.mkdtemp(prefix="loaderbench-jpegs-", dir=base if same else workdir))
    if not _owner:
        _owner.append(os.getpid())
        atexit.register(remove_shared)
    _roots[device] = root
    return root


def remove_shared() -> None:
    """Remove this process's generated sets (at interpreter exit; a forked child leaves them to its parent)."""
    if not _owner or _owner[0] != os.getpid():
        return
    with _lock:
        for root in _roots.values():
            shutil.rmtree(root, ignore_errors=True)
        _roots.clear()
        _shared.clear()


def file_system_of(path: Path) -> str:
    """The type of the file system holding ``path`` (longest mount point in /proc/mounts), or ``""``."""
    best, kind = "", ""
    real = str(path.resolve())
    try:
        lines = Path("/proc/mounts").read_text(encoding="utf-8").splitlines()
    except OSError:
        return ""
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount = fields[1].replace("\\040", " ")
        if (real == mount or real.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(best):
            best, kind = mount, fields[2]
    return kind


def cold_unavailable(directory: Path) -> str | None:
    """Why reads under ``directory`` cannot be made cold (no ``posix_fadvise``, an in-memory file system), or
    ``None``."""
    if not hasattr(os, "posix_fadvise"):
        return "posix_fadvise is missing on this platform"
    kind = file_system_of(directory)
    if kind in _MEMORY_FILE_SYSTEMS:
        return f"{str(directory)!r} is on {kind}, which keeps files only in memory"
    return None


def drop_pages(directory: Path) -> None:
    """Drop every generated file's pages from the page cache (the files were just written or read)."""
    for path in sorted(directory.glob("*.jpg")):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def warm_pages(directory: Path) -> None:
    """Read every generated file once, so its pages are in the page cache (as right after writing it)."""
    for path in sorted(directory.glob("*.jpg")):
        with open(path, "rb") as fh:
            while fh.read(1 << 20):
                pass


def check_cold(directory: Path, workload: str) -> None:
    """Raise :class:`WorkloadError` where dropping pages cannot make reads cold."""
    if not hasattr(os, "posix_fadvise"):
        raise WorkloadError(
            f"workload {workload!r}: cache='cold' needs posix_fadvise, which this platform lacks. "
            "Use the warm-cache workload."
        )
    kind = file_system_of(directory)
    if kind in _MEMORY_FILE_SYSTEMS:
        raise WorkloadError(
            f"workload {workload!r}: cache='cold' cannot drop pages of {str(directory)!r} (a {kind} file system "
            "keeps files only in memory). Point TMPDIR at a directory on a disk (the JPEGs are generated "
            "under the temporary directory) or use the warm-cache workload."
        )


def resident_fraction(path: Path) -> float:
    """The share of ``path``'s pages in the page cache now (``mincore``; mapping a file reads none of it);
    NaN where the C library cannot be asked."""
    size = path.stat().st_size
    if size == 0:
        return 0.0
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return math.nan
    libc = ctypes.CDLL(libc_name, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte)]
    pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    vec = (ctypes.c_ubyte * pages)()
    with open(path, "rb") as fh:
        mapped = mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_COPY)  # private: ctypes may take its address
        try:
            anchor = ctypes.c_char.from_buffer(mapped)
            rc = libc.mincore(ctypes.addressof(anchor), size, vec)
            del anchor
        finally:
            mapped.close()
    if rc != 0:
        return math.nan
    return sum(v & 1 for v in vec) / pages


def random_resized_crop(width: int, height: int, rng: random.Random) -> tuple[int, int, int, int]:
    """The box ``(left, top, right, bottom)`` torchvision's ``RandomResizedCrop`` draws: up to 10 tries at
    an area of 8-100% and an aspect ratio of 3/4-4/3 (log-uniform), else a centre crop of clamped ratio."""
    area = width * height
    log_ratio = (math.log(3 / 4), math.log(4 / 3))
    for _ in range(10):
        target = area * rng.uniform(0.08, 1.0)
        ratio = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * ratio))
        h = round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            top = rng.randint(0, height - h)
            left = rng.randint(0, width - w)
            return left, top, left + w, top + h
    in_ratio = width / height
    if in_ratio < 3 / 4:
        w, h = width, round(width / (3 / 4))
    elif in_ratio > 4 / 3:
        h, w = height, round(height * (4 / 3))
    else:
        w, h = width, height
    top, left = (height - h) // 2, (width - w) // 2
    return left, top, left + w, top + h


class DecodeDataset(Dataset[Any]):
    """Sample ``i``: file ``i % n_files`` read, decoded, cropped, flipped, normalised; ``(tensor, label)``."""

    def __init__(
        self, length: int, *, directory: str, n_files: int, crop: int = 224, seed: int = 0, cold: bool = False
    ) -> None:
        self.length, self.directory, self.n_files = length, directory, n_files
        self.crop, self.seed, self.cold = crop, seed, cold

    def __len__(self) -> int:
        return self.length

    def read(self, index: int) -> bytes:
        """The file's bytes; with ``cold`` its pages are dropped right after, so the next read is cold too."""
        path = os.path.join(self.directory, f"{index % self.n_files:06d}.jpg")
        with open(path, "rb") as fh:
            data = fh.read()
            if self.cold:
                os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        return data

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if index < 0 or index >= self.length:
            raise IndexError(index)
        rng = random.Random(self.seed * 1_000_003 + index)
        with Image.open(io.BytesIO(self.read(index))) as image:
            rgb = image.convert("RGB")
        box = random_resized_crop(rgb.width, rgb.height, rng)
        out = rgb.resize((self.crop, self.crop), Image.Resampling.BILINEAR, box=box)
        if rng.random() < 0.5:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        hwc = torch.frombuffer(bytearray(out.tobytes()), dtype=torch.uint8).view(self.crop, self.crop, 3)
        chw = hwc.permute(2, 0, 1).float().div_(255)
        mean = torch.tensor(MEAN).view(3, 1, 1)
        std = torch.tensor(STD).view(3, 1, 1)
        return chw.sub_(mean).div_(std), index % 1000


def decode_cost_s(dataset: DecodeDataset, *, warmup: int = 2, samples: int = 48) -> float:
    """Measured seconds per sample in this process: the mean of ``samples`` fetches spread over the files
    (one sample's cost depends on its file and its random crop), after ``warmup`` untimed ones (the first
    pays for Pillow's plugin imports and first page faults).  The mean, because the ideal is a rate."""
    for i in range(warmup):
        dataset[i % len(dataset)]
    stride = max(1, dataset.n_files // samples)
    indices = [(warmup + k * stride) % len(dataset) for k in range(samples)]
    t0 = time.perf_counter()
    for i in indices:
        dataset[i]
    return (time.perf_counter() - t0) / samples
