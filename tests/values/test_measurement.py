"""The measurement record: one unit in memory, in JSON, and in ``extra_info``."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import pytest

from loaderbench.config import LoaderConfig
from loaderbench.measurement import FLAGS, Measurement, from_extra_info, sessions

Record = Callable[..., Measurement]


@pytest.fixture
def record(make_measurement: Callable[..., Measurement]) -> Record:
    """``record(**changes)``: a full record (consumer metrics, notes, a session), with ``changes`` to its fields."""

    def build(**changes: object) -> Measurement:
        return make_measurement(
            **{
                "workload": "io",
                "device": "cuda",
                "config": LoaderConfig(batch_size=8, num_workers=2, multiprocessing_context="spawn"),
                "rounds": {"samples_per_s": (100.0, 101.0, 102.0), "feed_samples_per_s": (90.0, math.nan, 92.0)},
                "phases": {"ttfb_s": 0.02, "startup_s": 0.01, "epoch_shutdown_s": 0.003},
                "steady_batches": 12,
                "bytes_per_sample": 64,
                "peak_memory_bytes": 123_000_000,
                "cpus": 1,
                "notes": ("torch warned: something",),
                "extra": {"h2d_limit_bytes_per_s": 5e10, "gpu": "H100"},
                "consumer": "step5ms-nb-plain",
                "session": "abc",
                "recorded": "2026-12-01T00:00:00+00:00",
                **changes,
            }
        )

    return build


def test_the_json_record_round_trips_and_writes_nan_as_null(record: Record) -> None:
    m = record()
    text = json.dumps(m.to_json(), allow_nan=False)  # no NaN reaches the JSON
    back = Measurement.from_json(json.loads(text))
    assert back.case_id == m.case_id == "io-cuda-w2-bs8-spawn-step5ms-nb-plain"
    assert back.rounds["samples_per_s"] == m.rounds["samples_per_s"]
    assert math.isnan(back.rounds["feed_samples_per_s"][1])
    assert (back.phases, back.extra, back.notes, back.session, back.recorded) == (
        m.phases,
        m.extra,
        m.notes,
        m.session,
        m.recorded,
    )


def test_extra_info_reads_back_into_the_same_record(record: Record) -> None:
    m = record()
    info = json.loads(json.dumps(m.extra_info(), allow_nan=True))
    assert info["config"]["num_workers"] == 2 and info["samples_per_s"] == 101.0
    assert info["h2d_limit_bytes_per_s"] == 5e10  # consumer metrics at the top level, as the contract says
    back = from_extra_info(info)
    assert back.extra == m.extra  # which keys are extras is derived from extra_info itself, not listed twice
    assert back.notes == m.notes  # computed warnings are not mistaken for notes
    assert back.rounds["samples_per_s"] == m.rounds["samples_per_s"]


def test_flags_and_warnings_are_one_rule(record: Record) -> None:
    m = record(steady_batches=3, cpus=1)
    letters = [f.letter for f in m.flags]
    assert letters == ["F", "O", "N"]
    assert any(w.startswith(FLAGS["F"].what) and FLAGS["F"].fix in w for w in m.warnings)


def test_untagged_runs_are_sessions_of_their_own(record: Record) -> None:
    a, b = record(session="s1"), record(session="s1")
    loose = [record(session=""), record(session="")]
    groups = sessions([a, b, *loose])
    assert [len(g) for g in groups.values()] == [2, 1, 1]
