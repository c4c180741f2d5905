"""The package's layout rules, checked on its source: subpackages by job, no import cycle, no import
back up to the package root, no loaderbench import inside a function, short modules with a docstring."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "src" / "loaderbench"
MODULES = sorted(PACKAGE.rglob("*.py"))
#: Optional dependencies, imported where they are used so that the package works without them.
OPTIONAL = {"matplotlib", "pynvml", "hypothesis", "plotly"}
#: The package root's own names (not submodules) that no module may import back.
ROOT_ONLY = {"__version__", "STRATEGIES_MODULE"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path) -> set[str]:
    """loaderbench modules that ``path`` imports when it is imported (``TYPE_CHECKING`` blocks excluded)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    known = {module_name(p) for p in MODULES}

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
            elif isinstance(node, ast.Import):
                out.update(a.name for a in node.names if a.name.startswith("loaderbench"))
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("loaderbench"):
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    out.add(sub if sub in known else str(node.module))

    visit(tree.body)
    return out


def test_there_is_no_import_cycle() -> None:
    graph = {module_name(p): top_level_imports(p) for p in MODULES}
    # a package's __init__ is imported before its submodules: an arrow to a submodule is an arrow to it too
    for deps in graph.values():
        deps |= {d.rsplit(".", 1)[0] for d in deps if d.rsplit(".", 1)[0] in graph and d.count(".") > 1}
    state: dict[str, int] = {}
    path: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if dep == node or dep not in graph or node.startswith(dep + "."):
                continue  # a package's own submodules import it first: not a cycle of modules
            if state.get(dep) == 1:
                cycle = [*path[path.index(dep) :], dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                walk(dep)
        path.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name)


#: The package's layers, lowest first.  A part (a subpackage, or a module at the root) imports only parts of a
#: lower layer; the root's modules (values and rules) import only each other, without a cycle.
LAYERS: list[tuple[str, set[str]]] = [
    (
        "values and rules",
        {
            "__init__",
            "clock",
            "collates",
            "config",
            "config_rules",
            "errors",
            "formatting",
            "ids",
            "interrupts",
            "jsondoc",
            "machine",
            "measurement",
            "metrics",
            "options",
            "pytest_names",
            "stats",
            "version",
        },
    ),
    (
        "data, workloads, pipelines, the CUDA path, the store, the decision rules",
        {"data", "workloads", "pipelines", "cuda", "store", "decision"},
    ),
    ("the simulated device and test helpers", {"testing"}),
    ("measuring one case", {"engine"}),
    ("several ranks; the stored gate", {"ranks", "gate"}),
    ("case selection; reports", {"selection", "report"}),
    ("history, tune, the A/B", {"history", "tune", "ab"}),
    ("the self-checks; the pytest plugin", {"selfcheck", "pytest_plugin"}),
    ("entry points: the shipped suite, the CLI, the tools", {"suite", "cli", "tools"}),
]


def part_of(module: str) -> str:
    bits = module.split(".")
    return bits[1] if len(bits) > 1 else "__init__"


def test_packages_are_layers() -> None:
    """Every part sits in one layer, and every import goes down a layer (the root's modules excepted among
    themselves): a package-level loop, which the module-cycle check cannot see, fails here."""
    rank = {name: i for i, (_, names) in enumerate(LAYERS) for name in names}
    parts = {part_of(module_name(p)) for p in MODULES}
    assert parts <= set(rank), f"place {sorted(parts - set(rank))} in a layer of LAYERS"
    upward = []
    for path in MODULES:
        source = part_of(module_name(path))
        for dep in top_level_imports(path):
            target = part_of(dep)
            if target == source or (rank[source] == rank[target] == 0):
                continue
            if rank[target] >= rank[source]:
                upward.append(f"{module_name(path)} -> {dep} ({LAYERS[rank[source]][0]} -> {LAYERS[rank[target]][0]})")
    assert not upward, "imports that do not go down a layer:\n" + "\n".join(sorted(upward))


def test_the_root_docstring_names_every_subpackage_and_each_says_its_job() -> None:
    root_doc = ast.get_docstring(ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8"))) or ""
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        name = init.parent.name
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        assert len(doc.split()) >= 8, f"{name}/__init__.py: say the package's one job in its docstring"
        assert f"``{name}``" in root_doc or f"{name}/" in root_doc or f".{name}`" in root_doc, (
            f"the package docstring (loaderbench/__init__.py) does not name the subpackage {name}"
        )


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_each_module_is_short_documented_and_imports_at_the_top(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    where = path.relative_to(PACKAGE)
    assert len(source.splitlines()) <= 400, f"{where} has grown past 400 lines: split it by job"
    assert ast.get_docstring(tree), f"{where} needs a module docstring stating its job"
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "loaderbench":
            names = {a.name for a in node.names}
            assert not names & ROOT_ONLY, f"{where}:{node.lineno} imports {names & ROOT_ONLY} from the package root"
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import):
                    modules = [a.name for a in inner.names]
                elif isinstance(inner, ast.ImportFrom):
                    modules = [inner.module or ""]
                else:
                    continue
                for m in modules:
                    assert not m.startswith("loaderbench"), f"{where}:{inner.lineno}: a sibling import in a function"


@pytest.mark.slow
def test_every_subpackage_imports_on_its_own() -> None:
    """Each module imports first in a fresh interpreter (an import-order cycle would fail here)."""
    names = [module_name(p) for p in MODULES if "testing" not in module_name(p) or "hypothesis" in sys.modules]
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    for loaded in [m for m in sys.modules if m.startswith('loaderbench')]:\n"
        "        del sys.modules[loaded]\n"
        "    importlib.import_module(name)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr
