"""Static import analysis of a package, shared by the architecture and lean-daemon tests.

:func:`scan` reads every ``.py`` file under a package folder with :mod:`ast` and records
each import with its line and *when it runs*: at module level (on import), inside a
function (lazily, when called) or only for type checkers (``if TYPE_CHECKING:``). The
rule functions below turn that graph into :class:`Violation` rows naming ``file:line``.
They take the graph (and the tables) as arguments, so a self-test can run them on a
planted package and prove that each rule can fail.

:func:`stdlib_module_names` is ``sys.stdlib_module_names`` where it exists (3.10+) and,
on 3.9, the names found in the running interpreter's own standard-library folders.
"""

from __future__ import annotations

import ast
import enum
import sys
import sysconfig
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

__all__ = [
    "ONE_MODULE",
    "Graph",
    "Import",
    "Scope",
    "Violation",
    "confinement",
    "cycles",
    "direction",
    "layout_purity",
    "light_inits",
    "private_names",
    "private_names_stay_home",
    "scan",
    "stdlib_from_folders",
    "stdlib_module_names",
    "zone",
]


# ---------------------------------------------------------------------------- stdlib names

def stdlib_module_names() -> frozenset[str]:
    """Top-level names of the standard library of the running interpreter."""
    names: Optional[Iterable[str]] = getattr(sys, "stdlib_module_names", None)
    if names is None:  # Python 3.9
        names = stdlib_from_folders()
    return frozenset(names)


def stdlib_from_folders() -> set[str]:
    """Builtin modules plus what the interpreter's stdlib folders hold (no site-packages)."""
    names = set(sys.builtin_module_names)
    paths = sysconfig.get_paths()
    folders = {Path(paths["stdlib"]), Path(paths["platstdlib"])}
    folders |= {folder / "lib-dynload" for folder in list(folders)}
    for folder in folders:
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if entry.name in ("site-packages", "dist-packages", "__pycache__"):
                continue
            if entry.suffix == ".py":
                names.add(entry.stem)
            elif entry.suffix == ".so":
                names.add(entry.name.split(".")[0])
            elif entry.is_dir() and (entry / "__init__.py").is_file():
                names.add(entry.name)
    return names


# ------------------------------------------------------------------------------ the graph

class Scope(enum.Enum):
    """When an import runs."""

    MODULE = "module"  # when the importing module is imported
    FUNCTION = "function"  # when the enclosing function is called (a lazy import)
    TYPING = "typing"  # never at run time: `if TYPE_CHECKING:` only


@dataclass(frozen=True)
class Import:
    """One imported module (and name) at one line of one module."""

    importer: str
    line: int
    target: str  # the module; for project modules the longest existing module name
    name: Optional[str]  # `from target import name` when name is not a submodule
    scope: Scope
    via: str = "import"  # "import", "attribute" (module._name) or "dynamic" (import_module)

    @property
    def top(self) -> str:
        """The top-level package of the target (the library's import name)."""
        return self.target.split(".")[0]

    @property
    def shown(self) -> str:
        """``target`` or ``target.name``: what the import takes."""
        return f"{self.target}.{self.name}" if self.name else self.target


@dataclass(frozen=True)
class Violation:
    """A broken rule at ``file:line``; ``key`` is what an allow-list names (no line)."""

    rule: str
    file: str
    line: int
    subject: str
    detail: str

    @property
    def key(self) -> tuple[str, str, str]:
        """(rule, file, subject): stable while lines move."""
        return (self.rule, self.file, self.subject)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.detail}"


