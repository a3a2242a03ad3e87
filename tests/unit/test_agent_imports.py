"""No import cycle in the agent: every import counts, also those inside functions.

A lazy import (inside a function) still ties two modules together: renewal importing the
composition root that imports renewal is a cycle even if neither import runs at load
time. Only ``if TYPE_CHECKING:`` imports are left out (they never run). Importing a
package's submodule is not counted as importing the package's ``__init__``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import edge_provision

PACKAGE = Path(edge_provision.__file__).resolve().parent


def module_files(root: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the package under ``root``."""
    out: dict[str, Path] = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:``."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skipped


def imported_modules(path: Path, name: str, known: Iterable[str]) -> set[str]:
    """The package modules ``path`` (module ``name``) imports, lazy imports included."""
    modules = set(known)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = _type_checking_nodes(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                if f"{base}.{alias.name}" in modules:
                    found.add(f"{base}.{alias.name}")  # a submodule imported by name
                elif base in modules:
                    found.add(base)
    found.discard(name)
    return found


def find_cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def import_graph(files: Mapping[str, Path]) -> dict[str, set[str]]:
    """module -> the package modules it imports."""
    return {name: imported_modules(path, name, files) for name, path in files.items()}


def test_no_import_cycle_touches_the_agent() -> None:
    """Tarjan over every import of the package: no cycle contains an agent module."""
    graph = import_graph(module_files())
    assert "edge_provision.agent.wiring" in graph["edge_provision.agent.daemon.control"]
    cycles = [c for c in find_cycles(graph) if any(m.startswith("edge_provision.agent")
                                                   for m in c)]  # fmt: skip
    assert cycles == []


def test_the_walker_finds_a_planted_cycle(tmp_path: Path) -> None:
    """A lazy import back up (like renewal -> wiring -> renewal) is found; TYPE_CHECKING not."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from pkg.sub import low\n")
    (pkg / "sub" / "low.py").write_text("def f():\n    from pkg import top\n")
    (pkg / "top.py").write_text("from .sub.low import f\n")
    (pkg / "typed.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import top\n")
    graph = import_graph(module_files(pkg))
    assert graph["pkg.top"] == {"pkg.sub.low"} and graph["pkg.typed"] == set()
    assert find_cycles(graph) == [["pkg.sub.low", "pkg.top"]]
