"""The failure kinds are one enumeration: every raise site uses it, and each kind has its meaning."""

from __future__ import annotations

import ast
import pickle
import re
from pathlib import Path

import pytest

from loaderbench.errors import FAILURE_KINDS, CaseFailed, FailureKind

PACKAGE = Path(__file__).parents[2] / "src" / "loaderbench"


def test_every_kind_has_a_meaning() -> None:
    assert set(FAILURE_KINDS) == set(FailureKind)
    assert all(text and not text.endswith(".") for text in FAILURE_KINDS.values())


def _literal_kinds(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
        if name not in {"CaseFailed", "case_failure"}:
            continue
        args = [kw.value for kw in node.keywords if kw.arg == "kind"]
        if name == "case_failure" and node.args:
            args.append(node.args[0])
        found += [
            f"{path.name}:{node.lineno}" for a in args if isinstance(a, ast.Constant) and isinstance(a.value, str)
        ]
    return found


def test_no_raise_site_spells_a_kind_as_a_string() -> None:
    literal = [hit for path in sorted(PACKAGE.rglob("*.py")) for hit in _literal_kinds(path)]
    assert not literal, f"use FailureKind members, not strings: {literal}"


@pytest.mark.parametrize("kind", ["hang", FailureKind.HANG])
def test_a_kind_survives_pickling_and_compares_as_text(kind: str) -> None:
    exc = pickle.loads(pickle.dumps(CaseFailed("case x failed", case="x", phase="p", kind=kind)))
    assert exc.kind is FailureKind.HANG and exc.kind == "hang" and (exc.case, exc.phase) == ("x", "p")


def test_an_unknown_kind_from_an_older_record_is_kept_as_text() -> None:
    assert CaseFailed("m", kind="from-the-future").kind == "from-the-future"


def test_the_docs_list_every_kind_with_its_meaning() -> None:
    docs = (PACKAGE.parents[1] / "docs" / "faults-and-fuzzing.md").read_text(encoding="utf-8")
    docs = docs.split("### Failure kinds", 1)[1].split("\n#", 1)[0]
    rows = dict(re.findall(r"^\| `([a-z-]+)` \| (.+?) \|$", docs, re.M))
    assert rows == {kind.value: text for kind, text in FAILURE_KINDS.items()}
