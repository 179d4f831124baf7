"""No import cycle in raftcache, between files or between packages, however the import is made.

Rule: the graph is read from the source with ``ast`` (nothing is imported) and every import
counts: at module level, inside functions, under ``TYPE_CHECKING`` and through
``importlib.import_module("raftcache...")`` (the packages' lazy re-exports). A cycle hidden
behind a deferred import is still a cycle: it only moves the failure from import time to the
first call. ``lint-imports`` (``make lint``, contracts in pyproject.toml) checks the layers and
the same acyclicity sibling by sibling; this test checks the whole graph at once and says which
kind of import closes a cycle it finds.

A module left at an old path when its code moved ("Moved to ``X``; kept for compatibility.") is
the one import that may point against the layers: it imports its new home and nothing else, and
nothing imports it but its own package's lazy re-exports, so it closes no cycle between files.
Its edges are left out of the graph between packages only, where an old path inside ``server``
pointing at ``process`` would otherwise read as ``server`` importing ``process``.
"""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
PACKAGE = "raftcache"
LEAF = "raftcache.protocol"

Graph = dict[str, dict[str, set[str]]]  # importer -> imported -> kinds ("module", "function", ...)

MOVED = re.compile(r"Moved to ``(raftcache[\w.]*)``; kept for compatibility\.")


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(
    node: ast.AST, module: str, is_package: bool, known: Mapping[str, object]
) -> list[str]:
    """The raftcache modules ``node`` imports (a package's ``__init__`` stands for the package)."""

    def nearest(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    names: list[str | None] = []
    if isinstance(node, ast.Import):
        names = [nearest(alias.name) for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            anchor = module if is_package else module.rpartition(".")[0]
            for _ in range(node.level - 1):
                anchor = anchor.rpartition(".")[0]
            base = f"{anchor}.{base}" if base else anchor
        names = [
            f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else nearest(base)
            for alias in node.names
        ]
    elif (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute | ast.Name)
        and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        names = [nearest(node.args[0].value)]
    return [n for n in names if n is not None and n.startswith(PACKAGE) and n != module]


def graph_of(sources: Mapping[str, tuple[str, bool]]) -> Graph:
    """The import graph of modules given as ``name -> (source, is_package)``."""
    graph: Graph = {m: {} for m in sources}

    def visit(node: ast.AST, kind: str, module: str, is_package: bool) -> None:
        for child in ast.iter_child_nodes(node):
            child_kind = kind
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                child_kind = "function" if kind == "module" else kind
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for inner in child.body:
                    record(inner, "type_checking" if kind == "module" else kind, module, is_package)
                for inner in child.orelse:
                    record(inner, kind, module, is_package)
                continue
            record(child, child_kind, module, is_package)

    def record(node: ast.AST, kind: str, module: str, is_package: bool) -> None:
        for target in _targets(node, module, is_package, sources):
            graph[module].setdefault(target, set()).add(kind)
        visit(node, kind, module, is_package)

    for module, (source, is_package) in sources.items():
        visit(ast.parse(source), "module", module, is_package)
    return graph


def moved_modules() -> dict[str, str]:
    """Modules kept at an old path: old name -> the module or package their code moved to."""
    found = {}
    for module, path in _modules().items():
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        match = MOVED.match(doc)
        if match:
            found[module] = match.group(1)
    return found


def build_graph() -> Graph:
    return graph_of(
        {
            module: (path.read_text(encoding="utf-8"), path.name == "__init__.py")
            for module, path in _modules().items()
        }
    )


def cycles(edges: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan, iterative), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(edges.get(succ, ())))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return sorted(found)


def _only(graph: Graph, kinds: set[str]) -> dict[str, set[str]]:
    return {a: {b for b, ks in targets.items() if ks & kinds} for a, targets in graph.items()}


def _packages(edges: Mapping[str, set[str]]) -> dict[str, set[str]]:
    """The graph between raftcache's top-level packages and modules (``raftcache.raft`` ...)."""

    def top(module: str) -> str:
        return ".".join(module.split(".")[:2])

    squashed: dict[str, set[str]] = {}
    for a, targets in edges.items():
        squashed.setdefault(top(a), set()).update(top(b) for b in targets if top(b) != top(a))
    return squashed


@pytest.fixture(scope="module")
def graph() -> Graph:
    return build_graph()


EVERY_IMPORT = {"module", "function", "type_checking"}


@pytest.mark.parametrize(
    "kinds", [{"module"}, EVERY_IMPORT], ids=["module-level", "function-level-too"]
)
def test_no_import_cycle_between_files(graph: Graph, kinds: set[str]) -> None:
    found = cycles(_only(graph, kinds))
    detail = [
        {a: {b: sorted(graph[a][b]) for b in component if b in graph[a]} for a in component}
        for component in found
    ]
    assert found == [], f"import cycles between files (importer: imported: kinds): {detail}"


@pytest.mark.parametrize(
    "kinds", [{"module"}, EVERY_IMPORT], ids=["module-level", "function-level-too"]
)
def test_no_import_cycle_between_packages(graph: Graph, kinds: set[str]) -> None:
    moved = moved_modules()
    edges = {a: set() if a in moved else targets for a, targets in _only(graph, kinds).items()}
    assert cycles(_packages(edges)) == []


def test_a_moved_module_imports_only_its_new_home(graph: Graph) -> None:
    moved = moved_modules()
    assert moved, "no module kept for compatibility found: is MOVED still the docstring's form?"
    stray = {
        (old, target)
        for old, new in moved.items()
        for target in graph[old]
        if not (target == new or target.startswith(new + "."))
    }
    assert stray == set()


def test_nothing_imports_a_moved_module_but_its_own_package(graph: Graph) -> None:
    moved = moved_modules()
    importers = {
        (a, b)
        for a, targets in graph.items()
        for b in targets
        if b in moved and a != b.rpartition(".")[0]
    }
    assert importers == set(), "import the new path, not the one kept for compatibility"


def test_the_protocol_leaf_imports_nothing_of_raftcache_outside_itself(graph: Graph) -> None:
    leaf = [m for m in graph if m == LEAF or m.startswith(LEAF + ".")]
    assert leaf, f"{LEAF} is missing"
    outside = {
        (m, target)
        for m in leaf
        for target in graph[m]
        if not (target == LEAF or target.startswith(LEAF + "."))
    }
    assert outside == set()


def pure_core_contract() -> list[str]:
    """The source modules of the ``pure-core`` forbidden contract (pyproject.toml)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    (pure,) = [c for c in contracts if c["id"] == "pure-core"]
    return list(pure["source_modules"])


def outside_contract(
    edges: Mapping[str, set[str]], roots: Iterable[str], listed: Iterable[str]
) -> set[str]:
    """The modules reachable from ``roots`` (themselves included) that no entry of ``listed``
    covers; an entry covers itself and, when it is a package, every module inside it."""
    entries = tuple(listed)
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(edges.get(module, ()))
    return {m for m in seen if not any(m == e or m.startswith(e + ".") for e in entries)}


def _core_modules() -> set[str]:
    return {f"raftcache.raft.{p.stem}" for p in (SRC / PACKAGE / "raft").glob("core*.py")}


def test_the_pure_core_contract_covers_the_core_and_all_it_imports(graph: Graph) -> None:
    """``lint-imports`` checks only the modules the contract names. A new ``raft/core*.py``, or a
    module the core comes to import, directly or through another (``quorum``, ``confhistory``,
    ``log``, ``ready``, ``storage.base`` ...), is pure by default: the contract must name it.
    Every kind of import counts: one inside a function still runs in the core."""
    core = _core_modules()
    assert "raftcache.raft.core" in core, "no raft/core.py found"
    listed = pure_core_contract()
    assert [m for m in listed if m not in graph] == [], "the contract names a missing module"
    assert outside_contract(_only(graph, EVERY_IMPORT), core, listed) == set()


def test_the_pure_core_check_fails_on_a_module_left_out_or_a_new_import(graph: Graph) -> None:
    """The check above can fail: with the real graph, a module dropped from the contract is
    named, and so is one the core reaches through a new import, however deep."""
    edges = _only(graph, EVERY_IMPORT)
    listed = pure_core_contract()
    core = {"raftcache.raft.core"}
    for module in ("raftcache.raft.quorum", "raftcache.raft.confhistory", "raftcache.raft.log"):
        assert outside_contract(edges, core, [m for m in listed if m != module]) == {module}
    deeper = {**edges, "raftcache.raft.log": edges["raftcache.raft.log"] | {"raftcache.raft.node"}}
    assert "raftcache.raft.node" in outside_contract(deeper, core, listed)


def test_the_graph_sees_every_kind_of_import() -> None:
    """The reader itself: an import inside a function, under TYPE_CHECKING or through
    ``importlib`` is an edge of its kind, so the tests above cannot pass by not seeing one."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "import importlib\n"
        "from raftcache.a import x\n"
        "if TYPE_CHECKING:\n"
        "    from raftcache.b import y\n"
        "def f():\n"
        "    from . import c\n"
        "    return importlib.import_module('raftcache.d')\n"
    )
    sources = {f"raftcache.{n}": ("", False) for n in "abcd"}
    sources["raftcache"] = ("", True)
    sources["raftcache.e"] = (source, False)
    graph = graph_of(sources)
    assert graph["raftcache.e"] == {
        "raftcache.a": {"module"},
        "raftcache.b": {"type_checking"},
        "raftcache.c": {"function"},
        "raftcache.d": {"function"},
    }
    sources["raftcache.a"] = ("def g():\n    import raftcache.e\n", False)
    assert cycles(_only(graph_of(sources), {"module"})) == []
    assert cycles(_only(graph_of(sources), EVERY_IMPORT)) == [["raftcache.a", "raftcache.e"]]
