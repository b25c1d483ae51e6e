"""No import cycles among the project's modules (cli.py, broker/, protocol/, storage/).

The module graph is built from the source with ``ast``: every ``import`` and
``from ... import`` counts, at module level, inside a function or under ``if
TYPE_CHECKING:`` (a type-only import back up the layers is a cycle in the design
even if it never runs: give the lower module a small Protocol instead).  The
type-only edges in :data:`TYPE_ONLY_ALLOWED` are the known exceptions still to
remove.  Run it alone with ``python -m pytest tests/test_import_cycles.py``; it
prints the cycles it finds.
"""

from __future__ import annotations

import ast
import pathlib


ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("broker", "protocol", "storage")
# (importer, imported) type-only imports tolerated for now
TYPE_ONLY_ALLOWED = {("broker.channel", "broker.connection")}


def _modules() -> dict[str, tuple[pathlib.Path, bool]]:
    files = [ROOT / "cli.py"] + [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    out = {}
    for p in files:
        rel = p.relative_to(ROOT).with_suffix("")
        is_pkg = rel.name == "__init__"
        out[".".join(rel.parts[:-1] if is_pkg else rel.parts)] = (p, is_pkg)
    return out


def _imports(tree: ast.AST) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement, and whether it sits under ``if TYPE_CHECKING:``."""
    found: list[tuple[ast.Import | ast.ImportFrom, bool]] = []

    def visit(node: ast.AST, type_only: bool) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, type_only)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append((node, type_only))
        for child in ast.iter_child_nodes(node):
            visit(child, type_only)

    visit(tree, False)
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, (path, is_pkg) in mods.items():
        pkg = m if is_pkg else m.rpartition(".")[0]
        for node, type_only in _imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != m and not (type_only and (m, t) in TYPE_ONLY_ALLOWED):
                    graph[m].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

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
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_checker_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_type_checking_imports_are_seen() -> None:
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import x\nelse:\n    import y\n")
    got = [(a.name, t) for n, t in _imports(tree) if isinstance(n, ast.Import) for a in n.names]
    assert got == [("x", True), ("y", False)]


def test_no_import_cycle() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)
