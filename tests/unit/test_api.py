"""The programmatic API: edge_provision's lazy names, their table and what type checkers see."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

import edge_provision
from edge_provision import errors

INIT = Path(edge_provision.__file__)
HOMES: dict[str, str] = edge_provision._HOMES


def test_every_public_name_is_its_home_object() -> None:
    """Each name in __all__ is the very object its home module defines (or that module)."""
    for name in edge_provision.__all__:
        if name == "__version__":
            continue
        home = importlib.import_module(HOMES[name])
        expected = home if HOMES[name] == f"edge_provision.{name}" else getattr(home, name)
        assert getattr(edge_provision, name) is expected, name


def test_all_is_the_table_sorted() -> None:
    """__all__ is sorted and lists exactly the table's names plus __version__."""
    assert edge_provision.__all__ == sorted(edge_provision.__all__)
    assert set(edge_provision.__all__) == set(HOMES) | {"__version__"}
    assert len(edge_provision.__all__) == len(set(edge_provision.__all__))


def test_the_api_covers_what_docs_api_promises() -> None:
    """Layout engine, settings loaders, enroll/renew, daemon and testing are all there."""
    promised = {"load_layout", "plan", "Layout", "Plan", "default_layout",
                "load_agent_settings", "load_lab_settings", "AgentSettings", "LabSettings",
                "run_enroll", "enroll", "run_renew", "Daemon", "EdgeProvisionError", "testing"}
    assert promised <= set(edge_provision.__all__)
    assert inspect.ismodule(edge_provision.testing)
    assert callable(edge_provision.run_enroll) and callable(edge_provision.run_renew)


def test_every_error_class_is_exported() -> None:
    """The whole error hierarchy (EdgeProvisionError and each subclass) is public."""
    hierarchy = {name for name, obj in vars(errors).items()
                 if inspect.isclass(obj) and issubclass(obj, errors.EdgeProvisionError)}
    assert "Unauthorized" in hierarchy
    assert hierarchy <= set(edge_provision.__all__), hierarchy - set(edge_provision.__all__)


def _type_checking_names() -> dict[str, str]:
    """name -> home module, as the ``if TYPE_CHECKING:`` block of __init__.py imports it."""
    tree = ast.parse(INIT.read_text(encoding="utf-8"))
    block = next(node for node in tree.body if isinstance(node, ast.If)
                 and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
    seen: dict[str, str] = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom) and node.module, ast.dump(node)
        for alias in node.names:
            submodule = f"{node.module}.{alias.name}"
            seen[alias.asname or alias.name] = (
                submodule if submodule in HOMES.values() else node.module)
    return seen


def test_type_checkers_see_the_same_table() -> None:
    """The TYPE_CHECKING imports name each public name from its table home."""
    assert _type_checking_names() == HOMES


def test_dir_lists_the_api() -> None:
    """dir(edge_provision) shows the lazy names before they are loaded."""
    assert set(edge_provision.__all__) <= set(dir(edge_provision))


def test_unknown_name_is_an_attribute_error() -> None:
    """A name that is not public fails like any missing attribute (hasattr works)."""
    with pytest.raises(AttributeError, match="has no attribute 'parse_go_duration'"):
        edge_provision.parse_go_duration  # noqa: B018
    assert not hasattr(edge_provision, "wiring")


def test_submodules_still_import_by_name() -> None:
    """`from edge_provision import fileio` still finds the submodule, past __getattr__."""
    from edge_provision import fileio, layout

    assert fileio.__name__ == "edge_provision.fileio"
    assert layout.load_layout is edge_provision.load_layout
