"""Settings errors through the real CLI: out-of-bounds values stop the agent at start, clearly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _run(tmp_path: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``python -m edge_provision ARGS`` with only the given EDGE_PROVISION_* variables."""
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("EDGE_PROVISION_", "MF_"))}
    full_env.update({"EDGE_PROVISION_STATE_DIR": str(tmp_path / "state"),
                     "EDGE_PROVISION_PROVISION_URL": "http://127.0.0.1:9", **env})
    return subprocess.run(
        [sys.executable, "-m", "edge_provision", *args],
        capture_output=True, text=True, timeout=60, env=full_env, check=False,
    )


@pytest.mark.parametrize(
    ("command", "variable", "value", "message"),
    [
        ("run", "EDGE_PROVISION_PERMANENT_RETRY", "100000000h",
         "error: env EDGE_PROVISION_PERMANENT_RETRY: must be at most 7d, got 100000000h"),
        ("run", "EDGE_PROVISION_BACKOFF_CAP", "2d",
         "error: env EDGE_PROVISION_BACKOFF_CAP: must be at most 1d, got 2d"),
        ("status", "EDGE_PROVISION_FILE_MODE", "0999",
         'error: env EDGE_PROVISION_FILE_MODE: expected an octal file mode like "0640", '
         'got "0999"'),
    ],
)
def test_bad_setting_exits_2_with_the_bound_and_no_traceback(
    tmp_path: Path, command: str, variable: str, value: str, message: str
) -> None:
    """The daemon (and status) refuse a bad value at start: exit 2, one line naming it."""
    out = _run(tmp_path, command, env={variable: value})
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    assert message in out.stderr.splitlines()
