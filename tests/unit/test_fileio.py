"""Crash-safe file primitives: the staging-file names atomic_write uses, and their cleanup."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_provision import fileio


@pytest.mark.parametrize(
    ("name", "of", "expected"),
    [
        (".state.json.0badc0de.tmp", None, True),
        (".state.json.0badc0de.tmp", "state.json", True),
        (".state.json.prev.0badc0de.tmp", "state.json", False),
        (".agent.env.a1b2c3d4.tmp", "agent.env", True),
        (".agent.env.A1B2C3D4.tmp", None, False),  # upper case hex is not ours
        (".agent.env.a1b2c3.tmp", None, False),  # too short
        ("agent.env.a1b2c3d4.tmp", None, False),  # not hidden
        (".tmp-3", None, False),
    ],
)
def test_is_temp_name(name: str, of: str | None, expected: bool) -> None:
    """Only ``.<name>.<8 lower-case hex>.tmp`` is a staging file (of ``of``, when given)."""
    assert fileio.is_temp_name(name, of) is expected


def test_atomic_write_stages_under_a_name_remove_temp_files_knows(tmp_path: Path) -> None:
    """A staging file left by a crash is found by name and removed; other files stay."""
    target = tmp_path / "agent.env"
    fileio.atomic_write(target, "A=1\n")
    staged = tmp_path / ".agent.env.0badc0de.tmp"
    staged.write_text("MF_AGENT_MQTT_PASSWORD=secret\n")
    other = tmp_path / ".config.toml.0badc0de.tmp"
    other.write_text("x")
    assert fileio.remove_temp_files(tmp_path, of="agent.env") == [staged]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".config.toml.0badc0de.tmp",
                                                          "agent.env"]
    assert fileio.remove_temp_files(tmp_path) == [other]
    assert fileio.remove_temp_files(tmp_path / "missing") == []
