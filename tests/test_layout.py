"""The layout rules of sweeps/ (see docs/design.md), checked on the code itself: no import cycle (imports
inside functions count), few top-level modules, small modules and functions, and private library APIs
only in the compat modules, one per library."""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = ROOT / "sweeps"
CHECKED = [ROOT / d for d in ("sweeps", "lightning_modules", "hydra_plugins", "bench", "examples")]
LIBRARIES = set("optuna hydra omegaconf mlflow lightning pytorch_lightning torch transformers peft".split())
ACCESSORS = {"getattr", "setattr", "hasattr", "delattr"}
PUBLIC = {"_replace", "_asdict", "_fields", "_make", "_field_defaults"}  # namedtuple's documented API


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


def private(name: str) -> bool:
    """A ``_``-name: not a dunder, nor Hydra's ``_target_`` and its kin, nor namedtuple's public methods."""
    return name.startswith("_") and not name.endswith("_") and name not in PUBLIC


def root_name(node: ast.expr) -> str | None:
    """The name an attribute chain starts from (``nn`` in ``nn.Linear(1, 1)._foo``)."""
    while isinstance(node, ast.Attribute | ast.Call | ast.Subscript):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def own_names(trees: Iterable[ast.AST]) -> set[str]:
    """Every name our code defines: functions, classes, arguments and what it assigns (``self._lock = x``)."""
    names = set()
    for node in (n for tree in trees for n in ast.walk(tree)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.Attribute | ast.Name) and not isinstance(node.ctx, ast.Load):
            names.add(node.attr if isinstance(node, ast.Attribute) else node.id)
    return names


def library_names(tree: ast.AST) -> Iterator[tuple[int, str | None, str]]:
    """(line, the private part or None, bound name) of each import from the libraries."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in LIBRARIES:
                    bad = next(filter(private, alias.name.split(".")), None)
                    yield node.lineno, bad and alias.name, alias.asname or alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in LIBRARIES:
            for alias in node.names:
                bad = next(filter(private, [*(node.module or "").split("."), alias.name]), None)
                yield node.lineno, bad and f"{node.module}.{alias.name}", alias.asname or alias.name


def private_uses_in(tree: ast.AST, own: set[str]) -> Iterator[tuple[int, str]]:
    """(line, use) of each private import, attribute or ``getattr``-like call with a literal in ``tree``."""
    imports = list(library_names(tree))
    yield from ((line, bad) for line, bad, _ in imports if bad)
    bound = {name for _, _, name in imports}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            obj, name, read = node.value, node.attr, isinstance(node.ctx, ast.Load)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ACCESSORS:
            literal = node.args[1] if len(node.args) > 1 else None
            if not (isinstance(literal, ast.Constant) and isinstance(literal.value, str)):
                continue
            obj, name, read = node.args[0], literal.value, True
        else:
            continue
        on_self = isinstance(obj, ast.Name) and obj.id in ("self", "cls")
        if private(name) and (root_name(obj) in bound or (read and not on_self and name not in own)):
            yield node.lineno, ast.unparse(node)


def private_uses(paths: Iterable[Path]) -> list[str]:
    """``file:line use`` of each ``_``-name of a library outside the compat modules (``compat.py``,
    ``*_compat.py``), in the files and folders ``paths``."""
    files = sorted({f for p in paths for f in ([p] if p.is_file() else p.rglob("*.py"))})
    trees = {f: ast.parse(f.read_text(), str(f)) for f in files}
    own = own_names(trees.values())
    return [
        f"{path}:{line} {use}"
        for path, tree in trees.items()
        if path.name != "compat.py" and not path.name.endswith("_compat.py")
        for line, use in sorted(set(private_uses_in(tree, own)))
    ]


def test_private_library_apis_only_in_the_compat_modules():
    """A library may change or drop a ``_``-name in any release: each use sits in its library's compat
    module, with a test in test_compat.py that fails when the library changes it. Found on the syntax tree:
    imports of a library's ``_``-modules or ``_``-names, ``_``-attributes of what those imports bind, and
    ``_``-attributes (``x._y``, ``getattr(x, "_y")`` and its kin) of objects other than ``self``/``cls``
    that no code of ours defines (``session._lock`` is ours, ``module._forward_hooks`` torch's)."""
    assert private_uses(CHECKED) == []


PLANTED = """
import optuna.storages.journal._file
from optuna.storages import _CachedStorage
from optuna.storages.journal import _file
import torch.nn as nn


class Ours:
    def __init__(self):
        self._lock = None


def use(module, study, ours, parts):
    optuna.storages.journal._file.get_lock_file
    nn.Linear(1, 1)._lock
    module._forward_hooks
    getattr(study, "_storage")
    setattr(study, "_study_id", 1)
    return ours._lock, parts._replace(netloc=""), study.sampler, module.__class__
"""


def test_the_check_finds_private_uses_planted_outside_a_compat_module(tmp_path: Path):
    (tmp_path / "planted.py").write_text(PLANTED)
    (tmp_path / "optuna_compat.py").write_text(PLANTED)  # the same in a compat module: allowed
    assert [hit.split(" ", 1)[1] for hit in private_uses([tmp_path])] == [
        "optuna.storages.journal._file",
        "optuna.storages._CachedStorage",
        "optuna.storages.journal._file",
        "optuna.storages.journal._file",
        "nn.Linear(1, 1)._lock",  # a name we define too, but on what torch made
        "module._forward_hooks",
        "getattr(study, '_storage')",
        "setattr(study, '_study_id', 1)",
    ]
    assert private_uses([tmp_path / "planted.py"])[0].startswith(f"{tmp_path / 'planted.py'}:2 ")


def test_the_code_cites_no_file_outside_the_repository():
    for path in [*SWEEPS.rglob("*.py"), *(ROOT / "lightning_modules").glob("*.py")]:
        assert "DESIGN.md" not in path.read_text(), path
