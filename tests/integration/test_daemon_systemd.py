"""sd_notify over a real AF_UNIX datagram socket (a bound listener in tmp_path)."""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_provision.agent.daemon.systemd import Notifier


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
