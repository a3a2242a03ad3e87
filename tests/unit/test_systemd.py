"""sd_notify without a listener and the watchdog interval (pure parts).

The datagrams over a real AF_UNIX socket: tests/integration/test_daemon_systemd.py.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from edge_provision.agent.daemon.systemd import Notifier, watchdog_interval_s


def test_no_socket_is_a_no_op() -> None:
    """Outside systemd nothing is sent and nothing fails."""
    for env in ({}, {"NOTIFY_SOCKET": ""}, {"NOTIFY_SOCKET": "vsock:2:1234"}):
        notifier = Notifier(env=env)
        assert not notifier.enabled
        assert not notifier.ready()
        assert not notifier.status("x")
        assert not notifier.watchdog()
        assert not notifier.stopping()
        assert not notifier.reloading()


def test_send_failure_is_logged_once_never_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A socket path nobody listens on: False, one debug record, no exception."""
    notifier = Notifier(str(tmp_path / "nobody.sock"))
    with caplog.at_level(logging.DEBUG, logger="edge_provision.agent.daemon.systemd"):
        results = [notifier.ready(), notifier.watchdog(), notifier.stopping()]
    assert results == [False, False, False]
    assert len([r for r in caplog.records if "sd_notify failed" in r.getMessage()]) == 1


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "1000"}, 0.0005),
        ({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "4242"}, 10.0),
        ({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "4243"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    """Half of WATCHDOG_USEC in seconds, only when WATCHDOG_PID is unset or ours."""
    assert watchdog_interval_s(env, pid=4242) == expected


def test_watchdog_pid_defaults_to_our_pid() -> None:
    """Without an explicit pid, WATCHDOG_PID is compared with os.getpid()."""
    ours = {"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}
    theirs = {"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert watchdog_interval_s(ours) == 2.0
    assert watchdog_interval_s(theirs) is None
