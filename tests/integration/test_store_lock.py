"""The state lock really excludes a second process (flock on state_dir/.lock)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from edge_provision.agent.store import Store

CHILD = """
import sys
from pathlib import Path
from edge_provision.errors import StoreError
from edge_provision.agent.store import Store
store = Store(Path(sys.argv[1]))
try:
    with store.lock(blocking=sys.argv[2] == "block"):
        print("acquired", flush=True)
except StoreError as exc:
    print("StoreError:", exc, flush=True)
    sys.exit(3)
"""


def run_child(state_dir: Path, mode: str) -> subprocess.Popen[str]:
    """Start a child process that tries to take the lock."""
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(state_dir), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_second_process_cannot_take_a_held_lock(tmp_path: Path) -> None:
    """lock(blocking=False) in another process raises StoreError while we hold the lock."""
    store = Store(tmp_path / "state")
    with store.lock():
        child = run_child(store.state_dir, "try")
        out, err = child.communicate(timeout=30)
    assert child.returncode == 3, err
    assert out.startswith("StoreError:")
    assert "holds the state lock" in out
    child = run_child(store.state_dir, "try")
    out, err = child.communicate(timeout=30)
    assert (child.returncode, out.strip()) == (0, "acquired"), err


def test_blocking_lock_waits_for_release(tmp_path: Path) -> None:
    """lock(blocking=True) in another process waits until we release the lock."""
    store = Store(tmp_path / "state")
    with store.lock():
        child = run_child(store.state_dir, "block")
        time.sleep(0.5)  # long enough for the child to start and block on flock
        assert child.poll() is None
    out, err = child.communicate(timeout=30)
    assert (child.returncode, out.strip()) == (0, "acquired"), err
