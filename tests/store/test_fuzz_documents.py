"""Bad files, fuzzed: hypothesis mutates valid baseline and results documents (truncation, a field removed, a
value of another type, huge numbers, NaN, deep nesting, a large file), and every one either loads or is a
clear error naming the file, never a traceback.  Also the file-name rule: no field of a fingerprint can make
the store read or write outside its directory."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loaderbench.config import LoaderConfig
from loaderbench.measurement import Measurement
from loaderbench.store.baseline import BaselineError, BaselineStore, entries_from
from loaderbench.store.document import read
from loaderbench.store.fingerprint import Fingerprint
from loaderbench.store.results import read_results, write_results

FP = Fingerprint(machine="x86_64", cpu_model="Test CPU", affinity_cpus=2, cpu_quota=None, ram_bytes=8 * 2**30, gpus=())


def _measurement(level: float, session: str) -> Measurement:
    return Measurement.from_raw(
        {"samples_per_s": (level, level * 1.01, level * 0.99)},
        {"ttfb_s": 0.05, "peak_memory_bytes": 3e8},
        workload="io",
        config=LoaderConfig(batch_size=32, num_workers=2),
        recorded="2026-01-01T00:00:00+00:00",
        session=session,
    )


@pytest.fixture(scope="module")
def valid(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The text of a valid baseline (2 sessions) and of a valid results.json."""
    tmp = tmp_path_factory.mktemp("valid")
    store = BaselineStore(tmp / "baselines")
    store.save(FP, entries_from([_measurement(1000.0, "s1")]))
    store.record(FP, [_measurement(1010.0, "s2")], append=True)
    results = write_results(tmp / "report" / "results.json", [_measurement(1000.0, "s1")], verdicts={}, context={})
    return {"baseline": store.path_for(FP).read_text(), "results": Path(results).read_text()}


# --- mutations ---------------------------------------------------------------------------------------------

JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
JSON_VALUES = st.recursive(
    JSON_LEAVES, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
)


def _paths(node: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [at]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*at, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*at, i))
    return out


def _set(doc: Any, path: tuple[Any, ...], value: Any, *, delete: bool = False) -> Any:
    if not path:
        return value
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


@st.composite
def mutated(draw: st.DrawFn, text: str) -> str:
    kind = draw(st.sampled_from(["truncate", "delete", "replace", "nan", "deep", "huge", "garbage"]))
    if kind == "truncate":
        return text[: draw(st.integers(min_value=0, max_value=len(text) - 1))]
    if kind == "deep":  # nesting deeper than the JSON parser's recursion limit, where a field is expected
        depth = draw(st.sampled_from([100, 5000, 100_000]))
        return text.replace('"cases":', '"cases": ' + "[" * depth + "]" * depth + ', "x":', 1)
    if kind == "huge":  # a large file: a valid document padded with a long, useless field
        return text[:-2] + ', "padding": "' + "x" * 2_000_000 + '"}\n'
    if kind == "garbage":
        return draw(st.text(max_size=200))
    doc = json.loads(text)
    paths = _paths(doc)
    path = paths[draw(st.integers(min_value=0, max_value=len(paths) - 1))]
    if kind == "delete":
        doc = _set(doc, path, None, delete=bool(path))
    elif kind == "replace":
        doc = _set(doc, path, draw(JSON_VALUES))
    else:  # nan: a non-finite number where any value was
        doc = _set(doc, path, draw(st.sampled_from([math.nan, math.inf, -math.inf])))
    return json.dumps(doc)


FUZZ = settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@FUZZ
@given(data=st.data())
def test_a_mutated_baseline_loads_or_is_a_clear_error(
    data: st.DataObject, valid: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / f"fuzz-{os.getpid()}.json"
    path.write_text(data.draw(mutated(valid["baseline"])), encoding="utf-8")
    try:
        doc = read(path)
    except BaselineError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc).strip(), str(exc)
    else:
        assert all(e.runs for e in doc.cases.values())  # whatever loads is complete (no case without runs)


@FUZZ
@given(data=st.data())
def test_a_mutated_results_file_loads_or_is_a_usage_error(
    data: st.DataObject, valid: dict[str, str], tmp_path: Path
) -> None:
    from loaderbench.errors import UsageError

    path = tmp_path / f"fuzz-{os.getpid()}.json"
    path.write_text(data.draw(mutated(valid["results"])), encoding="utf-8")
    try:
        read_results(path)
    except UsageError as exc:
        assert str(path) in str(exc), str(exc)


# --- the file-name rule -------------------------------------------------------------------------------------------


@given(
    machine=st.text(max_size=40),
    cpu_model=st.text(max_size=40),
    gpus=st.lists(st.text(max_size=40), max_size=2),
    cpus=st.integers(min_value=-5, max_value=10**6),
    quota=st.none() | st.floats(allow_nan=True, allow_infinity=True),
    ram=st.integers(min_value=0, max_value=2**70),
)
def test_no_fingerprint_names_a_file_outside_the_baseline_directory(
    machine: str, cpu_model: str, gpus: list[str], cpus: int, quota: float | None, ram: int
) -> None:
    fp = Fingerprint(
        machine=machine, cpu_model=cpu_model, affinity_cpus=cpus, cpu_quota=quota, ram_bytes=ram, gpus=tuple(gpus)
    )
    store = BaselineStore("/srv/baselines")
    path = store.path_for(fp)
    assert path.parent == Path("/srv/baselines")
    assert "/" not in path.name and not path.name.startswith(".") and path.name.endswith(".json")


def test_hostile_field_values_stay_in_the_directory(tmp_path: Path) -> None:
    fp = Fingerprint(
        machine="../../../etc/passwd",
        cpu_model="/root/.ssh/id_rsa\x00",
        affinity_cpus=2,
        cpu_quota=None,
        ram_bytes=8 * 2**30,
        gpus=("..\\..\\windows",),
    )
    store = BaselineStore(tmp_path / "baselines")
    saved = store.save(fp, entries_from([_measurement(1000.0, "s1")]))
    assert saved.parent == tmp_path / "baselines" and sorted(p.name for p in saved.parent.iterdir()) == [saved.name]
    assert store.load(fp) is not None


def test_documents_are_json_only() -> None:
    """Baselines and results are parsed as JSON (never unpickled): a pickle is a clear error, not code run."""
    import loaderbench.store as store_pkg

    sources = " ".join(p.read_text() for p in Path(store_pkg.__file__).parent.glob("*.py"))
    for unsafe in ("import pickle", "import marshal", "yaml.load", "eval(", "exec("):
        assert unsafe not in sources
