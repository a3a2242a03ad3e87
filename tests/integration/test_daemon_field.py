"""`edge-provision run` in the field (issue 9): what it says to the journal, and how it reacts
to a person running commands beside it, to damage and to its own bugs.

Real daemon processes, real children, real sd_notify datagrams on an AF_UNIX socket bound in
tmp_path; every wait is bounded and every process is ended in a ``finally``.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from _cli_util import EXTREME_TIMES, lab_server, save_extreme_state, secrets_of, token
from _daemon_util import LockHolder, Notify, Procs, cli, daemon_env, stop_daemon

from edge_provision.agent.store import Phase
from edge_provision.lab.server import RunningLabServer
from edge_provision.testing import free_port


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[RunningLabServer]:
    """A lab server (in a thread) for the daemon's children."""
    with lab_server(tmp_path) as server:
        yield server


def _start(procs: Procs, notify: Notify, tmp_path: Path, url: str, token_: str,
           **extra: str) -> subprocess.Popen[bytes]:
    """`edge-provision --state-dir <tmp>/state run` against ``url``, stderr in daemon.log."""
    env = daemon_env(notify, url, token_, EDGE_PROVISION_MQTT_VERIFY="never", **extra)
    return procs.start(cli("--state-dir", str(tmp_path / "state"), "run"), env, "daemon.log")


def _journal_env(log: Path) -> dict[str, str]:
    """JOURNAL_STREAM naming ``log`` (device:inode), as systemd sets it for the journal."""
    log.touch()
    st = log.stat()
    return {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}


def test_run_logs_every_child_outcome_to_the_journal(procs: Procs, notify: Notify,
                                                     tmp_path: Path) -> None:
    """Under systemd, default log level: each failed child is one line with its class and
    the next attempt, with a syslog priority and no timestamp."""
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    log = tmp_path / "daemon.log"
    env = daemon_env(notify, url, "a-token-for-nobody", EDGE_PROVISION_MQTT_VERIFY="never",
                     **_journal_env(log))
    daemon = procs.start(cli("--state-dir", str(tmp_path / "state"), "run"), env, "daemon.log")
    notify.status("retry 2 in")
    assert stop_daemon(daemon, notify, 5)[0] == 0
    lines = log.read_text().splitlines()
    outcome = re.compile(
        r"^<4>edge_provision\.agent\.daemon\.supervisor: child exited command=enroll code=75 "
        r"outcome=transient kind=ServiceUnavailable next=enroll next_in_s=\d+\.\d "
        r"next_at=\S+ attempt=\d error=ServiceUnavailable: .*127\.0\.0\.1")
    assert len([line for line in lines if outcome.match(line)]) >= 2, lines
    assert any(line.startswith("<6>edge_provision.agent.daemon.supervisor: child started "
                               "command=enroll") for line in lines), lines
    assert not [line for line in lines if line[:1].isdigit()]  # the journal has the time
    assert "a-token-for-nobody" not in log.read_text()


def test_a_person_holding_the_lock_is_waited_out_not_an_error(
        procs: Procs, notify: Notify, tmp_path: Path, lab: RunningLabServer) -> None:  # fmt: skip
    """A person's enroll holds the state lock as the daemon's child starts: the daemon says so
    and retries soon (never failed-permanent); once the lock is free it enrolls."""
    with LockHolder(tmp_path / "state", "edge-provision enroll") as holder:
        daemon = _start(procs, notify, tmp_path, lab.url, token(tmp_path))
        busy = notify.status("waits for another edge-provision run")
        assert busy.startswith("STATUS=enroll waits for another edge-provision run (state lock), "
                               "retry 1 in ")
        assert f"held by pid {holder.pid} (edge-provision enroll" in busy
        holder.release()
        notify.status("provisioned: generation 1")
    assert not [m for m in notify.messages if "failed" in m]
    assert stop_daemon(daemon, notify, 5)[0] == 0
    log = (tmp_path / "daemon.log").read_text()
    assert "code=75 outcome=busy kind=LockBusy next=enroll" in log


@pytest.mark.parametrize("when", EXTREME_TIMES)
def test_the_daemon_starts_with_any_time_in_state_json(procs: Procs, notify: Notify,
                                                       tmp_path: Path, when: str) -> None:
    """Year 1 / 9999 in state.json (failed-permanent, a renewal "due" then): READY, a STATUS,
    no traceback, a clean stop."""
    save_extreme_state(tmp_path / "state", when, Phase.FAILED_PERMANENT)
    url = f"http://127.0.0.1:{free_port()}"  # the children may fail: nothing listens
    daemon = _start(procs, notify, tmp_path, url, "a-token")
    assert notify.expect(lambda m: m.startswith("READY=1\nSTATUS="))
    notify.status("retry 1 in")  # the enroll child ran and failed as it should, and was seen
    assert stop_daemon(daemon, notify, 5)[0] == 0
    assert "Traceback" not in (tmp_path / "daemon.log").read_text()


def test_a_damaged_generation_is_enrolled_again_at_once(
        procs: Procs, notify: Notify, tmp_path: Path, lab: RunningLabServer) -> None:  # fmt: skip
    """The only generation garbled while the daemon was down: it does not sleep until the
    next renewal but enrolls again at start, getting the same thing back."""
    url, token_ = lab.url, token(tmp_path)
    daemon = _start(procs, notify, tmp_path, url, token_)
    notify.status("provisioned: generation 1, next renewal")
    assert stop_daemon(daemon, notify, 5)[0] == 0
    (tmp_path / "state" / "generations" / "1" / "things.json").write_text("[]")
    daemon = _start(procs, notify, tmp_path, url, token_)
    notify.expect(lambda m: m.startswith("READY=1\nSTATUS=enrolling"))
    notify.status("provisioned: generation 2, next renewal")
    assert stop_daemon(daemon, notify, 5)[0] == 0
    assert "current generation damaged number=1; enroll runs next" in (
        tmp_path / "daemon.log").read_text()
    assert len(secrets_of(tmp_path, lab)) == 3  # external key, token, ONE thing key
