"""docs/api.md runs as written, and `import edge_provision` stays as light as the stdlib."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
PACKAGE = Path(__file__).resolve().parents[2] / "edge_provision"
HEAVY = ("requests", "urllib3", "cryptography", "paho", "psutil", "click", "fastapi",
         "starlette", "uvicorn")


def _blocks(kind: str) -> list[str]:
    """The fenced code blocks of docs/api.md tagged ``kind``."""
    return re.findall(rf"^```{kind}\n(.*?)^```$", DOC.read_text(encoding="utf-8"), re.M | re.S)


def test_doc_example_runs_and_prints_what_the_doc_shows(tmp_path: Path) -> None:
    """The one python block of docs/api.md, run in a fresh interpreter, prints its text block."""
    (example,) = _blocks("python")
    (output,) = _blocks("text")
    script = tmp_path / "example.py"
    script.write_text(example, encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == output
    assert "not-the-token" not in done.stdout + done.stderr


def _loaded_after(code: str) -> dict[str, list[str]]:
    """Run ``code`` after `import edge_provision`; report which packages it loaded."""
    probe = (
        "import sys, json, edge_provision as ep\n"
        f"{code}\n"
        f"heavy = sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))\n"
        "ours = sorted(m for m in sys.modules if m.split('.')[0] == 'edge_provision')\n"
        "print(json.dumps({'heavy': heavy, 'ours': ours}))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, check=True)
    loaded: dict[str, list[str]] = json.loads(done.stdout)
    return loaded


def test_import_loads_nothing_but_the_package_root() -> None:
    """`import edge_provision` loads no submodule and no third-party library."""
    assert _loaded_after("pass") == {"heavy": [], "ours": ["edge_provision"]}


def test_layout_names_load_only_the_layout_engine() -> None:
    """ep.plan / ep.load_layout load layout/ and top-level core modules, nothing heavy."""
    loaded = _loaded_after("ep.plan, ep.load_layout, ep.Layout, ep.LayoutError")
    assert loaded["heavy"] == []
    assert "edge_provision.layout" in loaded["ours"]
    others = {m.split(".")[1] for m in loaded["ours"] if m.count(".") >= 1} - {"layout"}
    assert all((PACKAGE / f"{name}.py").is_file() for name in others), others  # no subpackage


@pytest.mark.parametrize("name", ["Daemon", "load_agent_settings", "testing"])
def test_light_names_stay_light(name: str) -> None:
    """The daemon, the settings loaders and the test kit load no heavy library."""
    assert _loaded_after(f"ep.{name}")["heavy"] == []


def test_no_public_name_loads_the_lab_stack() -> None:
    """Even every public name at once loads neither FastAPI nor uvicorn nor click."""
    heavy = _loaded_after("[getattr(ep, n) for n in ep.__all__]")["heavy"]
    assert not {"fastapi", "starlette", "uvicorn", "click"} & set(heavy), heavy
