"""Workloads: named, seeded dataset recipes that know their ideal throughput.

A :class:`Workload` is a frozen value read from the scenario file (``loaderbench/data/workloads.toml``, or a
rootdir's ``fixtures/workloads.toml``) or built in code.  ``build(length, workdir)`` makes a dataset of the
requested epoch length; ``ideal_samples_per_s`` says what the cost model allows for a worker count, or ``None``
where the workload has no cost model (memory- and IPC-bound workloads).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import reprlib
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, IterableDataset, TensorDataset

from loaderbench.errors import WorkloadError
from loaderbench.machine import affinity_cpus
from loaderbench.workloads import datasets as ds
from loaderbench.workloads import decode
from loaderbench.workloads.calibration import spin_loops_per_s

KINDS = (
    "sleep",
    "spin",
    "tensor-fill",
    "skewed",
    "file",
    "tensor",
    "iterable-sleep",
    "iterable-spin",
    "decode",
    "big-index",
    "user",
)

#: Decode seconds per sample measured in this process, by workload (see :meth:`Workload.sample_cost_s`).
_decode_costs: dict[tuple[str, str], float] = {}


#: The tiers a workload can list under ``tiers``; a workload without the key runs in all of them.
TIER_NAMES = ("smoke", "standard", "full")


def _check_tiers(value: Any, scenarios: Path, name: str) -> None:
    where = f"scenarios={str(scenarios)!r}, workload {name!r}"
    if not isinstance(value, list) or not value or not all(isinstance(t, str) for t in value):
        raise WorkloadError(
            f'{where}: tiers={value!r} is not a non-empty list of tier names. Write e.g. tiers = ["smoke"], '
            "or leave the key out to run the workload in every tier."
        )
    unknown = [t for t in value if t not in TIER_NAMES]
    if unknown:
        raise WorkloadError(f"{where}: tiers={value!r}: unknown tier {unknown[0]!r}. Use {', '.join(TIER_NAMES)}.")


@dataclass(frozen=True, slots=True)
class Workload:
    """A named dataset recipe: ``kind`` plus its parameters.

    ``batch_size`` is the workload's natural batch size, used by the tiers.
    ``params`` holds the kind's parameters (see ``loaderbench/data/workloads.toml``).
    """

    name: str
    kind: str
    batch_size: int = 32
    description: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    fixed_length: int | None = None
    group: str = ""  # the reports' grouping of its measurements ("": the name): Measurement.group

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise WorkloadError(
                f"kind={self.kind!r} (workload {self.name!r}): unknown workload kind. Use one of {KINDS}."
            )

    def _p(self, key: str, default: Any = None) -> Any:
        if key in self.params:
            return self.params[key]
        if default is None:
            raise WorkloadError(
                f"workload {self.name!r}: parameter {key!r} is missing. Add {key} = ... to its scenario entry."
            )
        return default

    @property
    def is_iterable(self) -> bool:
        return self.kind.startswith("iterable")

    def sample_cost_s(self) -> float | None:
        """Mean seconds of work per sample in one process, where the cost model defines it."""
        if self.kind in ("sleep", "iterable-sleep", "big-index"):
            return float(self._p("latency_s"))
        if self.kind == "decode":  # measured when the dataset was first built in this process
            return _decode_costs.get((self.name, repr(sorted(self.params.items()))))
        if self.kind in ("spin", "iterable-spin"):
            return float(self._p("cost_s"))
        if self.kind == "skewed":
            every = int(self._p("every"))
            return (float(self._p("heavy_s")) + (every - 1) * float(self._p("base_s"))) / every
        return None

    def ideal_samples_per_s(self, num_workers: int, cpus: int | None = None) -> float | None:
        """What the cost model allows with ``num_workers`` workers on ``cpus`` CPUs.

        Sleeps release the GIL and overlap across workers without limit;
        GIL-holding spins, and decodes (CPU-bound though they release the GIL),
        run on at most ``cpus`` workers at once.  Workloads
        without a cost model return ``None``.
        """
        cost = self.sample_cost_s()
        if cost is None or cost <= 0:
            return None
        parallel = max(1, num_workers)
        if self.kind in ("spin", "iterable-spin", "decode"):
            parallel = min(parallel, cpus if cpus is not None else affinity_cpus())
        return parallel / cost

    def build(self, length: int, workdir: str | os.PathLike[str] | None = None) -> Dataset[Any]:
        """A dataset whose epoch has ``length`` samples."""
        shape = tuple(self.params.get("shape", (16,)))
        seed = int(self.params.get("seed", 0))
        kind = self.kind
        if kind == "sleep":
            return ds.SleepDataset(
                length,
                latency_s=self._p("latency_s"),
                sigma=float(self.params.get("sigma", 0.0)),
                shape=shape,
                seed=seed,
            )
        if kind == "spin":
            return ds.SpinDataset(length, loops=self._loops(), shape=shape)
        if kind == "tensor-fill":
            return ds.TensorFillDataset(length, shape=shape, dtype=str(self.params.get("dtype", "float32")))
        if kind == "skewed":
            return ds.SkewedDataset(
                length, base_s=self._p("base_s"), heavy_s=self._p("heavy_s"), every=int(self._p("every")), shape=shape
            )
        if kind == "file":
            return self._build_files(length, workdir)
        if kind == "tensor":
            n = int(self._p("rows"))
            base = TensorDataset(torch.zeros((n, *shape)), torch.zeros(n, dtype=torch.long))
            return ds.RepeatDataset(base, length)
        if kind == "iterable-sleep":
            return ds.IterableSleepDataset(length, latency_s=self._p("latency_s"), shape=shape)
        if kind == "iterable-spin":
            return ds.IterableSpinDataset(length, loops=self._loops(), shape=shape)
        if kind == "decode":
            return self._build_decode(length, workdir)
        if kind == "big-index":
            return ds.BigIndexDataset(
                length, index_size=int(self._p("index_size")), latency_s=float(self._p("latency_s")), shape=shape
            )
        return self._build_user(length)

    def user_collate(self) -> Callable[[Any], Any] | None:
        """The workload's own collate function (``collate = "module:function"``), for ``collate="user"``."""
        path = self.params.get("collate")
        if not path:
            return None
        return import_callable(str(path), argument="collate", returns="a batch", form="module:function")

    def _loops(self) -> int:
        return max(1, round(float(self._p("cost_s")) * spin_loops_per_s()))

    def _build_files(self, length: int, workdir: str | os.PathLike[str] | None) -> Dataset[Any]:
        if workdir is None:
            raise WorkloadError(f"workload {self.name!r}: kind='file' needs a workdir to write its files into.")
        n_files = int(self.params.get("n_files", 64))
        size = int(self._p("file_bytes"))
        directory = Path(workdir) / f"files-{self.name}"
        directory.mkdir(parents=True, exist_ok=True)
        payload = bytes(range(256)) * (size // 256 + 1)
        for i in range(n_files):
            path = directory / f"{i:06d}.bin"
            if not path.exists() or path.stat().st_size != size:
                path.write_bytes(payload[:size])
        # The files were just written, so the page cache is warm: this measures
        # the read path through the kernel, not the storage device.
        return ds.FileDataset(length, directory=str(directory), n_files=n_files)

    def _build_decode(self, length: int, workdir: str | os.PathLike[str] | None) -> Dataset[Any]:
        if workdir is None:
            raise WorkloadError(f"workload {self.name!r}: kind='decode' needs a workdir to write its JPEGs into.")
        cache = str(self.params.get("cache", "warm"))
        if cache not in ("warm", "cold"):
            raise WorkloadError(f"workload {self.name!r}: cache={cache!r} is not a page-cache state. Use warm or cold.")
        width, height = int(self.params.get("width", 500)), int(self.params.get("height", 375))
        quality, n_files = int(self.params.get("quality", 90)), int(self.params.get("n_files", 256))
        seed = int(self.params.get("seed", 0))
        spec = {"n_files": n_files, "width": width, "height": height, "quality": quality, "seed": seed}
        directory = decode.shared_jpegs(Path(workdir), **spec)  # once per process, shared by warm and cold cases
        if cache == "cold":
            decode.check_cold(directory, self.name)
        else:
            decode.warm_pages(directory)  # a cold case may have dropped the shared files' pages
        dataset = decode.DecodeDataset(
            length,
            directory=str(directory),
            n_files=n_files,
            crop=int(self.params.get("crop", 224)),
            seed=seed,
            cold=cache == "cold",
        )
        key = (self.name, repr(sorted(self.params.items())))
        if cache == "cold":
            decode.drop_pages(directory)  # written (or read) just now: cold from the first read on
        if key not in _decode_costs:
            probe = decode.DecodeDataset(
                n_files, directory=str(directory), n_files=n_files, crop=dataset.crop, seed=seed, cold=dataset.cold
            )
            _decode_costs[key] = decode.decode_cost_s(probe)  # over the files, whatever this epoch's length
            if cache == "cold":
                decode.drop_pages(directory)  # the cost's warm-up fetches read two files without dropping
        return dataset

    def _build_user(self, length: int) -> Dataset[Any]:
        source = self.params.get("dataset")  # a Dataset or a no-argument factory (the loader_benchmark fixture)
        if source is not None:
            dataset = check_dataset(source() if _is_factory(source) else source, f"dataset={reprlib.repr(source)}")
        else:
            dataset = load_factory(str(self._p("factory")))
        if isinstance(dataset, IterableDataset):
            return dataset
        return ds.RepeatDataset(dataset, length)


def _is_factory(source: Any) -> bool:
    return callable(source) and not isinstance(source, (Dataset, IterableDataset))


def check_dataset(dataset: Any, what: str) -> Dataset[Any]:
    """``dataset`` when it is a sized torch Dataset or an IterableDataset; else a WorkloadError naming ``what``."""
    if not isinstance(dataset, (Dataset, IterableDataset)) or (
        not isinstance(dataset, IterableDataset) and not hasattr(dataset, "__len__")
    ):
        raise WorkloadError(
            f"{what}: returned {type(dataset).__name__}, not a sized torch Dataset or an IterableDataset. "
            "Return a torch.utils.data.Dataset with __len__ and __getitem__."
        )
    return dataset


def import_callable(
    path: str, *, argument: str, returns: str = "a Dataset", form: str = "module:factory"
) -> Callable[..., Any]:
    """Import ``module:name`` and check it is callable; errors name ``argument=path`` and the fix."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise WorkloadError(f"{argument}={path!r}: not a {form!r} path. Write it as e.g. mypkg.data:make.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise WorkloadError(
            f"{argument}={path!r}: cannot import {module_name!r} ({exc}). Check the module is on sys.path."
        ) from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        where = getattr(module, "__file__", None)
        if where is None:  # a folder without __init__.py, e.g. the package's own folder seen from its parent
            folders = ", ".join(str(f) for f in getattr(module, "__path__", ()))
            raise WorkloadError(
                f"{argument}={path!r}: {module_name!r} resolved to a namespace package (the folder(s) {folders}, "
                f"no module file), which has no callable {attr!r}. Run from the directory your package is "
                "installed or importable from, install it (pip install -e .), or give the module's full dotted name."
            )
        raise WorkloadError(
            f"{argument}={path!r}: {module_name} has no callable {attr!r} (imported from {where}). "
            f"Name a function that returns {returns}."
        )
    return fn  # type: ignore[no-any-return]


def load_factory(path: str) -> Dataset[Any]:
    """Import ``module:factory``, call it with no arguments, and check it returns a Dataset."""
    factory = import_callable(path, argument="factory")
    try:
        dataset = factory()
    except Exception as exc:
        raise WorkloadError(
            f"factory={path!r}: the factory raised {type(exc).__name__}: {exc}. Fix the factory."
        ) from None
    return check_dataset(dataset, f"factory={path!r}")


def _check_factory_path(path: str, scenarios: Path, name: str) -> None:
    """Fail at startup, not mid-run, on a malformed or unimportable ``module:factory``."""
    module_name, sep, attr = path.partition(":")
    where = f"scenarios={str(scenarios)!r}, workload {name!r}"
    if not sep or not module_name or not attr:
        raise WorkloadError(f"{where}: factory={path!r} is not a 'module:factory' path. Write e.g. mypkg.data:make.")
    try:
        found = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        found = None
    if found is None:
        raise WorkloadError(f"{where}: factory={path!r}: module {module_name!r} is not importable. Check sys.path.")


def load_scenarios(path: str | os.PathLike[str]) -> dict[str, Workload]:
    """Read the workload scenario file (TOML): ``[[workload]]`` tables."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WorkloadError(f"scenarios={str(p)!r}: file not found. Pass the path of a workloads TOML file.") from None
    except tomllib.TOMLDecodeError as exc:
        raise WorkloadError(f"scenarios={str(p)!r}: not valid TOML ({exc}). Fix the file.") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # a directory, unreadable, not text, a NUL
        raise WorkloadError(
            f"scenarios={str(p)!r}: cannot be read as a text file ({exc.__class__.__name__}: {exc}). "
            "Pass the path of a workloads TOML file."
        ) from None
    out: dict[str, Workload] = {}
    for entry in data.get("workload", []):
        entry = dict(entry)
        try:
            name = entry.pop("name")
            kind = entry.pop("kind")
        except KeyError as exc:
            raise WorkloadError(
                f"scenarios={str(p)!r}: a [[workload]] lacks {exc}. Give every workload a name and a kind."
            ) from None
        if "tiers" in entry:
            _check_tiers(entry["tiers"], p, name)
        if kind == "user":
            _check_factory_path(str(entry.get("factory", "")), p, name)
        if name in out:
            raise WorkloadError(f"scenarios={str(p)!r}: workload {name!r} is defined twice. Rename one.")
        out[name] = Workload(
            name=name,
            kind=kind,
            batch_size=int(entry.pop("batch_size", 32)),
            description=str(entry.pop("description", "")),
            fixed_length=entry.pop("fixed_length", None),
            params=entry,
        )
    if not out:
        raise WorkloadError(f"scenarios={str(p)!r}: defines no [[workload]]. Add at least one.")
    return out
