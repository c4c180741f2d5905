"""The control case's reading of how busy the machine is: other processes' share of the CPU time, which a
CPU hog started just before a job raises at once (the 1-minute load average lags behind it)."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import psutil

from loaderbench.engine import control
from loaderbench.engine.control import ControlReading, busier


def reading(load: float = 0.5, others: float = math.nan, steal: float = 0.0) -> ControlReading:
    return ControlReading(1e7, 1e9, load, steal, others)


def test_busier_uses_others_share_when_both_sides_measured_it() -> None:
    recorded = [reading(load=1.0, others=0.02), reading(load=1.1, others=0.04)]
    assert math.isclose(busier(recorded, reading(load=0.2, others=0.53)), 0.5)  # a hog on 1 of 2 CPUs; the load lags
    assert busier(recorded, reading(load=3.0, others=0.03)) == 0.0  # the load counts the suite: not used


def test_busier_falls_back_to_the_load_for_a_baseline_recorded_before_others_share() -> None:
    recorded = [reading(load=0.5), reading(load=0.7)]
    assert math.isclose(busier(recorded, reading(load=1.1, others=0.5)), 0.5)  # 1.1 - median(0.5, 0.7)
    assert busier([], reading(load=5.0, others=0.9)) == 0.0


def test_the_reading_round_trips_through_a_baseline_session_and_merges() -> None:
    r = reading(load=0.4, others=0.2, steal=0.01)
    assert ControlReading.from_calibration(r.as_calibration()) == r
    assert control.OTHERS not in reading().as_calibration()  # NaN is never written to a baseline
    old = {k: v for k, v in r.as_calibration().items() if k != control.OTHERS}
    assert math.isnan(ControlReading.from_calibration(old).others_busy)  # type: ignore[union-attr]
    assert r.merged(reading(others=math.nan)).others_busy == 0.2
    assert math.isclose(r.merged(reading(others=0.4)).others_busy, 0.3)


def test_a_cpu_hog_beside_the_control_is_seen_at_once() -> None:
    cpus = psutil.cpu_count() or 1
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        busy = control.measure(rounds=5, round_s=0.06)
    finally:
        hog.kill()
        hog.wait()
    # one spinning process is one CPU of the machine's: about 1/cpus of its time (half of it on one CPU)
    assert busy.others_busy >= 0.5 / max(2, cpus), (busy, cpus, os.getloadavg())


def test_others_share_is_the_machines_busy_time_less_the_measured_processes_own() -> None:
    from collections import namedtuple

    from loaderbench.engine.memory import others_share

    times = namedtuple("times", "user system idle iowait steal")
    before, after = times(10.0, 2.0, 50.0, 1.0, 0.0), times(13.0, 3.0, 53.0, 1.0, 0.0)  # 7 s passed, 4 s busy
    assert others_share(before, after, 1.0) == 3.0 / 7.0  # 1 s of it was the case's own
    assert others_share(before, after, 5.0) == 0.0  # own time counted in ticks can exceed it: clamped
    assert math.isnan(others_share(before, before, 0.0)) and math.isnan(others_share(before, after, math.nan))


def test_each_case_records_what_other_processes_took_during_its_rounds() -> None:
    from loaderbench import LoaderConfig, Plan, measure
    from loaderbench.workloads.recipes import Workload

    sleepy = Workload(name="sleepy", kind="sleep", batch_size=4, params={"latency_s": 0.002})
    plan = Plan(rounds=3, round_s=0.1, warmup_batches=1, min_batches_per_round=2)
    cpus = psutil.cpu_count() or 1
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        busy = measure(sleepy, LoaderConfig(batch_size=4), plan=plan)
    finally:
        hog.kill()
        hog.wait()
    assert busy.extra["others_busy"] >= 0.5 / max(2, cpus), (busy.extra, cpus, os.getloadavg())
    assert busy.extra_info()["others_busy"] == busy.extra["others_busy"]
