"""The architecture, checked on the folders: zones, library homes, purity, privacy, cycles.

Zones are folders of ``edge_provision/``: ``agent/``, ``lab/``, ``cli/``, ``testing/``;
everything else (top-level modules, ``settings/ layout/ crypto/ http/ platform/`` and any
new top-level module) is the shared core. The package root is the lazy API facade
(``docs/api.md``), ``__main__`` the entry point. The rules (each a test below, each
failure naming ``file:line``):

(a) imports point one way: cli -> agent | lab -> shared core. Nothing imports cli (but
    ``__main__``); agent and lab never import each other; the shared core imports no
    zone; production code never imports ``testing``. Lazy (in-function) and
    ``TYPE_CHECKING`` imports count too.
(b) each third-party library lives in one place (``LIBRARY_HOMES``). uvicorn (with its
    httptools and uvloop) only in ``lab/http/listener.py``, which binds and runs the ASGI
    app that the rest of ``lab/http/`` builds without knowing the server. tomllib/tomli
    are read by exactly one module (the one TOML reader). A library with no home fails.
(c) the layout engine imports only the stdlib, ``errors`` and stdlib-only top-level
    shared modules (the TOML front end, the duration grammar), transitively.
(d) no module imports another's ``_private`` name or module across a subpackage
    boundary; strictly, a ``_private`` name is never imported at all (siblings get
    public names from a package's private helper modules).
(e) no import cycles: none among module-level imports, and none closed by a lazy
    (in-function) import either.
(f) a package ``__init__`` with public submodules loads no third-party library at module
    level, directly or indirectly (except the library whose home is that package); the
    package root imports no project module at module level.

Violations known today are listed in ``KNOWN_VIOLATIONS`` with the branch fixing them:
the tests pass now, fail on any new violation, and fail on a stale entry once fixed.
"""

from __future__ import annotations

import re
import sys
import textwrap
from collections.abc import Iterable
from pathlib import Path

import pytest
from _imports import (
    ONE_MODULE,
    Graph,
    Scope,
    Violation,
    confinement,
    cycles,
    direction,
    layout_purity,
    light_inits,
    private_names,
    private_names_stay_home,
    scan,
    stdlib_from_folders,
    stdlib_module_names,
    zone,
)

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "edge_provision"

LIBRARY_HOMES = {
    "paho": ("agent/mqtt/",),
    "uvicorn": ("lab/http/listener.py",),
    "httptools": ("lab/http/listener.py",),
    "uvloop": ("lab/http/listener.py",),
    "requests": ("http/",),
    "urllib3": ("http/",),
    "cryptography": ("crypto/", "testing/"),
    "psutil": ("agent/identity.py",),
    "click": ("cli/",),
    "toml": ONE_MODULE,
}
LIBRARY_ALIASES = {"tomllib": "toml", "tomli": "toml"}
DISTRIBUTION_IMPORTS = {"paho-mqtt": "paho"}  # distribution name -> import name, where they differ

STDLIB = stdlib_module_names()
# tomllib is stdlib from 3.11 on, and tomli stands in for it before (the code imports
# whichever exists): both count as the stdlib for purity and import-lightness
PURE = STDLIB | {"tomllib", "tomli"}

# Imports whose module name is computed at run time (the checker cannot see them):
# file -> what they may load.
DYNAMIC_IMPORTS = {
    "edge_provision/__init__.py": "the modules named in _HOMES (tests/unit/test_api.py)",
    "edge_provision/agent/store/model.py": "CPython's own SHA-256 module (_sha2, _sha256)",
    "edge_provision/crypto/bootstrap_cipher.py": "cryptography (the AES-CFB mode class)",
    "edge_provision/platform/__init__.py": "the platform client modules named in its _HOMES",
}

KNOWN_VIOLATIONS: set[tuple[str, str, str]] = set()
# (d, strict) private names taken from a sibling module of the same package: none

RUNTIME = (Scope.MODULE, Scope.FUNCTION)


def _all_rules(graph: Graph) -> list[Violation]:
    return [
        *direction(graph),
        *confinement(graph, LIBRARY_HOMES, LIBRARY_ALIASES, STDLIB),
        *layout_purity(graph, "layout", PURE),
        *private_names(graph),
        *private_names_stay_home(graph),
        *cycles(graph, [Scope.MODULE], rule="cycle"),
        *cycles(graph, RUNTIME, rule="cycle-lazy"),
        *light_inits(graph, LIBRARY_HOMES, LIBRARY_ALIASES, PURE),
    ]


@pytest.fixture(scope="module")
def graph() -> Graph:
    """The import graph of the real package."""
    return scan(PACKAGE)


def _assert_none_new(found: Iterable[Violation]) -> None:
    new = sorted({str(v) for v in found if v.key not in KNOWN_VIOLATIONS})
    assert not new, "\n" + "\n".join(new)


