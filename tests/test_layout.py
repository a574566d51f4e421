"""The package layout (docs/design.md): vaelab's import graph, read with `ast`, has no cycles, no library module
imports the application layer, and the component families do not import the registry that names them.

Every import counts: at the top of a module, inside functions (lazy imports), under `if TYPE_CHECKING`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "vaelab"

#: The application layer: the commands and run directories, the console script's entry points, and the
#: experiment scripts (each a `python -m` program built on the commands' run directories).
APPLICATION = ("vaelab.app", "vaelab.cli", "vaelab.__main__", "vaelab.experiments")
#: The component families, which the registry (`vaelab.config.registry`, `vaelab.config.build`) imports.
COMPONENTS = (
    "vaelab.distributions",
    "vaelab.likelihoods",
    "vaelab.nets",
    "vaelab.objectives",
    "vaelab.posteriors",
    "vaelab.priors",
)
REGISTRY = ("vaelab.config.registry", "vaelab.config.build", "vaelab.config.parts")


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file, is a package's __init__) for every module of vaelab."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def _owner(name: str, modules: dict) -> str | None:
    """The module `name` refers to: itself, or the nearest enclosing module (`a.b.f` -> `a.b`)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """Module -> the vaelab modules it imports anywhere in its body (`from pkg import submodule` points at the
    submodule; `from module import name` at the module)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        here = name if is_package else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")[: len(here.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                for alias in node.names:
                    full = f"{source}.{alias.name}"
                    targets.add(full if full in modules else source)
        graph[name] = {t for t in (_owner(t, modules) for t in targets if t.startswith("vaelab")) if t and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_the_graph_is_read(graph):
    assert "vaelab.recording" in graph["vaelab.app.runs"]
    assert "vaelab.config.build" in graph["vaelab.recording"]  # a lazy import, inside `build_run`
    assert "vaelab.posteriors.amortized" in graph["vaelab.priors.vampprior"]
    assert "vaelab.app.runs" in graph["vaelab.app.commands.train"]  # a lazy import, inside `command`
    assert len(graph) > 100


def test_no_import_cycles(graph):
    assert cycles(graph) == []


def test_cycles_are_found():
    toy = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(toy) == [["a", "b", "c"]]


def test_no_library_module_imports_the_application(graph):
    upward = sorted(
        f"{m} -> {t}"
        for m, targets in graph.items()
        if not _within(m, APPLICATION)
        for t in targets
        if _within(t, APPLICATION)
    )
    assert upward == []


def test_components_do_not_import_the_registry(graph):
    inward = sorted(
        f"{m} -> {t}" for m, targets in graph.items() if _within(m, COMPONENTS) for t in targets if t in REGISTRY
    )
    assert inward == []


def test_the_registry_imports_the_components(graph):
    imported = {t.split(".")[1] for t in graph["vaelab.config.registry"] | graph["vaelab.config.build"]}
    assert {"nets", "posteriors", "priors", "likelihoods", "objectives", "models"} <= imported


def test_the_config_package_loads_only_the_schema(graph):
    assert graph["vaelab.config"] <= {"vaelab.config.schema", "vaelab.errors"}
    assert graph["vaelab.config.schema"] <= {"vaelab.errors"}
