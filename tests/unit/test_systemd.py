"""sd_notify over a real AF_UNIX datagram socket; watchdog and journal detection."""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_provision.agent.daemon.systemd import (
    Notifier,
    journal_logging_wanted,
    watchdog_interval_s,
)


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound AF_UNIX datagram socket in tmp_path and its NOTIFY_SOCKET value."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    yield sock, str(path)
    sock.close()


def test_ready_status_watchdog_stopping_datagrams(listener: tuple[socket.socket, str]) -> None:
    """Each call sends exactly one datagram with the documented payload."""
    sock, path = listener
    notifier = Notifier(path)
    assert notifier.enabled
    assert notifier.ready()
    assert notifier.status("enrolling: step map")
    assert notifier.watchdog()
    assert notifier.stopping()
    assert notifier.ready(status="provisioned gen=3")
    received = [sock.recv(4096) for _ in range(5)]
    assert received == [
        b"READY=1",
        b"STATUS=enrolling: step map",
        b"WATCHDOG=1",
        b"STOPPING=1",
        b"READY=1\nSTATUS=provisioned gen=3",
    ]


def test_reloading_carries_monotonic_usec(listener: tuple[socket.socket, str]) -> None:
    """RELOADING=1 comes with MONOTONIC_USEC from CLOCK_MONOTONIC."""
    sock, path = listener
    before = int(time.monotonic() * 1_000_000)
    assert Notifier(path).reloading()
    lines = sock.recv(4096).decode().split("\n")
    assert lines[0] == "RELOADING=1"
    key, value = lines[1].split("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= before + 60_000_000


def test_notify_fields_and_newlines(listener: tuple[socket.socket, str]) -> None:
    """notify(**fields) keeps the order; a newline in a value cannot inject a field."""
    sock, path = listener
    assert Notifier(path).notify(STATUS="line1\nREADY=1", ERRNO=5)
    assert sock.recv(4096) == b"STATUS=line1 READY=1\nERRNO=5"
    with pytest.raises(ValueError, match="upper case"):
        Notifier(path).notify(status="lower")


def test_abstract_namespace_socket() -> None:
    """A NOTIFY_SOCKET starting with @ names an abstract socket."""
    name = f"edge-provision-test-{secrets.token_hex(6)}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(5)
    try:
        notifier = Notifier(env={"NOTIFY_SOCKET": f"@{name}"})
        assert notifier.enabled and notifier.socket_path == f"@{name}"
        assert notifier.watchdog()
        assert sock.recv(4096) == b"WATCHDOG=1"
    finally:
        sock.close()


def test_socket_from_environment(listener: tuple[socket.socket, str]) -> None:
    """Without an explicit path the NOTIFY_SOCKET variable is used."""
    sock, path = listener
    assert Notifier(env={"NOTIFY_SOCKET": path}).status("hello")
    assert sock.recv(4096) == b"STATUS=hello"


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


def test_journal_logging_wanted(tmp_path: Path) -> None:
    """JOURNAL_STREAM set means journald; with a descriptor it must name that very file."""
    assert not journal_logging_wanted({})
    assert journal_logging_wanted({"JOURNAL_STREAM": "8:12345"})
    with open(tmp_path / "stderr.log", "w") as fh:
        st = os.fstat(fh.fileno())
        matching = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert journal_logging_wanted(matching, stderr_fd=fh.fileno())
        assert not journal_logging_wanted({"JOURNAL_STREAM": "1:2"}, stderr_fd=fh.fileno())
