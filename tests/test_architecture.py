"""The project's import rules, read from the source with ``ast`` (imports inside functions
too): ``engines/`` and ``calibration/`` never import ``streamer``, and no module imports
itself through others (no cycles). Both checks are shown to catch a bad import."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engines", "streamer", "calibration")


def module_files(root: Path, packages=PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every module of ``packages`` under ``root``."""
    mods = {}
    for pkg in packages:
        for f in (root / pkg).rglob("*.py"):
            parts = f.relative_to(root).with_suffix("").parts
            mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return mods


def import_graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the project's modules it imports, at any depth of its code."""
    graph = {}
    for name, path in mods.items():
        is_package = path.name == "__init__.py"
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[:len(base) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets.add(module)
                targets.update(f"{module}.{a.name}" for a in node.names)  # a submodule imported by name
        edges = set()
        for target in targets:
            while target and target not in mods:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):  # a package's own __init__
                edges.add(target)
        graph[name] = edges
    return graph


def forbidden_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((m, d) for m, deps in graph.items() for d in deps
                  if m.split(".")[0] in ("engines", "calibration") and d.split(".")[0] == "streamer")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_engines_and_calibration_never_import_streamer():
    assert forbidden_imports(import_graph(module_files(ROOT))) == []


def test_no_import_cycles():
    assert cycles(import_graph(module_files(ROOT))) == []


def test_the_checks_catch_a_bad_import(tmp_path):
    """A copy of the rules' subject with one import added each way is caught."""
    def write(rel: str, text: str) -> None:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    for pkg in PACKAGES:
        write(f"{pkg}/__init__.py", "")
    write("streamer/stage.py", "from engines.core import compute\n")
    write("engines/core.py", "def compute():\n    from engines import helper\n    return helper\n")
    write("engines/helper.py", "X = 1\n")
    write("calibration/camera.py", "import numpy\n")
    graph = import_graph(module_files(tmp_path))
    assert forbidden_imports(graph) == [] and cycles(graph) == []

    write("engines/helper.py", "def f():\n    from streamer.stage import compute  # hidden in a function\n")
    graph = import_graph(module_files(tmp_path))
    assert forbidden_imports(graph) == [("engines.helper", "streamer.stage")]
    assert cycles(graph) == [["engines.core", "engines.helper", "streamer.stage"]]

    write("engines/helper.py", "X = 1\n")
    write("calibration/camera.py", "from ..streamer import stage\n")
    assert ("calibration.camera", "streamer.stage") in forbidden_imports(import_graph(module_files(tmp_path)))