@dataclass
class Graph:
    """Every module of one package and every import in it."""

    package: str
    folder: Path
    modules: dict[str, Path]
    imports: list[Import] = field(default_factory=list)
    opaque_dynamic: list[tuple[str, int]] = field(default_factory=list)
    _index: dict[str, list[Import]] = field(default_factory=dict, repr=False)

    def file(self, module: str) -> str:
        """The module's file, relative to the folder holding the package (posix)."""
        return self.modules[module].relative_to(self.folder.parent).as_posix()

    def place(self, module: str) -> str:
        """The module's file relative to the package folder (``agent/mqtt/__init__.py``)."""
        return self.modules[module].relative_to(self.folder).as_posix()

    def is_package(self, module: str) -> bool:
        """True for a package's ``__init__``."""
        return self.modules[module].name == "__init__.py"

    def package_of(self, module: str) -> str:
        """The package a module belongs to (a package belongs to itself)."""
        return module if self.is_package(module) else module.rpartition(".")[0]

    def ours(self, imp: Import) -> bool:
        """True when the import targets a module of this package."""
        return imp.top == self.package

    def of(self, module: str, scopes: Iterable[Scope] = tuple(Scope)) -> Iterator[Import]:
        """The imports of one module, in the given scopes."""
        wanted = set(scopes)
        return (i for i in self._by_importer().get(module, ()) if i.scope in wanted)

    def _by_importer(self) -> dict[str, list[Import]]:
        if not self._index:  # built once, after scan() has recorded every import
            for imp in self.imports:
                self._index.setdefault(imp.importer, []).append(imp)
        return self._index

    def children(self, package: str) -> list[str]:
        """The modules and subpackages directly inside a package."""
        return [m for m in self.modules if m.rpartition(".")[0] == package and m != package]


