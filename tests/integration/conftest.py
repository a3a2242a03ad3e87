"""Shared fixtures: a FakeServer, an HttpClient, a FaultProxy, the lab server, started
processes and an sd_notify socket for the daemon tests; a module's own ones win."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from _daemon_util import Notify, Procs

from edge_provision.http import HttpClient
from edge_provision.testing import FakeServer, FaultProxy

if TYPE_CHECKING:
    from edge_provision.lab.server import RunningLabServer


@pytest.fixture
def server() -> Iterator[FakeServer]:
    """A started FakeServer."""
    with FakeServer() as srv:
        yield srv


@pytest.fixture
def http(server: FakeServer) -> Iterator[HttpClient]:
    """An HttpClient with short timeouts."""
    with HttpClient(server.url, connect_timeout_s=1.0, read_timeout_s=1.0) as c:
        yield c


@pytest.fixture
def fault_proxy(server: FakeServer) -> Iterator[FaultProxy]:
    """A started FaultProxy in front of ``server``."""
    with FaultProxy(server.url) as proxy:
        yield proxy


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[RunningLabServer]:
    """The lab server (built-in layout) on 127.0.0.1:0, its state in ``tmp_path/lab``."""
    from _agent_lab import start_lab

    server = start_lab(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    """Start processes; they are killed after the test."""
    with Procs(tmp_path) as p:
        yield p


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[Notify]:
    """The test's NOTIFY_SOCKET."""
    with Notify(tmp_path / "notify.sock") as n:
        yield n
