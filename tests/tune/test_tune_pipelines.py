"""``loaderbench tune --pipelines``: the best DataLoader setting tried on the other pipelines.

The decision logic runs on a fake measure (chosen samples/s per pipeline) and a fake clock, so no worker starts
and nothing is timed; one small real ``loaderbench tune --pipelines nodesthread`` run and the usage error end
it.  No assertion here depends on how fast this machine is.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from loaderbench import cli
from loaderbench.config import LoaderConfig
from loaderbench.config_rules import PIPELINES
from loaderbench.errors import UsageError
from loaderbench.pipelines import registry
from loaderbench.tune.pipelines import Rivals, compare_pipelines, parse_pipelines
from loaderbench.tune.search import Search, TuneSpec

BEST = LoaderConfig(batch_size=8, num_workers=2, persistent_workers=True)


Compare = Callable[[dict[str, float], tuple[str, ...]], tuple[Rivals, Any]]


@pytest.fixture
def compare(fake_run: Callable[..., Any]) -> Compare:
    """``compare(rates, pipelines)``: BEST measured on DataLoader, then on each of ``pipelines``, each pipeline at
    its rate in ``rates`` (0: the pipeline breaks); the rivals, and the fake measure."""

    def run(rates: dict[str, float], pipelines: tuple[str, ...]) -> tuple[Rivals, Any]:
        fake = fake_run(lambda c: rates[c.pipeline], failure="the pipeline broke")
        search = Search(TuneSpec(factory="m:f", batch_size=8), fake, base=LoaderConfig(batch_size=8), clock=fake.clock)
        search.run(BEST, force=True)
        return compare_pipelines(search, BEST, pipelines), fake

    return run


def test_a_clearly_faster_rival_is_recommended(compare: Compare) -> None:
    rivals, fake = compare(
        {"dataloader": 1000.0, "nodesthread": 1500.0, "stateful": 1000.0}, ("nodesthread", "stateful")
    )
    by = {r.pipeline: r for r in rivals.rivals}
    assert rivals.winner is by["nodesthread"] and by["nodesthread"].faster
    assert "1.50x, faster (Mann-Whitney p=" in by["nodesthread"].verdict
    assert not by["stateful"].faster and "not a significant difference" in by["stateful"].verdict
    assert rivals.summary.startswith("Use nodesthread (")
    # the setting is mapped with registry.nearest: nodes has no persistent workers, stateful keeps them
    assert (
        by["nodesthread"].config == registry.nearest(BEST, "nodesthread")
        and not by["nodesthread"].config.persistent_workers
    )
    assert by["stateful"].config == BEST.replace(pipeline="stateful")
    assert {c.pipeline for c in fake.calls} == {"dataloader", "nodesthread", "stateful"}


def test_a_tied_rival_leaves_the_dataloader_setting(compare: Compare) -> None:
    rivals, _ = compare({"dataloader": 1000.0, "spdl": 1010.0, "nodesprocess": 700.0}, ("spdl", "nodesprocess"))
    by = {r.pipeline: r for r in rivals.rivals}
    assert rivals.winner is None and not by["spdl"].faster and not by["nodesprocess"].faster
    assert "not a significant difference" in by["spdl"].verdict and "slower" in by["nodesprocess"].verdict
    assert rivals.summary == "The DataLoader setting stays: no other pipeline was statistically faster."


def test_a_pipeline_that_is_not_installed_is_skipped_with_its_reason(
    monkeypatch: pytest.MonkeyPatch, compare: Compare
) -> None:
    monkeypatch.setitem(registry.REQUIRES, "spdl", (("loaderbench_no_such_module", "spdl"),))
    registry.unavailable_reason.cache_clear()
    try:
        reason = registry.unavailable_reason("spdl")
        assert reason is not None
        rivals, fake = compare({"dataloader": 1000.0, "spdl": 5000.0, "nodesthread": 0.0}, ("spdl", "nodesthread"))
        spdl, nodes = rivals.rivals
        assert spdl.skipped == reason and spdl.trial is None and not spdl.faster
        assert "spdl" not in {c.pipeline for c in fake.calls}
        assert nodes.failed and "the pipeline broke" in nodes.verdict  # a rival that fails is reported, not raised
        assert rivals.winner is None and "no other pipeline could be measured" in rivals.summary
        assert "spdl" in parse_pipelines("all")  # asked for by "all", then listed as skipped with the reason
    finally:
        monkeypatch.undo()
        registry.unavailable_reason.cache_clear()


def test_parse_pipelines() -> None:
    assert parse_pipelines("nodesthread, spdl,nodesthread") == ("nodesthread", "spdl")
    assert parse_pipelines("dataloader") == ()
    assert set(parse_pipelines("all")) == set(PIPELINES) - {"dataloader"}
    with pytest.raises(UsageError) as info:
        parse_pipelines("nodesthread,ray")
    assert "--pipelines='nodesthread,ray'" in str(info.value) and all(p in str(info.value) for p in PIPELINES)


def test_an_unknown_pipeline_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["tune", "m:f", "--pipelines=dataloader,ray"]) == 2
    err = capsys.readouterr().err
    assert "--pipelines='dataloader,ray': 'ray' is not a known pipeline" in err and "nodesprocess" in err
    assert "Traceback" not in err


SLEEPY = """
import time
import torch
from torch.utils.data import Dataset


class Sleepy(Dataset):
    def __len__(self):
        return 64

    def __getitem__(self, i):
        time.sleep(0.0005)
        return torch.full((4,), float(i))


def make():
    return Sleepy()
"""


@pytest.mark.slow
def test_tune_with_pipelines_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    module = f"tune_rivals_{uuid.uuid4().hex[:12]}"
    (tmp_path / f"{module}.py").write_text(SLEEPY)
    argv = ["tune", f"{module}:make", "--budget=3", "--batch-size=8", "--rounds=2", "--round-seconds=0.02"]
    argv += ["--max-workers=1", "--pipelines=nodesthread", "--no-progress", "--app-dir", str(tmp_path)]
    argv += ["--report", str(tmp_path / "out")]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "Other pipelines (the recommended setting on each):" in out
    assert "nodesthread" in out and ("The DataLoader setting stays" in out or "Use nodesthread" in out)
    if registry.unavailable_reason("nodesthread") is not None:
        assert "skipped: " in out
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    rivals = doc["context"]["tune"]["pipelines"]
    assert [r["pipeline"] for r in rivals["rivals"]] == ["nodesthread"]
    assert rivals["recommended_pipeline"] in ("dataloader", "nodesthread")
