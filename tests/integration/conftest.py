"""Platform client test fixtures (a FakeServer and an HttpClient); a module's own ones win."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from edge_provision.http import HttpClient
from edge_provision.testing import FakeServer


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
