"""The layout rules of sweeps/ (see docs/design.md), checked on the code itself: no import cycle (imports
inside functions count), few top-level modules, small modules and functions, and private library APIs
only in the one compat module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = ROOT / "sweeps"
PRIVATE = re.compile(
    r"\.(_return_value|_trial_id|_study_id|_get_stale_trial_ids)\b|study\._storage|optuna\.storages\._"
    r"|hydra\._internal|split_arguments"
)


def cycles(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), plus modules importing themselves."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in graph.find_modules_directly_imported_by(module) & modules:
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = []
            while True:
                other = stack.pop()
                group.append(other)
                if other == module:
                    break
            if len(group) > 1 or module in graph.find_modules_directly_imported_by(module):
                found.append(sorted(group))

    for module in sorted(modules):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycle_in_sweeps_counting_imports_inside_functions():
    graph = grimp.build_graph("sweeps")
    modules = {m for m in graph.modules if m.startswith("sweeps.")}
    assert len(modules) > 30
    assert cycles(graph, modules) == []


def test_a_cycle_is_found():
    """The check above can fail: two modules of a throwaway package that import each other."""
    graph = grimp.ImportGraph()
    for name in ("pkg.a", "pkg.b", "pkg.c"):
        graph.add_module(name)
    graph.add_import(importer="pkg.a", imported="pkg.b")
    graph.add_import(importer="pkg.b", imported="pkg.a")
    graph.add_import(importer="pkg.c", imported="pkg.a")
    assert cycles(graph, {"pkg.a", "pkg.b", "pkg.c"}) == [["pkg.a", "pkg.b"]]


def test_few_top_level_modules_small_modules_and_functions():
    assert len(list(SWEEPS.glob("*.py"))) <= 8
    for path in SWEEPS.rglob("*.py"):
        text = path.read_text()
        assert len(text.splitlines()) <= 400, path
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                assert length <= 60, f"{path}:{node.lineno} {node.name} has {length} lines"


def test_private_library_apis_only_in_the_compat_module():
    hits = [
        f"{path}:{n}"
        for path in SWEEPS.rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if PRIVATE.search(line)
    ]
    assert hits == []


def test_the_code_cites_no_file_outside_the_repository():
    for path in [*SWEEPS.rglob("*.py"), *(ROOT / "lightning_modules").glob("*.py")]:
        assert "DESIGN.md" not in path.read_text(), path
