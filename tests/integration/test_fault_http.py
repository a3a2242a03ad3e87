"""HttpClient on a hostile network: the fault proxy (and an HTTPS FakeServer) in front of it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from edge_provision import deadline
from edge_provision.crypto import bootstrap_cipher
from edge_provision.errors import BadReply, ProtocolError, Reason, RetryClass, ServiceUnavailable
from edge_provision.http import AuthScheme, HttpClient
from edge_provision.platform import BootstrapClient, CertsClient, ProvisionClient
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


def test_a_sooner_deadline_is_kept_while_a_later_one_is_pending(
        server: FakeServer, fault_proxy: FaultProxy) -> None:  # fmt: skip
    """One watchdog for every request: a 0.5 s deadline armed while a 60 s one waits still
    cuts its dripping reply (one byte every 0.05 s: ~10 s, no read timeout) at 0.5 s."""
    server.add("GET", LOOKUP, Reply(json=BOOTSTRAP, repeat=2))
    fault_proxy.set(Fault.DRIP, interval_s=0.05)
    outcomes: dict[str, object] = {}

    def dripped(name: str, deadline_s: float) -> None:
        with HttpClient(fault_proxy.url, read_timeout_s=30, request_deadline_s=deadline_s) as h:
            try:
                outcomes[name] = h.request("GET", LOOKUP)
            except ServiceUnavailable as exc:
                outcomes[name] = exc

    slow = threading.Thread(target=dripped, args=("slow", 60.0), daemon=True)
    slow.start()
    for _ in range(200):  # the slow request is in flight (bounded: 10 s)
        if fault_proxy.seen:
            break
        time.sleep(0.05)
    assert len(fault_proxy.seen) == 1
    quick = threading.Thread(target=dripped, args=("quick", 0.5), daemon=True)
    quick.start()
    quick.join(5)
    assert not quick.is_alive() and slow.is_alive()
    error = outcomes["quick"]
    assert isinstance(error, ServiceUnavailable) and error.reason is Reason.DEADLINE
    fault_proxy.stop()  # ends the slow one's drip
    slow.join(10)
    assert not slow.is_alive()


# --------------------------------------------------------------------------- row 2: bad replies

GARBAGE = [Fault.HTML, Fault.TRUNCATED_JSON, Fault.OVERSIZED, Fault.REDIRECT]


@pytest.mark.parametrize("fault", GARBAGE, ids=lambda f: f.value)
def test_garbage_for_the_device_lookup_is_a_transient_bad_reply(
        server: FakeServer, fault_proxy: FaultProxy, fault: Fault) -> None:  # fmt: skip
    """Captive portal, cut JSON, a body over the cap, a redirect elsewhere: back off, retry."""
    fault_proxy.set(fault, size=3 * 1024 * 1024)
    with (HttpClient(fault_proxy.url) as http,
          pytest.raises(BadReply) as info):
        BootstrapClient(http).fetch("02:42:ac:11:00:07", "key")
    assert info.value.retry_class is RetryClass.TRANSIENT and info.value.exit_code == 75
    assert info.value.reason is Reason.BAD_REPLY


@pytest.mark.parametrize("fault", GARBAGE, ids=lambda f: f.value)
def test_garbage_for_the_mapping_is_a_transient_bad_reply(
        server: FakeServer, fault_proxy: FaultProxy, fault: Fault) -> None:  # fmt: skip
    """The same for POST /mapping (nothing reaches the platform)."""
    fault_proxy.set(fault, size=3 * 1024 * 1024)
    with (HttpClient(fault_proxy.url) as http,
          pytest.raises(BadReply)):
        ProvisionClient(http, token="t", auth_scheme=AuthScheme.MODERN).create_mapping("e", "k")
    assert server.requests == []


def test_a_captive_portal_says_what_it_probably_is(fault_proxy: FaultProxy) -> None:
    """The message names the content type and the likely cause; no HTML is dumped."""
    fault_proxy.set(Fault.HTML)
    with HttpClient(fault_proxy.url) as http, pytest.raises(BadReply) as info:
        http.request("GET", LOOKUP).json()
    text = str(info.value)
    assert "text/html" in text and "captive portal" in text and "<html" not in text.lower()


def test_a_redirect_on_the_same_host_is_a_setting_to_fix(server: FakeServer) -> None:
    """http -> same host elsewhere: the configured URL is wrong (needs a person), not the net."""
    server.add("GET", "/health", Reply(301, headers={"Location": f"{server.url}/v1/health"}))
    with HttpClient(server.url) as http, pytest.raises(ProtocolError) as info:
        http.request("GET", "/health")
    assert info.value.retry_class is RetryClass.NEEDS_PERSON
    assert "configure the final URL" in str(info.value)


def test_a_captive_portal_on_the_secure_endpoint_is_not_a_wrong_key(server: FakeServer) -> None:
    """An HTML page is not decrypted into "the encryption key differs"."""
    server.add("GET", "/things/bootstrap/secure/gw-1",
               Reply(200, body=b"<html><body>Sign in</body></html>",
                     headers={"Content-Type": "text/html"}))  # fmt: skip
    key = bootstrap_cipher.parse_encrypt_key(bootstrap_cipher.DEFAULT_ENCRYPT_KEY_HEX)
    with (HttpClient(server.url) as http,
          pytest.raises(BadReply)):
        BootstrapClient(http, encrypt_key=key).fetch("gw-1", "key", secure=True)


def test_a_captive_portal_health_page_does_not_turn_csr_off(server: FakeServer) -> None:
    """GET /health answered by a portal is a bad reply, not "this server signs no CSRs"."""
    server.add("GET", "/health", Reply(200, body=b"<html>portal</html>",
                                       headers={"Content-Type": "text/html"}))  # fmt: skip
    with HttpClient(server.url) as http, pytest.raises(BadReply):
        CertsClient(http).supports_csr()


def test_a_reset_mid_body_is_transient(server: FakeServer, fault_proxy: FaultProxy) -> None:
    """The platform answered, the connection broke: transient (ServiceUnavailable)."""
    server.add("GET", LOOKUP, Reply(json=BOOTSTRAP))
    fault_proxy.set(Fault.RESET_MID_BODY)
    with HttpClient(fault_proxy.url) as http, pytest.raises(ServiceUnavailable) as info:
        http.request("GET", LOOKUP)
    assert info.value.retry_class is RetryClass.TRANSIENT
