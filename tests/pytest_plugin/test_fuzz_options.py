"""Bad input, fuzzed: any string given to a ``--loader-*`` option or to a ``loaderbench`` command line is
accepted or is a usage error with a message, never a traceback."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loaderbench import cli
from loaderbench.errors import LoaderbenchError
from loaderbench.pytest_plugin import plugin

TEXT = st.text(max_size=30) | st.sampled_from(["", "0", "-1", "nan", "inf", "1e999", "10%", "200%", "w-1", "\x00"])


class _Recorder:
    """Stands in for pytest's parser: records every option the plugin declares."""

    def __init__(self) -> None:
        self.options: list[tuple[tuple[str, ...], dict[str, Any]]] = []

    def getgroup(self, *args: Any, **kwargs: Any) -> _Recorder:
        return self

    def addoption(self, *names: str, **attrs: Any) -> None:
        self.options.append((names, attrs))

    def addini(self, *args: Any, **kwargs: Any) -> None:
        return None


def _typed_options() -> list[tuple[str, Any]]:
    recorder = _Recorder()
    plugin.pytest_addoption(recorder)  # type: ignore[arg-type]
    return [(names[0], attrs["type"]) for names, attrs in recorder.options if callable(attrs.get("type"))]


TYPED = _typed_options()


def test_the_plugin_declares_typed_loader_options() -> None:
    names = [n for n, _ in TYPED]
    assert all(n.startswith("--loader-") for n in names)
    assert {"--loader-tier", "--loader-rounds", "--loader-threshold"} <= set(names)


@pytest.mark.parametrize(("name", "convert"), TYPED, ids=[n for n, _ in TYPED])
@given(value=TEXT)
def test_any_string_for_a_loader_option_is_a_value_or_a_usage_error(name: str, convert: Any, value: str) -> None:
    try:
        convert(value)
    except argparse.ArgumentTypeError as exc:  # pytest prints it as a usage error naming the option
        assert str(exc)
    except (ValueError, TypeError):  # argparse's own "invalid value" usage error
        pass


FACTORY = "loaderbench_no_such_module_for_fuzzing:make"  # never imports: tune cannot start measuring
TUNE_OPTIONS = ["--batch-size", "--budget", "--device", "--step-ms", "--max-workers", "--rounds", "--round-seconds"]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse: a usage error, exit 2, message on stderr
        code = exc.code if isinstance(exc.code, int) else 2
    except LoaderbenchError as exc:  # pragma: no cover - main turns these into exit 2
        pytest.fail(f"{argv!r} raised {exc!r} instead of exiting 2")
    _, err = capsys.readouterr()
    assert code in (0, 2), (argv, code, err)
    if code == 2:
        assert err.strip(), argv


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=40)
@given(option=st.sampled_from(TUNE_OPTIONS), value=TEXT)
def test_any_string_for_a_tune_option_is_a_usage_error_or_accepted(
    option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _run(["tune", FACTORY, option, value], capsys)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=40)
@given(results=TEXT, out=TEXT)
def test_any_path_for_report_is_a_usage_error(
    results: str, out: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _run(["report", results, "--out", str(tmp_path / "out" / out.replace("/", "_")), "--no-plots"], capsys)


@pytest.mark.parametrize("path", [".", "/", "/dev/null", "/proc/self/mem", "bad\x00name"])
def test_report_of_a_directory_device_or_bad_name_is_a_usage_error(
    path: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _run(["report", path, "--out", str(tmp_path), "--no-plots"], capsys)


def _untyped_options() -> list[str]:
    recorder = _Recorder()
    plugin.pytest_addoption(recorder)  # type: ignore[arg-type]
    return [
        names[0]
        for names, attrs in recorder.options
        if attrs.get("type") is None and attrs.get("action") in (None, "store") and names[0].startswith("--loader-")
    ]


UNTYPED = _untyped_options()


def test_the_untyped_options_are_found() -> None:
    assert {"--loader-scenarios", "--loader-config", "--loader-ab", "--loader-baseline-dir"} <= set(UNTYPED)


@pytest.mark.slow
@pytest.mark.parametrize("name", UNTYPED)
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=12, deadline=None)
@given(value=TEXT | st.sampled_from([".", "/", "/dev/null", "/proc/self/mem", "no/such/dir/x", "-", ",", "a,,b"]))
def test_any_string_for_an_untyped_loader_option_is_accepted_or_a_usage_error(
    pytester: pytest.Pytester, name: str, value: str
) -> None:
    """Options whose text is checked when the session starts (paths, ids, lists, an interpreter), through a whole
    ``pytest --benchmark --collect-only`` in this process: exit 0, 4 (usage error) or 5, never an internal error."""
    if name == "--loader-ab":
        value = f"/nonexistent/{value}"  # never an interpreter that exists: the A/B must not start one
    if "\x00" in value:
        value = value.replace("\x00", "")  # a NUL cannot reach pytest through a real command line
    result = pytester.runpytest_inprocess("--benchmark", "--collect-only", "-p", "no:cacheprovider", f"{name}={value}")
    text = result.stdout.str() + result.stderr.str()
    assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.USAGE_ERROR, pytest.ExitCode.NO_TESTS_COLLECTED), text
    assert "INTERNALERROR" not in text and "Traceback" not in text, text