def test_zone_folders_exist(graph: Graph) -> None:
    """The zones the rules name are real packages (a rename cannot silently pass)."""
    for folder in ("agent", "lab", "fleet", "cli", "testing", "settings", "layout", "crypto",
                   "http", "platform"):
        assert graph.is_package(f"edge_provision.{folder}"), folder
    assert {zone(graph, m) for m in graph.modules} == {
        "api", "entry", "core", "agent", "lab", "fleet", "cli", "testing"}


def test_imports_point_one_way(graph: Graph) -> None:
    """(a) cli -> agent|lab|fleet -> core; nobody imports cli; agent and lab never meet."""
    _assert_none_new(direction(graph))


FLEET_MAY_USE_OF_AGENT = {"edge_provision.agent.backoff", "edge_provision.agent.mqtt"}


def test_fleet_uses_only_the_backoff_and_the_mqtt_check_of_the_agent(graph: Graph) -> None:
    """(a) The simulator runs gateways like the daemon (its backoff, its MQTT check), no more."""
    used = {(graph.file(i.importer), i.line, i.target) for i in graph.imports
            if zone(graph, i.importer) == "fleet" and graph.ours(i)
            and zone(graph, i.target) == "agent" and i.target not in FLEET_MAY_USE_OF_AGENT}
    assert not used, sorted(used)
    assert any(zone(graph, i.importer) == "fleet" and i.target == "edge_provision.agent.backoff"
               for i in graph.imports), "the checker must see fleet's use of the backoff"


def test_each_library_stays_in_its_home(graph: Graph) -> None:
    """(b) paho, uvicorn, requests, cryptography, psutil, click, TOML each live in one place."""
    _assert_none_new(confinement(graph, LIBRARY_HOMES, LIBRARY_ALIASES, STDLIB))


def test_every_runtime_dependency_has_a_home() -> None:
    """(b) Each dependency in pyproject.toml (and the lab extra) has a row in LIBRARY_HOMES."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    specs = [*project["dependencies"], *project["optional-dependencies"]["lab"]]
    names = {re.split(r"[^A-Za-z0-9_.-]", spec, maxsplit=1)[0].lower() for spec in specs}
    imports = {DISTRIBUTION_IMPORTS.get(n, n.replace("-", "_")) for n in names}
    homeless = {i for i in imports if LIBRARY_ALIASES.get(i, i) not in LIBRARY_HOMES}
    assert "paho" in imports and "click" in imports
    assert homeless == set()


def test_layout_engine_uses_only_the_stdlib(graph: Graph) -> None:
    """(c) layout/ reaches only the stdlib, errors and stdlib-only top-level modules."""
    assert any(m.startswith("edge_provision.layout") for m in graph.modules)
    _assert_none_new(layout_purity(graph, "layout", PURE))


def test_no_private_name_crosses_a_subpackage(graph: Graph) -> None:
    """(d) No import of another package's _private name or _private module."""
    _assert_none_new(private_names(graph))


def test_private_names_are_not_imported(graph: Graph) -> None:
    """(d, strict) A _private name is used only in its own module."""
    _assert_none_new(private_names_stay_home(graph))


def test_no_import_cycle_at_module_level(graph: Graph) -> None:
    """(e) Tarjan over module-level imports finds no cycle."""
    _assert_none_new(cycles(graph, [Scope.MODULE], rule="cycle"))


def test_no_import_cycle_through_lazy_imports(graph: Graph) -> None:
    """(e) No cycle is hidden behind an import inside a function either."""
    _assert_none_new(cycles(graph, RUNTIME, rule="cycle-lazy"))


def test_package_inits_are_import_light(graph: Graph) -> None:
    """(f) Importing a package loads no third-party library it does not own."""
    _assert_none_new(light_inits(graph, LIBRARY_HOMES, LIBRARY_ALIASES, PURE))


def test_dynamic_imports_are_declared(graph: Graph) -> None:
    """import_module() with a computed name happens only where DYNAMIC_IMPORTS says."""
    opaque = {graph.file(module) for module, _ in graph.opaque_dynamic}
    assert opaque <= set(DYNAMIC_IMPORTS), opaque - set(DYNAMIC_IMPORTS)


def test_known_violations_are_still_there(graph: Graph) -> None:
    """Every allow-list entry still matches a violation: remove the ones fixed."""
    found = {v.key for v in _all_rules(graph)}
    stale = sorted(KNOWN_VIOLATIONS - found)
    assert not stale, f"fixed, remove from KNOWN_VIOLATIONS: {stale}"


# ------------------------------------------------------------------------------ self-test

