"""The fault proxy itself, with raw sockets and http.client in front of a real FakeServer."""

from __future__ import annotations

import http.client
import json
import socket
import threading

import pytest
import requests

from edge_provision.testing import FakeServer, Fault, FaultProxy, Reply, free_port, wait_for
from edge_provision.testing.faults import CAPTIVE_PORTAL_HTML, CONFLICT_ERROR

BOOTSTRAP = {"mainflux_id": "t-1", "mainflux_key": "k-1", "content": "{}"}


def _conn(fault_proxy: FaultProxy, timeout: float = 5.0) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", fault_proxy.port, timeout=timeout)


def _raw(fault_proxy: FaultProxy, request: bytes, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", fault_proxy.port), timeout=timeout)
    sock.sendall(request)
    return sock


def _ended(sock: socket.socket) -> bool:
    """Whether the peer closed or reset the connection (within 2 s)."""
    sock.settimeout(2.0)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_pass_forwards_everything_and_counts_connections(server: FakeServer,
                                                         fault_proxy: FaultProxy) -> None:
    """Method, path, query, body and headers go upstream; two requests, one connection."""
    server.add("POST", "/mapping", Reply(201, json={"things": []}, headers={"X-Up": "1"}))
    server.add("GET", "/health", Reply(json={"status": "pass"}))
    conn = _conn(fault_proxy)
    conn.request("POST", "/mapping?x=1", body=b'{"a":1}',
                 headers={"Content-Type": "application/json", "Authorization": "Bearer t"})
    first = conn.getresponse()
    assert (first.status, json.loads(first.read()), first.getheader("X-Up")) == (
        201, {"things": []}, "1")
    conn.request("GET", "/health")
    assert json.loads(conn.getresponse().read()) == {"status": "pass"}
    conn.close()
    (mapping, health) = server.requests
    assert (mapping.path, mapping.query, mapping.body) == ("/mapping", "x=1", b'{"a":1}')
    assert mapping.headers["Authorization"] == "Bearer t" and health.path == "/health"
    assert fault_proxy.connections == 1
    assert fault_proxy.faults() == [Fault.PASS, Fault.PASS]


def test_drip_sends_the_real_answer_one_byte_at_a_time(server: FakeServer,
                                                       fault_proxy: FaultProxy) -> None:
    """The first read gets one byte; the bytes add up to the upstream's complete answer."""
    server.add("GET", "/things/bootstrap/x", Reply(json=BOOTSTRAP, repeat=2))
    fault_proxy.set(Fault.DRIP, interval_s=0.3, times=1)
    sock = _raw(fault_proxy, b"GET /things/bootstrap/x HTTP/1.1\r\nHost: x\r\n\r\n")
    assert sock.recv(4096) == b"H"  # the next byte comes 0.3 s later
    sock.close()
    fault_proxy.set(Fault.DRIP, interval_s=0.001)
    conn = _conn(fault_proxy)
    conn.request("GET", "/things/bootstrap/x")
    reply = conn.getresponse()
    assert reply.status == 200 and json.loads(reply.read()) == BOOTSTRAP
    conn.close()


def test_stall_reads_the_request_and_never_answers(server: FakeServer,
                                                   fault_proxy: FaultProxy) -> None:
    """Nothing comes back, upstream is not asked; stop() ends the held connection."""
    fault_proxy.set(Fault.STALL)
    sock = _raw(fault_proxy, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", timeout=0.3)
    with pytest.raises(socket.timeout):
        sock.recv(1)
    assert server.requests == [] and fault_proxy.faults() == [Fault.STALL]
    fault_proxy.stop()
    assert _ended(sock)
    sock.close()
    assert not [t for t in threading.enumerate() if t.name == "fault-proxy-conn"]


def test_html_is_a_captive_portal_page(server: FakeServer, fault_proxy: FaultProxy) -> None:
    """200 text/html with a login page; the request never reaches upstream."""
    fault_proxy.set(Fault.HTML)
    reply = requests.get(f"{fault_proxy.url}/things/bootstrap/x", timeout=5)
    assert reply.status_code == 200 and reply.headers["Content-Type"].startswith("text/html")
    assert reply.content == CAPTIVE_PORTAL_HTML and server.requests == []


def test_truncated_json_is_a_complete_reply_with_broken_json(server: FakeServer,
                                                            fault_proxy: FaultProxy) -> None:
    """The HTTP framing is right (Content-Length matches), the JSON inside is cut."""
    fault_proxy.set(Fault.TRUNCATED_JSON)
    reply = requests.get(f"{fault_proxy.url}/things/bootstrap/x", timeout=5)
    assert reply.status_code == 200 and reply.headers["Content-Type"] == "application/json"
    assert int(reply.headers["Content-Length"]) == len(reply.content) > 0
    with pytest.raises(ValueError):
        json.loads(reply.content)


def test_reset_mid_body_cuts_the_real_answer(server: FakeServer, fault_proxy: FaultProxy) -> None:
    """Upstream answered; the client gets the headers and half the body, then a reset."""
    server.add("GET", "/things/bootstrap/x", Reply(json=BOOTSTRAP))
    fault_proxy.set(Fault.RESET_MID_BODY)
    conn = _conn(fault_proxy)
    conn.request("GET", "/things/bootstrap/x")
    reply = conn.getresponse()
    assert reply.status == 200
    with pytest.raises((http.client.IncompleteRead, ConnectionResetError)):
        reply.read()
    conn.close()
    assert len(server.requests) == 1


def test_oversized_streams_size_bytes_until_close(server: FakeServer,
                                                  fault_proxy: FaultProxy) -> None:
    """No Content-Length: the body is read to the close, and it is ``size`` bytes long."""
    fault_proxy.set(Fault.OVERSIZED, size=200_000)
    reply = requests.get(f"{fault_proxy.url}/things/bootstrap/x", timeout=5)
    assert "Content-Length" not in reply.headers and len(reply.content) == 200_000


@pytest.mark.parametrize("forward", [True, False])
def test_conflict_201_answers_mainflux_409_text(server: FakeServer, fault_proxy: FaultProxy,
                                                forward: bool) -> None:
    """201 with the 409 error chain; with ``forward`` the mapping reached upstream first."""
    server.add("POST", "/mapping", Reply(201, json={"things": [{"id": "t"}]}))
    fault_proxy.set(Fault.CONFLICT_201, method="post", path="/mapping", forward=forward)
    reply = requests.post(f"{fault_proxy.url}/mapping", json={"external_id": "e"}, timeout=5)
    assert reply.status_code == 201
    assert reply.json() == {"things": None, "channels": None, "error": CONFLICT_ERROR}
    assert len(server.requests_to("POST", "/mapping")) == (1 if forward else 0)


def test_redirect_points_at_another_host(server: FakeServer, fault_proxy: FaultProxy) -> None:
    """302 with a Location on another host."""
    fault_proxy.set(Fault.REDIRECT, location="http://portal.invalid/login")
    reply = requests.get(f"{fault_proxy.url}/mapping", timeout=5, allow_redirects=False)
    assert (reply.status_code, reply.headers["Location"]) == (302, "http://portal.invalid/login")


def test_rules_match_method_and_path_and_run_out(server: FakeServer,
                                                 fault_proxy: FaultProxy) -> None:
    """First matching rule wins; ``times`` counts down; other paths pass."""
    server.add("GET", "/health", Reply(json={"status": "pass"}, repeat=None))
    fault_proxy.add(Fault.HTML, method="GET", path="/health", times=2)
    fault_proxy.add(Fault.REDIRECT, path="/health")  # shadowed while the first applies
    codes = [requests.get(f"{fault_proxy.url}/health", timeout=5, allow_redirects=False).status_code
             for _ in range(3)]
    assert codes == [200, 200, 302]
    assert fault_proxy.faults() == [Fault.HTML, Fault.HTML, Fault.REDIRECT]
    fault_proxy.clear()
    assert requests.get(f"{fault_proxy.url}/health", timeout=5).json() == {"status": "pass"}


def test_a_rule_for_some_seconds_expires_by_itself(server: FakeServer,
                                                   fault_proxy: FaultProxy) -> None:
    """``for_s``: garbage now, the real answer once the time is up, without touching the proxy."""
    server.add("GET", "/health", Reply(json={"status": "pass"}, repeat=None))
    fault_proxy.set(Fault.HTML, for_s=0.5)
    assert requests.get(f"{fault_proxy.url}/health", timeout=5).content == CAPTIVE_PORTAL_HTML
    wait_for(lambda: requests.get(f"{fault_proxy.url}/health", timeout=5).status_code == 200
             and fault_proxy.faults()[-1] is Fault.PASS, timeout_s=5, interval_s=0.1,
             what="the HTML rule to expire")  # fmt: skip


def test_works_as_an_http_proxy(server: FakeServer, fault_proxy: FaultProxy) -> None:
    """A request in absolute form (HTTP_PROXY) is served and recorded as proxied."""
    server.add("GET", "/health", Reply(json={"status": "pass"}))
    reply = requests.get("http://platform.invalid/health", timeout=5,
                         proxies={"http": fault_proxy.url})  # fmt: skip
    assert reply.json() == {"status": "pass"}
    assert [(s.path, s.proxied) for s in fault_proxy.seen] == [("/health", True)]


def test_upstream_down_is_a_502(fault_proxy: FaultProxy) -> None:
    """Nothing listening upstream: the client gets 502 with a JSON error."""
    with FaultProxy(f"http://127.0.0.1:{free_port()}") as lonely:
        reply = requests.get(f"{lonely.url}/health", timeout=5)
    assert reply.status_code == 502 and "upstream unreachable" in reply.json()["error"]


def test_stop_ends_dripping_connections(server: FakeServer, fault_proxy: FaultProxy) -> None:
    """A drip at one byte a minute does not keep stop() waiting."""
    server.add("GET", "/health", Reply(json={"status": "pass"}))
    fault_proxy.set(Fault.DRIP, interval_s=60)
    sock = _raw(fault_proxy, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert sock.recv(1) == b"H"
    fault_proxy.stop()
    assert not [t for t in threading.enumerate() if t.name == "fault-proxy-conn"]
    assert _ended(sock)
    sock.close()


def test_upstream_must_be_plain_http() -> None:
    """An https:// or malformed upstream is refused at once."""
    with pytest.raises(ValueError, match="http://"):
        FaultProxy("https://127.0.0.1:1")
