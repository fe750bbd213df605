"""The code's shape, checked statically: no import cycle between modules or packages (an
import inside a function counts: it must not dodge a cycle), no function over 60 lines."""

from __future__ import annotations

import ast
import collections
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "sam2tune"


def _modules() -> dict[str, Path]:
    mods = {}
    for p in ROOT.rglob("*.py"):
        name = ".".join(p.relative_to(ROOT.parent).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = p
    return mods


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """Imports under ``if TYPE_CHECKING:`` (for annotations only: never run)."""
    out: set[int] = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test):
            out |= {id(m) for b in n.body for m in ast.walk(b)}
    return out


def _targets(mod: str, is_pkg: bool, node: ast.Import | ast.ImportFrom, mods) -> list[str]:
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            base = mod.split(".") if is_pkg else mod.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        names = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in mods else prefix
                 for a in node.names]
    out = []
    for n in names:
        while n and n not in mods:
            n = n.rpartition(".")[0]
        if n.startswith("sam2tune") and n != mod:
            out.append(n)
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the sam2tune modules it imports at run time (anywhere in the module)."""
    mods = _modules()
    graph: dict[str, set[str]] = collections.defaultdict(set)
    for mod, path in mods.items():
        tree = ast.parse(path.read_text())
        skip = _type_checking_nodes(tree)
        for n in ast.walk(tree):
            if isinstance(n, ast.Import | ast.ImportFrom) and id(n) not in skip:
                graph[mod] |= set(_targets(mod, path.name == "__init__.py", n, mods))
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(set(graph) | {w for ws in graph.values() for w in ws}):
        if v not in index:
            visit(v)
    return out


def test_the_oracle_finds_a_cycle():
    # the checker itself: a known cycle and a known chain
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": {"c"}}) == []


def test_no_import_cycle_between_modules():
    graph = import_graph()
    assert "sam2tune.runner.propagate" in graph["sam2tune.runner.measure"]  # the graph is real
    assert cycles(graph) == []


def test_no_cycle_between_packages():
    """``sam2tune.X`` packages form layers (the package root's lazy exports and the command line
    sit on top and are left out)."""
    top = {"sam2tune", "sam2tune.cli", "sam2tune.__main__"}
    pkg = collections.defaultdict(set)
    for a, deps in import_graph().items():
        if a in top:
            continue
        for b in deps:
            pa, pb = ".".join(a.split(".")[:2]), ".".join(b.split(".")[:2])
            if pa != pb and b not in top:
                pkg[pa].add(pb)
    assert cycles(pkg) == []


def test_no_function_over_60_lines():
    long = []
    for path in ROOT.rglob("*.py"):
        for n in ast.walk(ast.parse(path.read_text())):
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = n.end_lineno - n.lineno + 1  # type: ignore[operator]
                if lines > 60:
                    long.append(f"{path.relative_to(ROOT.parent)}:{n.lineno} {n.name} ({lines})")
    assert long == []


def test_no_import_repeated_inside_a_function():
    """An import inside a function is for a heavy or optional dependency, never a name the
    module already has."""
    repeated = []
    for path in ROOT.rglob("*.py"):
        tree = ast.parse(path.read_text())
        top = {
            (a.asname or a.name).split(".")[0]
            for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom) for a in n.names
        }
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for m in ast.walk(fn):
                if isinstance(m, ast.Import | ast.ImportFrom):
                    for a in m.names:
                        if (a.asname or a.name).split(".")[0] in top:
                            repeated.append(f"{path.relative_to(ROOT.parent)}:{m.lineno} {a.name}")
    assert repeated == []
