"""The agent's commands with careless people, damaged files and full disks (issue 9).

Each test runs ``python -m edge_provision`` as a technician does, against a lab server on
127.0.0.1 (in a thread), on a real state directory.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from _cli_util import (
    EXTREME_TIMES,
    TIMEOUT_S,
    cli,
    cli_argv,
    cli_env,
    lab_server,
    save_extreme_state,
)
from _daemon_util import LockHolder, read_line

from edge_provision.lab.server import RunningLabServer


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[RunningLabServer]:
    """A lab server for the CLI children."""
    with lab_server(tmp_path) as server:
        yield server


@pytest.mark.parametrize("command", ["enroll", "renew"])
def test_a_command_by_hand_waits_for_the_lock_and_says_who_holds_it(
        tmp_path: Path, lab: RunningLabServer, command: str) -> None:  # fmt: skip
    """Another run holds the state lock: one line naming it, then the command goes ahead."""
    if command == "renew":
        assert cli(tmp_path, "enroll", url=lab.url).returncode == 0
    with LockHolder(tmp_path / "agent", "edge-provision renew") as holder:
        proc = subprocess.Popen(cli_argv(tmp_path, command, "--json"),
                                env=cli_env(tmp_path, lab.url), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stderr is not None
            line = read_line(proc.stderr)
            assert line.startswith(f"waiting for the state lock, held by pid {holder.pid} "
                                   "(edge-provision renew, since ")
            assert proc.poll() is None  # waiting, not failing
            holder.release()
            out, err = proc.communicate(timeout=TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, err
    assert json.loads(out)["ok"] is True
    assert "waiting" not in err  # said once


def test_a_held_lock_past_lock_wait_is_temporary(tmp_path: Path, lab: RunningLabServer) -> None:
    """EDGE_PROVISION_LOCK_WAIT=0 (as the daemon's children run): exit 75, reason busy."""
    with LockHolder(tmp_path / "agent", "edge-provision enroll") as holder:
        env = dict(cli_env(tmp_path, lab.url), EDGE_PROVISION_LOCK_WAIT="0")
        done = subprocess.run(cli_argv(tmp_path, "enroll", "--json"), env=env,
                              capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert done.returncode == 75, done.stderr
    error = json.loads(done.stdout)["error"]
    assert (error["kind"], error["reason"], error["retryable"]) == ("LockBusy", "busy", True)
    assert f"held by pid {holder.pid} (edge-provision enroll" in error["message"]


@pytest.mark.parametrize("when", EXTREME_TIMES)
def test_status_reads_any_time_in_state_json(tmp_path: Path, when: str) -> None:
    """Year 1 and 9999 in every time field of state.json: status (text, --json, --verbose)."""
    save_extreme_state(tmp_path / "agent", when)
    for args in (("status",), ("status", "--json", "--verbose")):
        done = cli(tmp_path, *args)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
    doc = json.loads(cli(tmp_path, "status", "--json").stdout)
    assert doc["next_action_at"] == when and doc["last_error"]["at"] == when