PLANTED = {
    "__init__.py": """
        from edge_provision import errors  # expect: init
    """,
    "__main__.py": """
        from edge_provision.cli import main
    """,
    "errors.py": """
        import json
    """,
    "fileio.py": """
        import os
    """,
    "tomlreader.py": """
        import tomllib  # expect: confinement
    """,
    "clock.py": """
        from typing import TYPE_CHECKING
        from edge_provision import plan  # expect: direction
        from edge_provision import __version__
        if TYPE_CHECKING:
            from edge_provision.agent.daemon import Daemon  # expect: direction
    """,
    "a.py": """
        import edge_provision.b  # expect: cycle, cycle-lazy
    """,
    "b.py": """
        from edge_provision import a
    """,
    "c.py": """
        from edge_provision import d  # expect: cycle-lazy
    """,
    "d.py": """
        def later():
            from edge_provision import c
    """,
    "e.py": """
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from edge_provision import f
    """,
    "f.py": """
        from edge_provision import e
    """,
    "g.py": """
        import importlib
        name = "json"
        importlib.import_module(name)
        importlib.import_module("yaml")  # expect: confinement
    """,
    "http/__init__.py": """
        import requests
        from edge_provision import fileio
        def write():
            return fileio._write()  # expect: private, private-strict
    """,
    "platform/__init__.py": """
        from edge_provision.platform.client import Client  # expect: init
    """,
    "platform/client.py": """
        from edge_provision import http
        class Client: ...
    """,
    "settings/__init__.py": """
        import tomllib  # expect: confinement
        import requests  # expect: confinement, layout
        from edge_provision.testing import FakeServer  # expect: direction, layout
        def load(): ...
    """,
    "layout/__init__.py": """
        from edge_provision import errors, fileio
        from edge_provision.settings import load  # expect: layout
        import yaml  # expect: confinement, layout
    """,
    "agent/__init__.py": """
        from edge_provision.agent import identity  # expect: init
    """,
    "agent/identity.py": """
        import psutil
        _secret = 1
    """,
    "agent/daemon.py": """
        from edge_provision.lab.service import Service  # expect: direction
        from edge_provision.lab._helper import thing  # expect: direction, private
        from edge_provision.agent.identity import _secret  # expect: private-strict
        class Daemon: ...
    """,
    "lab/__init__.py": "",
    "lab/_helper.py": """
        thing = 1
    """,
    "lab/service.py": """
        class Service: ...
        def run():
            from edge_provision.cli import main  # expect: direction
            import psutil  # expect: confinement
    """,
    "cli/__init__.py": """
        import click
        def main(): ...
    """,
    "testing/__init__.py": """
        import json
        class FakeServer: ...
    """,
}


def _plant(tmp_path: Path) -> tuple[Graph, set[tuple[str, str, int]]]:
    root = tmp_path / "edge_provision"
    expected: set[tuple[str, str, int]] = set()
    for name, text in PLANTED.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        body = textwrap.dedent(text).lstrip("\n")
        path.write_text(body, encoding="utf-8")
        for number, line in enumerate(body.splitlines(), start=1):
            _, marker, rules = line.partition("# expect:")
            if marker:
                expected |= {(r.strip(), f"edge_provision/{name}", number)
                             for r in rules.split(",")}
    return scan(root), expected


def test_checker_finds_planted_violations(tmp_path: Path) -> None:
    """Every planted violation is found at its file:line, and nothing else is."""
    graph, expected = _plant(tmp_path)
    found = {(v.rule, v.file, v.line) for v in _all_rules(graph)}
    assert sorted(found - expected) == []  # nothing reported that was not planted
    assert sorted(expected - found) == []  # every planted violation reported
    assert [(graph.file(m), line) for m, line in graph.opaque_dynamic] == [
        ("edge_provision/g.py", 3)]


def test_checker_messages_name_the_import(tmp_path: Path) -> None:
    """A violation says what was imported and why it is wrong."""
    graph, _ = _plant(tmp_path)
    rows = {str(v) for v in _all_rules(graph)}
    assert ("edge_provision/agent/daemon.py:1: agent -> lab: imports "
            "edge_provision.lab.service.Service (agent and lab never import each other)") in rows
    assert any(r.startswith("edge_provision/platform/__init__.py:1: importing "
                            "edge_provision.platform loads requests") for r in rows)


# ------------------------------------------------------------------------- stdlib names

def test_stdlib_names_work_on_every_python(graph: Graph) -> None:
    """The stdlib list classifies what the package imports, also on 3.9 (no stdlib_module_names)."""
    folders = stdlib_from_folders()
    assert {"ast", "json", "sqlite3", "ssl", "asyncio", "sys"} <= folders
    assert not {"requests", "click", "psutil", "paho", "edge_provision"} & folders
    if hasattr(sys, "stdlib_module_names"):
        used = {i.top for i in graph.imports}
        assert {n for n in used if n in folders} == {n for n in used if n in STDLIB}
