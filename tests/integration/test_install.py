"""install.sh into a temporary root: files, modes, idempotence, config kept, uninstall."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _install(*args: str) -> subprocess.CompletedProcess[str]:
    """Run install.sh with ARGS and capture its output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_PROVISION_")}
    return subprocess.run(["bash", str(REPO / "install.sh"), *args], capture_output=True,
                          text=True, timeout=600, env=env, check=False)


@pytest.mark.slow
def test_install_is_idempotent_keeps_config_and_uninstalls(tmp_path: Path) -> None:
    """Install twice into a root, keep an edited config, then uninstall the program only."""
    root = tmp_path / "root"
    first = _install("--root", str(root), "--prefix", "/opt/ep")
    assert first.returncode == 0, first.stdout + first.stderr
    venv = root / "opt" / "ep"
    version = subprocess.run([str(venv / "bin" / "python"), "-m", "edge_provision", "--version"],
                             capture_output=True, text=True, timeout=60, check=True)
    assert "edge-provision" in version.stdout
    config = root / "etc" / "edge-provision" / "config.toml"
    assert config.read_text(encoding="utf-8") == (REPO / "configs" / "config.toml").read_text(
        encoding="utf-8")
    unit = root / "etc" / "systemd" / "system" / "edge-provision.service"
    text = unit.read_text(encoding="utf-8")
    assert "ExecStart=/opt/ep/bin/edge-provision run" in text
    assert "Type=notify" in text
    assert (unit.stat().st_mode & 0o777) == 0o644
    assert (root / "etc/systemd/system/multi-user.target.wants/edge-provision.service").is_symlink()

    config.write_text('[server]\nurl = "http://127.0.0.1:8190"\n', encoding="utf-8")
    second = _install("--root", str(root), "--prefix", "/opt/ep")
    assert second.returncode == 0, second.stderr
    assert "keeping existing" in second.stdout
    assert config.read_text(encoding="utf-8").startswith("[server]\nurl")
    assert (config.parent / "config.toml.dist").exists()

    removed = _install("--uninstall", "--root", str(root), "--prefix", "/opt/ep")
    assert removed.returncode == 0, removed.stderr
    assert not venv.exists()
    assert not unit.exists()
    assert config.exists()


def test_bad_options_and_help(tmp_path: Path) -> None:
    """A relative prefix or an unknown option is a clear error; --help shows the usage."""
    bad = _install("--prefix", "relative/dir")
    assert bad.returncode == 2
    assert "absolute path" in bad.stderr
    unknown = _install("--frobnicate")
    assert unknown.returncode == 2
    assert "unknown option '--frobnicate'" in unknown.stderr
    helped = _install("--help")
    assert helped.returncode == 0
    assert "--uninstall" in helped.stdout
