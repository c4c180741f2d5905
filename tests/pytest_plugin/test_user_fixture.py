"""The ``loader_benchmark`` fixture in a user's own repository: no fixtures/ folder, no TOML (pytester); and
pytest-benchmark's own figures there track throughput (time per sample, so its compare agrees with samples_per_s)."""

from __future__ import annotations

import functools
import json
import statistics
from collections.abc import Callable

import pytest

from loaderbench.pytest_plugin.fixture import tier_configs

#: The user's benchmark test (after ``user_repo``'s dataset ``Slow`` and unit test).
MY_PIPELINE = """

@pytest.mark.parametrize("cfg", [LoaderConfig(num_workers=0, batch_size=8)], ids=lambda c: c.id)
def test_my_pipeline(loader_benchmark, cfg):
    m = loader_benchmark(Slow, cfg, device="cpu")  # a factory; an instance works too
    assert m.rounds["samples_per_s"]
"""
RunResultOf = Callable[..., pytest.RunResult]


@pytest.fixture
def make_project(user_repo: Callable[..., None]) -> Callable[[float], None]:
    """``make_project(delay)``: the user's test module, test_mine.py, each sample sleeping ``delay`` seconds."""
    return functools.partial(user_repo, MY_PIPELINE, module="test_mine")


@pytest.mark.slow
def test_without_benchmark_the_user_benchmark_is_skipped(
    pytester: pytest.Pytester, make_project: Callable[[float], None], run_fast: RunResultOf
) -> None:
    make_project(0.001)
    result = run_fast(pytester)
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1, skipped=1)


@pytest.mark.slow
def test_the_fixture_measures_records_and_gates_without_fixtures_or_toml(
    pytester: pytest.Pytester, make_project: Callable[[float], None], run_fast: RunResultOf
) -> None:
    make_project(0.001)
    assert not (pytester.path / "fixtures").exists()
    first = run_fast(pytester, "--benchmark", "--loader-baseline-save", "--benchmark-json=first.json")
    assert first.ret == pytest.ExitCode.OK, first.stdout.str()
    first.assert_outcomes(passed=1, deselected=1)
    (doc_path,) = (pytester.path / "baselines").glob("*.json")
    entry = json.loads(doc_path.read_text())["cases"]["test_my_pipeline-w0-bs8-cpu-w0-bs8"]
    # no noise prior of its own: one save measured it in two more fresh processes, each a session
    assert len({r["session"] for r in entry["runs"]}) == 3
    first.stdout.fnmatch_lines(["*measured again in 2 fresh process(es)*now hold 3 recording session(s)*threshold*"])
    info = json.loads((pytester.path / "first.json").read_text())["benchmarks"][0]["extra_info"]
    assert info["workload"] == "test_my_pipeline-w0-bs8"

    same = run_fast(pytester, "--benchmark", "--loader-require-baseline")
    assert same.ret == pytest.ExitCode.OK, same.stdout.str()
    same.stdout.fnmatch_lines(["*comparing against*", "*0 regressed*"])

    make_project(0.004)  # 4x slower per sample: the same gate fails the run
    slower = run_fast(pytester, "--benchmark")
    assert slower.ret == pytest.ExitCode.TESTS_FAILED, slower.stdout.str()
    slower.stdout.fnmatch_lines(
        ["*REGRESSIONS: 1 case, *", "*test_my_pipeline-w0-bs8-cpu-w0-bs8*samples_per_s*slower*"]
    )
    assert "Benchmark fixture was not used" not in slower.stdout.str()


@pytest.mark.slow
def test_pytest_benchmark_time_is_seconds_per_sample_and_compare_fail_sees_a_slowdown(
    pytester: pytest.Pytester, make_project: Callable[[float], None], run_fast: RunResultOf
) -> None:
    make_project(0.001)
    base = run_fast(pytester, "--benchmark", "--benchmark-save=base", "--benchmark-json=base.json")
    assert base.ret == pytest.ExitCode.OK, base.stdout.str()
    bench = json.loads((pytester.path / "base.json").read_text())["benchmarks"][0]
    per_sample = [1.0 / v for v in bench["extra_info"]["rounds"]["samples_per_s"]]
    assert bench["stats"]["mean"] == pytest.approx(statistics.fmean(per_sample))
    assert bench["stats"]["rounds"] == len(per_sample)

    make_project(0.004)  # 4x slower per sample, while each round still lasts about the same
    slower = run_fast(pytester, "--benchmark", "--benchmark-compare=0001", "--benchmark-compare-fail=mean:50%")
    assert slower.ret != pytest.ExitCode.OK
    assert slower.ret == pytest.ExitCode.TESTS_FAILED
    slower.stdout.fnmatch_lines(["*performance has regressed beyond --benchmark-compare-fail*"])
    assert "Traceback" not in slower.stdout.str() + slower.stderr.str()
    assert "1 compare-fail" in slower.stdout.lines[-1]