def scan(folder: Path) -> Graph:
    """Read every module under the package ``folder`` and record its imports."""
    folder = folder.resolve()
    package = folder.name
    modules: dict[str, Path] = {}
    for path in sorted(folder.rglob("*.py")):
        parts = path.relative_to(folder.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = Graph(package, folder, modules)
    for module, path in modules.items():
        _Scanner(graph, module, path).run()
    return graph


def _resolve(graph: Graph, dotted: str) -> str:
    """The longest existing module that prefixes ``dotted`` (itself when none does)."""
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in graph.modules:
            return candidate
    return dotted


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _dotted(node: ast.expr) -> Optional[str]:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


class _Scanner:
    """Collects the imports of one module, with their scope."""

    def __init__(self, graph: Graph, module: str, path: Path) -> None:
        self.graph = graph
        self.module = module
        self.tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        self.package = graph.package_of(module) if module in graph.modules else module
        self.bound: dict[str, str] = {}  # local name -> project module it is bound to

    def run(self) -> None:
        self._walk(self.tree, Scope.MODULE)

    def _add(self, line: int, target: str, name: Optional[str], scope: Scope,
             via: str = "import") -> None:
        self.graph.imports.append(Import(self.module, line, target, name, scope, via))

    def _walk(self, node: ast.AST, scope: Scope) -> None:
        for child in ast.iter_child_nodes(node):
            inner = scope
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                inner = Scope.FUNCTION if scope is Scope.MODULE else scope
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    self._visit(stmt, Scope.TYPING)
                    self._walk(stmt, Scope.TYPING)
                for stmt in child.orelse:
                    self._visit(stmt, scope)
                    self._walk(stmt, scope)
                continue
            self._visit(child, scope)
            self._walk(child, inner)

    def _visit(self, node: ast.AST, scope: Scope) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _resolve(self.graph, alias.name)
                self._add(node.lineno, target, None, scope)
                if alias.asname:
                    self.bound[alias.asname] = alias.name
                else:
                    first = alias.name.split(".")[0]
                    self.bound[first] = first
        elif isinstance(node, ast.ImportFrom):
            base = self._from_base(node)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in self.graph.modules:
                    self._add(node.lineno, sub, None, scope)
                    self.bound[alias.asname or alias.name] = sub
                else:
                    self._add(node.lineno, _resolve(self.graph, base), alias.name, scope)
        elif isinstance(node, ast.Call):
            self._dynamic(node, scope)
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            owner = _dotted(node.value)
            if owner is None:
                return
            head, _, rest = owner.partition(".")
            if head not in self.bound:
                return
            full = ".".join(filter(None, (self.bound[head], rest)))
            if full in self.graph.modules:
                self._add(node.lineno, full, node.attr, scope, via="attribute")

    def _from_base(self, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        parts = self.package.split(".")
        base = parts[: len(parts) - node.level + 1]
        return ".".join([*base, node.module] if node.module else base)

    def _dynamic(self, node: ast.Call, scope: Scope) -> None:
        func = _dotted(node.func)
        if func not in ("importlib.import_module", "import_module", "__import__"):
            return
        arg = node.args[0] if node.args else None
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            self._add(node.lineno, _resolve(self.graph, arg.value), None, scope, via="dynamic")
        else:
            self.graph.opaque_dynamic.append((self.module, node.lineno))


# ------------------------------------------------------------------------------ the rules

ZONE_FOLDERS = ("agent", "lab", "fleet", "cli", "testing")

# Which zone may import which. "api" is the package root (the lazy facade of
# docs/api.md), "entry" is ``__main__``; everything else outside the zone folders is
# the shared core.
ALLOWED_ZONES: Mapping[str, frozenset[str]] = {
    "core": frozenset({"core"}),
    "agent": frozenset({"core", "agent"}),
    "lab": frozenset({"core", "lab"}),
    "fleet": frozenset({"core", "agent", "fleet"}),  # of agent/: see test_architecture
    "cli": frozenset({"core", "agent", "lab", "fleet", "cli"}),
    "testing": frozenset({"core", "agent", "lab", "testing"}),
    "entry": frozenset({"cli"}),
    "api": frozenset({"core", "agent", "lab", "testing"}),
}

ONE_MODULE = "<exactly one module>"
"""A library home meaning "any single module, but only one" (the one TOML reader)."""

Homes = Mapping[str, Union[tuple[str, ...], str]]


def zone(graph: Graph, module: str) -> str:
    """The zone of a module: core, agent, lab, fleet, cli, testing, entry or api."""
    parts = module.split(".")
    if len(parts) == 1:
        return "api"
    if parts[1] == "__main__":
        return "entry"
    return parts[1] if parts[1] in ZONE_FOLDERS else "core"


def _why(src: str, dst: str) -> str:
    if dst == "cli":
        return "nothing imports the CLI"
    if dst == "testing":
        return "production code never imports testing"
    if {src, dst} == {"agent", "lab"}:
        return "agent and lab never import each other"
    if src == "core":
        return "the shared core imports no zone"
    return f"{src} may import only {', '.join(sorted(ALLOWED_ZONES[src]))}"


def direction(graph: Graph) -> list[Violation]:
    """(a) Imports point one way: cli -> agent|lab -> shared core; nobody imports cli..."""
    out = []
    for imp in graph.imports:
        if not graph.ours(imp) or imp.target not in graph.modules:
            continue
        src, dst = zone(graph, imp.importer), zone(graph, imp.target)
        if dst == "api":
            if imp.name and not (imp.name.startswith("__") or imp.name == "*"):
                out.append(Violation(
                    "direction", graph.file(imp.importer), imp.line, imp.shown,
                    f"takes {imp.name!r} from the package root (a lazy API name); "
                    "import it from the module that defines it"))
            continue
        if dst not in ALLOWED_ZONES[src]:
            out.append(Violation(
                "direction", graph.file(imp.importer), imp.line, imp.target,
                f"{src} -> {dst}: imports {imp.shown} ({_why(src, dst)})"))
    return out


def _in_place(place: str, home: str) -> bool:
    return place.startswith(home) if home.endswith("/") else place == home


def confinement(graph: Graph, homes: Homes, aliases: Mapping[str, str],
                stdlib: frozenset[str]) -> list[Violation]:
    """(b) Each third-party library is imported only in its home; unknown libraries fail."""
    out = []
    single: dict[str, list[Import]] = {}
    for imp in graph.imports:
        lib = aliases.get(imp.top, imp.top)
        if graph.ours(imp) or lib == "__future__":
            continue
        where = graph.place(imp.importer)
        if lib not in homes:
            if imp.top not in stdlib:
                out.append(Violation(
                    "confinement", graph.file(imp.importer), imp.line, imp.top,
                    f"imports {imp.top}, a library with no home in the confinement table "
                    "(add it there and to pyproject.toml, or use the stdlib)"))
            continue
        home = homes[lib]
        if home == ONE_MODULE:
            single.setdefault(lib, []).append(imp)
        elif not any(_in_place(where, h) for h in home):
            out.append(Violation(
                "confinement", graph.file(imp.importer), imp.line, lib,
                f"imports {imp.target}: {lib} lives only in {', '.join(home)}"))
    for lib, imps in single.items():
        importers = sorted({i.importer for i in imps})
        if len(importers) > 1:
            for imp in imps:
                out.append(Violation(
                    "confinement", graph.file(imp.importer), imp.line, lib,
                    f"imports {imp.target}: {lib} must be read by one module only, "
                    f"but {len(importers)} import it ({', '.join(importers)})"))
    return out


def _reachable(graph: Graph, starts: Iterable[str], scopes: Iterable[Scope]
               ) -> dict[str, Optional[Import]]:
    """Every project module reachable from ``starts``, with the import that reached it."""
    wanted = tuple(scopes)
    seen: dict[str, Optional[Import]] = {s: None for s in starts}
    todo = list(seen)
    while todo:
        module = todo.pop()
        for imp in graph.of(module, wanted):
            if graph.ours(imp) and imp.target in graph.modules and imp.target not in seen:
                seen[imp.target] = imp
                todo.append(imp.target)
    return seen


def _trail(reached: Mapping[str, Optional[Import]], module: str) -> list[str]:
    trail = [module]
    step = reached.get(module)
    while step is not None:
        trail.append(step.importer)
        step = reached.get(step.importer)
    return trail[::-1]


def layout_purity(graph: Graph, engine: str, pure_libs: frozenset[str]) -> list[Violation]:
    """(c) The layout engine (and what it reaches) uses only the stdlib and errors.

    Besides ``layout/`` itself, the engine may reach ``errors`` and stdlib-only top-level
    shared modules (the one TOML front end, the duration grammar); never another
    subpackage (settings/, crypto/, http/, platform/) or a zone.
    """
    out = []
    root = f"{graph.package}.{engine}"
    starts = [m for m in graph.modules if m == root or m.startswith(root + ".")]
    reached = _reachable(graph, starts, Scope)
    for module in reached:
        for imp in graph.of(module):
            if graph.ours(imp):
                if imp.target == graph.package or imp.target not in graph.modules:
                    continue
                top_level = (imp.target.count(".") == 1 and not graph.is_package(imp.target)
                             and zone(graph, imp.target) == "core")
                inside = imp.target == root or imp.target.startswith(root + ".")
                if not (inside or top_level):
                    out.append(Violation(
                        "layout", graph.file(module), imp.line, imp.target,
                        f"the layout engine reaches {imp.target} "
                        f"({' -> '.join([*_trail(reached, module), imp.target])}); it may "
                        "use only the stdlib, errors and stdlib-only top-level shared modules"))
            elif imp.top not in pure_libs:
                out.append(Violation(
                    "layout", graph.file(module), imp.line, imp.top,
                    f"the layout engine reaches {imp.top} "
                    f"({' -> '.join([*_trail(reached, module), imp.target])}); it may use "
                    "only the stdlib"))
    return out


def private_names(graph: Graph) -> list[Violation]:
    """(d) No module takes another's ``_private`` name or module across a subpackage boundary.

    A ``_private`` module serves only the package it sits in (and that package's
    subpackages); a ``_private`` name in a module serves only modules of the same package.
    """
    out = []
    for imp in graph.imports:
        if not graph.ours(imp):
            continue
        parts = imp.target.split(".")
        hidden = next((i for i, p in enumerate(parts) if _private(p)), None)
        mine = graph.package_of(imp.importer)
        if hidden is not None:
            owner = ".".join(parts[:hidden])
            if not (mine == owner or mine.startswith(owner + ".")):
                out.append(Violation(
                    "private", graph.file(imp.importer), imp.line, imp.target,
                    f"imports {imp.shown}: the private module {imp.target} serves only "
                    f"{owner}"))
                continue
        if imp.name and _private(imp.name) and imp.target in graph.modules:
            owner = graph.package_of(imp.target)
            if mine != owner:
                what = "uses" if imp.via == "attribute" else "imports"
                out.append(Violation(
                    "private", graph.file(imp.importer), imp.line, imp.shown,
                    f"{what} {imp.shown}, a private name of package {owner}, from {mine}; "
                    "make it public or move the code"))
    return out


def private_names_stay_home(graph: Graph) -> list[Violation]:
    """(d, strict) A ``_private`` name is used only in its own module, never imported.

    Stricter than :func:`private_names`: a helper module gives public names to what
    its siblings in the same package use. One row per (importer, module).
    """
    out: dict[tuple[str, str, str], Violation] = {}
    for imp in graph.imports:
        if (graph.ours(imp) and imp.name and _private(imp.name)
                and imp.target in graph.modules and imp.target != imp.importer):
            taken = sorted({i.name or "" for i in graph.of(imp.importer)
                            if i.target == imp.target and i.name and _private(i.name)})
            row = Violation(
                "private-strict", graph.file(imp.importer), imp.line, imp.target,
                f"takes private names {', '.join(taken)} from {imp.target}; give them "
                "public names in that module (it is private to its package already)")
            out.setdefault(row.key, row)
    return list(out.values())


def _sccs(nodes: Iterable[str], edges: Mapping[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for start in nodes:
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        component.append(top)
                        if top == node:
                            break
                    found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(edges.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def cycles(graph: Graph, scopes: Iterable[Scope], rule: str = "cycle") -> list[Violation]:
    """(e) No import cycles among the package's modules (imports in ``scopes`` only)."""
    wanted = tuple(scopes)
    edges: dict[str, set[str]] = {}
    where: dict[tuple[str, str], Import] = {}
    for imp in graph.imports:
        if (imp.scope in wanted and graph.ours(imp) and imp.target in graph.modules
                and imp.target != imp.importer):
            edges.setdefault(imp.importer, set()).add(imp.target)
            where.setdefault((imp.importer, imp.target), imp)
    out = []
    for component in _sccs(sorted(graph.modules), edges):
        if len(component) < 2:
            continue
        members = set(component)
        links = sorted(
            f"{graph.file(a)}:{where[a, b].line} -> {b}"
            for a in component for b in sorted(edges.get(a, set()) & members))
        first = component[0]
        first_line = min(where[first, b].line for b in edges[first] & members)
        out.append(Violation(
            rule, graph.file(first), first_line, " <-> ".join(component),
            f"import cycle among {', '.join(component)}: {'; '.join(links)}"))
    return out


def light_inits(graph: Graph, homes: Homes, aliases: Mapping[str, str],
                light: frozenset[str]) -> list[Violation]:
    """(f) Importing a package loads no third-party library at module level, even indirectly.

    Importing any module runs its packages' ``__init__`` first, so the ``__init__`` of a
    package with public submodules (``agent/``, ``crypto/``, ``platform/``, ``cli/``...)
    loads, directly or through what it imports at module level, no third-party library
    except one whose home is that very package (``cli/`` may load click). A package
    whose other modules are all ``_private`` (``http/``, ``agent/enroll/``) is one
    concept: its ``__init__`` is the concept's module, and rule (b) places its
    libraries. The package root imports no project module at module level: its API is
    lazy. ``light`` are the libraries that do not count (the stdlib, and tomli standing
    in for tomllib on Python < 3.11).
    """
    out = []
    for package in (m for m in graph.modules if graph.is_package(m)):
        if not any(not _private(c.rpartition(".")[2]) for c in graph.children(package)):
            continue  # a concept with private helpers: its __init__ is the concept's module
        place = graph.place(package).rpartition("/")[0] + "/"
        if package == graph.package:
            for imp in graph.of(package, [Scope.MODULE]):
                if graph.ours(imp):
                    out.append(Violation(
                        "init", graph.file(package), imp.line, imp.target,
                        f"the package root imports {imp.shown} at module level; "
                        "its API is lazy (module __getattr__)"))
        own = {lib for lib, home in homes.items()
               if home != ONE_MODULE and any(h.endswith("/") and place.startswith(h)
                                             for h in home)}
        reached = _reachable(graph, [package], [Scope.MODULE])
        for module in reached:
            for imp in graph.of(module, [Scope.MODULE]):
                lib = aliases.get(imp.top, imp.top)
                if graph.ours(imp) or imp.top in light or lib in own or lib == "__future__":
                    continue
                trail = _trail(reached, module)
                first = reached[trail[1]] if len(trail) > 1 else imp
                assert first is not None
                out.append(Violation(
                    "init", graph.file(package), first.line, lib,
                    f"importing {package} loads {imp.top} at module level "
                    f"({' -> '.join([*trail, imp.target])}); package __init__ files "
                    "load no third-party library (import it where it is used)"))
    # one row per (package, library)
    unique: dict[tuple[str, str, str], Violation] = {}
    for v in out:
        unique.setdefault(v.key, v)
    return list(unique.values())
