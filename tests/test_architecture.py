"""The package's shape: imports run one way (no circle between skinfuse's modules), and no
module in skinfuse/ is over 500 lines (docs/architecture.md, STYLE.md).

The import graph is built statically: every module of skinfuse/ is parsed with ``ast``
(nothing is imported), relative imports are resolved, and imports inside functions count
as much as those at the top (a lazy import keeps ``import skinfuse`` fast; it does not make
a dependency run the other way). Rules of the graph:

- ``import a.b.c`` and ``from a.b import c`` depend on the module named: ``a.b.c`` when
  ``c`` is a submodule, else ``a.b`` (a package's ``__init__`` when ``a.b`` is a package).
- Importing a module also runs the packages on the way to it (``a.b``'s ``__init__``):
  those are dependencies too, except the packages holding the importing module itself,
  which are being imported already. So a package's ``__init__`` importing its own
  submodules (re-exporting their public names) is not a circle; a submodule importing
  a name back from its own package's ``__init__`` (``from . import name``) is one, as are
  two sibling modules importing each other (``_bulk`` <-> ``_dask``).
- Imports of a module's own name and of other distributions are ignored; dynamic imports
  (``importlib.import_module``) are not seen.

A circle is reported as the strongly connected group of modules it belongs to, with the
imports that close it.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "skinfuse"
MAX_LINES = 500


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imported(node, name: str, path: Path, modules) -> list[str]:
    """The skinfuse modules an import statement names (see the rules above)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name.split(".")[0] == "skinfuse"]
    if node.level:
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        base = package[: len(package) - (node.level - 1)]
        target = ".".join(base + (node.module.split(".") if node.module else []))
    else:
        target = node.module or ""
        if target.split(".")[0] != "skinfuse":
            return []
    out = []
    for alias in node.names:
        sub = f"{target}.{alias.name}"
        out.append(sub if sub in modules else target)
    return out


@functools.cache
def _graph() -> dict[str, frozenset[str]]:
    return {name: frozenset(targets) for name, targets in import_graph().items()}


def import_graph() -> dict[str, set[str]]:
    """``module -> modules it imports`` for every module of skinfuse/."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        own_packages = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        if path.name == "__init__.py":
            own_packages.add(name)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in _imported(node, name, path, modules):
                while target not in modules and "." in target:  # a name, not a module
                    target = target.rpartition(".")[0]
                parts = target.split(".")
                on_the_way = {".".join(parts[:i]) for i in range(1, len(parts))}
                graph[name].update(on_the_way - own_packages)  # packages run on the way
                graph[name].add(target)  # named explicitly: counts even if it is its own
            graph[name].discard(name)
    return graph


def circles(graph) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), sorted."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(groups)


def _describe(graph, group) -> str:
    members = set(group)
    edges = sorted(f"{a} -> {b}" for a in group for b in graph[a] if b in members)
    return "circle among " + ", ".join(group) + ":\n    " + "\n    ".join(edges)


def test_the_graph_sees_imports_inside_functions_and_relative_ones():
    graph = _graph()
    # encoders/_bulk.py: ``from .._cache.bulk import ...`` at the top
    assert "skinfuse._cache.bulk" in graph["skinfuse.encoders._bulk"]
    assert "skinfuse._cache" in graph["skinfuse.encoders._bulk"]  # run on the way
    # _cache/bulk.py imports its Dask side inside a function only
    assert "skinfuse._cache.dask" in graph["skinfuse._cache.bulk"]
    # a package's __init__ re-exporting its submodules: no edge back from them
    assert "skinfuse._cache.disk" in graph["skinfuse._cache"]
    assert "skinfuse._cache" not in graph["skinfuse._cache.disk"]
    # and the check finds a circle where there is one
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circles():
    graph = {name: set(targets) for name, targets in _graph().items()}
    found = circles(graph)
    assert not found, "\n".join(_describe(graph, group) for group in found)


def _files():
    params = []
    for path in sorted(ROOT.rglob("*.py")):
        params.append(pytest.param(path, id=path.relative_to(ROOT).as_posix()))
    return params


@pytest.mark.parametrize("path", _files())
def test_no_module_over_500_lines(path):
    n = len(path.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(ROOT.parent)} has {n} lines (> {MAX_LINES})"


#: private rooms every part of the package may use, inside too
SHARED_ROOMS = {"_nn", "_utils"}


def test_no_private_module_of_another_subpackage_is_imported():
    """``skinfuse.<room>._private`` is imported only from inside ``<room>`` (a subpackage's
    own machinery), unless the room is one of the shared ones: what other parts need goes
    through the room's package (its ``__init__``) or a shared room."""
    found = []
    for a, targets in import_graph().items():
        for b in targets:
            parts = b.split(".")
            room = parts[1] if len(parts) > 2 else None
            if room is None or room in SHARED_ROOMS or a.split(".")[1:2] == [room]:
                continue
            if any(part.startswith("_") for part in parts[2:]):
                found.append(f"{a} -> {b}")
    assert not found, "\n".join(found)