@pytest.mark.slow
def test_tier_configs_parametrize_a_users_test_over_a_tiers_sweep(pytester: pytest.Pytester) -> None:
    smoke = tier_configs("smoke", batch_size=16)
    assert {"w0-bs16", "w2-bs16", "w2-bs16-spawn"} <= {c.id for c in smoke}
    assert len({c.id for c in smoke}) == len(smoke)
    pytester.makepyfile(
        test_sweep="""
import pytest

from loaderbench.pytest_plugin.fixture import tier_configs
from loaderbench.pytest_plugin.fixture import tier_configs

@pytest.mark.parametrize("cfg", tier_configs("smoke", batch_size=16), ids=lambda c: c.id)
def test_sweep(loader_benchmark, cfg):
    loader_benchmark(list, cfg)
"""
    )
    result = pytester.runpytest_subprocess("--benchmark", "--collect-only", "-q", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.stdout.fnmatch_lines(["*test_sweep[[]w0-bs16[]]*", "*test_sweep[[]w2-bs16-spawn[]]*"])


@pytest.mark.slow
def test_a_users_benchmark_through_a_pipeline_that_is_not_installed_skips_with_the_reason(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(
        "from loaderbench.pipelines import registry\n"
        "registry.REQUIRES['spdl'] = (('loaderbench_no_such_module', 'spdl'),)\n"
        "registry.unavailable_reason.cache_clear()\n"
    )
    pytester.makepyfile(
        test_rival="""
import torch
from torch.utils.data import TensorDataset

from loaderbench.config import LoaderConfig


def test_spdl(loader_benchmark):
    loader_benchmark(TensorDataset(torch.zeros(64, 2)), LoaderConfig(num_workers=1, batch_size=8, pipeline="spdl"))
"""
    )
    result = pytester.runpytest_subprocess("--benchmark", "-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*pipeline 'spdl'*needs spdl*pip install*loaderbench[[]rivals[]]*"])


@pytest.mark.slow
def test_a_parametrized_test_is_reported_as_one_workload_of_configs(pytester: pytest.Pytester) -> None:
    """The README's fixture example over two configs: one table for the test function, ``vs w0`` filled in,
    the worker plot drawn, and ``results.json`` carrying the group beside each config's own baseline key."""
    pytester.makepyfile(
        test_grp="""
import pytest
import torch
from torch.utils.data import TensorDataset

from loaderbench.config import LoaderConfig


CONFIGS = [LoaderConfig(batch_size=8), LoaderConfig(batch_size=8, num_workers=2)]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.id)
def test_grp(loader_benchmark, cfg):
    loader_benchmark(TensorDataset(torch.zeros(256, 4)), cfg)
"""
    )
    result = pytester.runpytest_subprocess(
        "--benchmark", "--loader-rounds=2", "--loader-round-seconds=0.03", "--loader-report=rep",
        f"--loader-baseline-dir={pytester.path / 'bl'}", "-p", "no:cacheprovider",
    )  # fmt: skip
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.OK, out
    assert "test_grp.py::test_grp on cpu: 2 case(s)" in out
    assert "loaderbench: measuring 2 loader_benchmark test(s) of this repository" in out and "tier smoke" not in out
    w2 = next(ln for ln in out.splitlines() if ln.lstrip("* ").startswith("w2-bs8 "))
    assert w2.lstrip("* ").split()[3].endswith("x")  # vs w0 is a ratio, not "-"
    assert "throughput vs num_workers not drawn" not in out
    doc = json.loads((pytester.path / "rep" / "results.json").read_text())
    assert {(c["case_id"], c.get("group")) for c in doc["cases"]} == {
        ("test_grp-w0-bs8-cpu-w0-bs8", "test_grp.py::test_grp"),
        ("test_grp-w2-bs8-cpu-w2-bs8", "test_grp.py::test_grp"),
    }
