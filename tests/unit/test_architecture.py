"""Imports point one way: checked here, not remembered."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "edge_provision"
STDLIB = set(sys.stdlib_module_names) | {"tomli"}


def _imports(path: Path) -> set[str]:
    """Absolute module names imported by one source file (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts[: len(parts) - node.level + (1 if path.name == "__init__.py" else 0)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _module_files() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.parts[-1] == "__init__" else rel.parts)
        out[name] = path
    return out


MODULES = _module_files()


def _project_imports(name: str) -> set[str]:
    return {
        imp for imp in _imports(MODULES[name])
        if imp.startswith("edge_provision") and _top_module(imp) in MODULES
    }


def _top_module(imp: str) -> str:
    """The longest module name that prefixes ``imp`` (drops imported attribute names)."""
    parts = imp.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in MODULES:
            return candidate
    return imp


def test_nothing_imports_cli() -> None:
    """Only the entry points may import the CLI module."""
    offenders = [
        name for name in MODULES
        if name not in ("edge_provision.cli", "edge_provision.__main__")
        and "edge_provision.cli" in {_top_module(i) for i in _project_imports(name)}
    ]
    assert offenders == []


def test_layout_engine_is_pure() -> None:
    """The layout engine imports only the stdlib, errors and the shared TOML front end."""
    assert "edge_provision.layout" in MODULES
    seen: set[str] = set()
    todo = ["edge_provision.layout"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for imp in _imports(MODULES[name]):
            top = _top_module(imp)
            if top in MODULES:
                if top != "edge_provision":
                    todo.append(top)
            else:
                assert imp.split(".")[0] in STDLIB | {"__future__"}, (name, imp)
    # the shared TOML front end and duration grammar (stdlib-only themselves, checked above)
    front_end = {"edge_provision.tomlfile", "edge_provision.duration", "edge_provision.fileio"}
    assert seen <= {"edge_provision.layout", "edge_provision.errors"} | front_end | {
        m for m in MODULES if m.startswith("edge_provision.layout.")
    }, seen


@pytest.mark.parametrize("module", [
    "edge_provision.crypto.pki", "edge_provision.crypto.bootstrap_cipher",
    "edge_provision.crypto.ca", "edge_provision.crypto.keys", "edge_provision.crypto._x509",
])
def test_crypto_helpers_are_pure(module: str) -> None:
    """The crypto modules use only the stdlib, cryptography, errors and fileio."""
    if module not in MODULES:
        pytest.fail(f"{module} is missing")
    allowed = {"edge_provision.errors", "edge_provision.fileio", "edge_provision",
               "edge_provision.crypto.ca", "edge_provision.crypto.keys",
               "edge_provision.crypto._x509"}
    foreign = {
        imp for imp in _imports(MODULES[module])
        if imp.split(".")[0] not in STDLIB | {"cryptography", "__future__"}
        and _top_module(imp) not in allowed
    }
    assert foreign == set()


def test_agent_and_lab_never_import_each_other() -> None:
    """The daemon and the lab server are separate programs sharing only the core."""
    for name in MODULES:
        deps = {_top_module(i) for i in _project_imports(name)}
        if name.startswith("edge_provision.agent"):
            assert not any(d.startswith("edge_provision.lab") for d in deps), name
        if name.startswith("edge_provision.lab"):
            assert not any(d.startswith("edge_provision.agent") for d in deps), name


@pytest.mark.parametrize("leaf", ["edge_provision.errors", "edge_provision.fileio",
                                  "edge_provision.settings._parse",
                                  "edge_provision.settings", "edge_provision.logs"])
def test_leaves_depend_on_nothing_above_them(leaf: str) -> None:
    """errors, fileio, settings and logs only use each other and the TOML/duration front end."""
    allowed = {"edge_provision", "edge_provision.errors", "edge_provision.fileio",
               "edge_provision.settings._parse", "edge_provision.tomlfile",
               "edge_provision.duration"}
    deps = {_top_module(i) for i in _project_imports(leaf)} - {leaf}
    assert deps <= allowed, deps


def test_checker_sees_imports() -> None:
    """The checker itself finds the imports of a known module (so the tests above can fail)."""
    deps = {_top_module(i) for i in _project_imports("edge_provision.cli._common")}
    assert "edge_provision.settings" in deps
    assert "edge_provision.errors" in deps
