"""The CLI as a user runs it: layout and identity commands, exit codes, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "data" / "layouts"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m edge_provision ARGS`` and capture its output."""
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("EDGE_PROVISION_", "MF_"))}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "edge_provision", *args],
        capture_output=True, text=True, timeout=60, env=full_env, check=False,
    )


def test_version_and_help() -> None:
    """--version prints the version; --help lists the commands with an example."""
    from edge_provision import __version__

    out = run_cli("--version")
    assert out.returncode == 0
    assert __version__ in out.stdout
    helped = run_cli("--help")
    assert helped.returncode == 0
    for command in ("layout", "identity", "serve"):
        assert command in helped.stdout
    assert "Example" in run_cli("layout", "plan", "--help").stdout


def test_layout_check_valid_file() -> None:
    """A valid multi-thing layout checks out with exit 0 and a one-line summary."""
    out = run_cli("layout", "check", str(DATA / "valid_multi.toml"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok: ")
    assert "3 things, 4 channels" in out.stdout


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("bad_syntax.toml", "invalid TOML"),
        ("duplicate_thing.toml", "duplicate"),
        ("duplicate_channel.toml", "duplicate"),
        ("unknown_channel_type.toml", "expected one of 'control', 'data', 'export'"),
        ("empty_layout.toml", "things"),
        ("missing_name.toml", "name"),
        ("bad_name_type.toml", "name"),
    ],
)
def test_layout_check_bad_files_exit_2_without_traceback(name: str, expected: str) -> None:
    """Each bad layout gives exit 2 and one 'error:' line per problem naming the file."""
    path = DATA / name
    out = run_cli("layout", "check", str(path))
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert lines, out.stderr
    assert all(str(path) in line for line in lines)
    assert expected in out.stderr


def test_layout_check_reports_every_problem_at_once() -> None:
    """A file with several mistakes lists all of them."""
    out = run_cli("layout", "check", str(DATA / "many_problems.toml"))
    assert out.returncode == 2
    assert len([ln for ln in out.stderr.splitlines() if ln.startswith("error: ")]) >= 3


def test_layout_check_unreadable_inputs(tmp_path: Path) -> None:
    """Missing files, directories and non-UTF-8 files: exit 2 and a plain message."""
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"[[things]]\nname = \"\xff\xfe\"\n")
    for target, expected in ((tmp_path / "absent.toml", "not found"),
                             (tmp_path, "is a directory"),
                             (binary, "not valid UTF-8")):
        out = run_cli("layout", "check", str(target))
        assert out.returncode == 2, target
        assert expected in out.stderr
        assert "Traceback" not in out.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_layout_check_permission_denied(tmp_path: Path) -> None:
    """An unreadable file is reported as such."""
    path = tmp_path / "locked.toml"
    path.write_text("[[things]]\n", encoding="utf-8")
    path.chmod(0)
    out = run_cli("layout", "check", str(path))
    assert out.returncode == 2
    assert "permission denied" in out.stderr


def test_layout_check_read_error() -> None:
    """A file that opens but cannot be read (EIO) is a plain error, also for root."""
    out = run_cli("layout", "check", "/proc/self/mem")
    assert out.returncode == 2
    assert "cannot read the layout file" in out.stderr
    assert "Traceback" not in out.stderr


def test_layout_check_json_failure_shape() -> None:
    """--json failures are one JSON document with the problems listed."""
    out = run_cli("layout", "check", str(DATA / "many_problems.toml"), "--json")
    assert out.returncode == 2
    doc = json.loads(out.stdout)
    assert doc["ok"] is False
    assert doc["error"]["kind"] == "LayoutError"
    assert len(doc["error"]["problems"]) >= 3


def test_layout_plan_json_is_stable_and_redacts_the_key() -> None:
    """layout plan --json prints the documented shape; the key is never shown."""
    args = ("layout", "plan", str(DATA / "valid_multi.toml"), "--external-id",
            "aa:bb:cc:00:11:22", "--external-key", "super-secret-key", "--json")
    first, second = run_cli(*args), run_cli(*args)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    assert "super-secret-key" not in first.stdout
    plan = json.loads(first.stdout)["plan"]
    assert plan["external_id"] == "aa:bb:cc:00:11:22"
    assert len(plan["things"]) == 3
    assert len(plan["connections"]) == 12
    assert plan["bootstrap"]["channels"][0] == "control-channel"


def test_identity_json_with_explicit_id(tmp_path: Path) -> None:
    """identity --json shows the overriding id and its source, never a key, writes nothing."""
    out = run_cli("--state-dir", str(tmp_path / "state"), "identity", "--json",
                  env={"EDGE_PROVISION_EXTERNAL_ID": "gw-lab-1",
                       "EDGE_PROVISION_EXTERNAL_KEY": "k-very-secret"})
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["external_id"] == "gw-lab-1"
    assert doc["external_key_set"] is True
    assert "k-very-secret" not in out.stdout + out.stderr
    assert not (tmp_path / "state" / "identity.json").exists()


def test_bad_setting_in_env_names_the_variable(tmp_path: Path) -> None:
    """A bad environment value is a usage error naming the variable."""
    out = run_cli("--state-dir", str(tmp_path), "identity",
                  env={"EDGE_PROVISION_MAC_FORMAT": "weird"})
    assert out.returncode == 2
    assert "env EDGE_PROVISION_MAC_FORMAT: expected one of" in out.stderr
