"""HttpClient on a hostile network: the fault proxy (and an HTTPS FakeServer) in front of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_provision import deadline
from edge_provision.errors import Reason, RetryClass, ServiceUnavailable
from edge_provision.http import HttpClient
from edge_provision.testing import FakeServer, Fault, FaultProxy, Reply, ThrowawayCA

BOOTSTRAP = {"mainflux_id": "t-1", "mainflux_key": "k-1", "content": "{}",
             "mainflux_channels": [{"id": "c-1", "name": "control"}]}  # fmt: skip
LOOKUP = "/things/bootstrap/02:42:ac:11:00:07"


def test_a_dripping_server_hits_the_request_deadline(server: FakeServer,
                                                     fault_proxy: FaultProxy) -> None:
    """One byte every 0.05 s never trips the read timeout; the whole-request deadline does."""
    server.add("GET", LOOKUP, Reply(json=BOOTSTRAP))
    fault_proxy.set(Fault.DRIP, interval_s=0.05)
    with (HttpClient(fault_proxy.url, read_timeout_s=5, request_deadline_s=1) as http,
          pytest.raises(ServiceUnavailable) as info):
        http.request("GET", LOOKUP)
    assert info.value.reason is Reason.DEADLINE
    assert info.value.retry_class is RetryClass.TRANSIENT
    assert "1 s request deadline" in str(info.value)
    assert "server.request_deadline_s" in str(info.value)


def test_a_stalled_server_hits_the_request_deadline_before_the_read_timeout(
        fault_proxy: FaultProxy) -> None:  # fmt: skip
    """Accepted and never answered: the deadline (1 s) ends it, not the read timeout (30 s)."""
    fault_proxy.set(Fault.STALL)
    with (HttpClient(fault_proxy.url, read_timeout_s=30, request_deadline_s=1) as http,
          pytest.raises(ServiceUnavailable) as info):
        http.request("GET", LOOKUP)
    assert info.value.reason is Reason.DEADLINE


def test_the_run_deadline_cuts_a_request_short(fault_proxy: FaultProxy) -> None:
    """Inside ``deadline.limit`` the sooner of the two deadlines wins, and is named."""
    fault_proxy.set(Fault.STALL)
    with (HttpClient(fault_proxy.url, read_timeout_s=30, request_deadline_s=30) as http,
          deadline.limit(0.5, "enroll run", "agent.run_deadline"),
          pytest.raises(ServiceUnavailable) as info):
        http.request("GET", LOOKUP)
    assert info.value.reason is Reason.DEADLINE
    assert "enroll run deadline" in str(info.value) and "agent.run_deadline" in str(info.value)


def test_nothing_is_sent_once_the_run_deadline_has_passed(fault_proxy: FaultProxy) -> None:
    """A run out of time does not start another request."""
    with (HttpClient(fault_proxy.url) as http,
          deadline.limit(0.0, "renew run", "agent.run_deadline"),
          pytest.raises(ServiceUnavailable) as info):
        http.request("GET", LOOKUP)
    assert info.value.reason is Reason.DEADLINE and fault_proxy.seen == []


def test_a_connection_cut_by_the_deadline_is_not_reused(server: FakeServer,
                                                        fault_proxy: FaultProxy) -> None:
    """After a request was aborted, the same client gets the next answer normally."""
    server.add("GET", LOOKUP, Reply(json=BOOTSTRAP, repeat=2))
    fault_proxy.add(Fault.STALL, times=1)
    with HttpClient(fault_proxy.url, request_deadline_s=0.5) as http:
        with pytest.raises(ServiceUnavailable):
            http.request("GET", LOOKUP)
        assert http.request("GET", LOOKUP).json() == BOOTSTRAP


def test_https_stall_hits_the_request_deadline(tmp_path: Path) -> None:
    """The abort works on a TLS connection too (the server waits 20 s before answering)."""
    ca = ThrowawayCA(tmp_path)
    cert, key = ca.issue_server()
    with FakeServer(certfile=cert, keyfile=key) as srv:
        srv.add("GET", LOOKUP, Reply(json=BOOTSTRAP, delay_s=20))
        with (HttpClient(srv.url, ca_bundle=ca.ca_path, read_timeout_s=30,
                         request_deadline_s=1) as http,
              pytest.raises(ServiceUnavailable) as info):
            http.request("GET", LOOKUP)
    assert info.value.reason is Reason.DEADLINE
