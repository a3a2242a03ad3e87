"""The shipped test helpers: FakeServer, ThrowawayCA, free_port, wait_for."""

from __future__ import annotations

import json
import re
import socket
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.client import HTTPConnection, HTTPResponse, IncompleteRead
from pathlib import Path

import pytest

from edge_provision.crypto import pki
from edge_provision.testing import (
    UNMATCHED_STATUS,
    FakeServer,
    Headers,
    Reply,
    ThrowawayCA,
    free_port,
    wait_for,
)


@pytest.fixture
def server() -> Iterator[FakeServer]:
    """A started plain-HTTP FakeServer, stopped after the test."""
    with FakeServer() as srv:
        yield srv


def _request(
    server: FakeServer,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 2.0,
) -> tuple[int, dict[str, str], bytes]:
    conn = HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_scripted_json_reply_and_recorded_request(server: FakeServer) -> None:
    """A JSON reply is served with its content type and the request is recorded in full."""
    server.add("POST", "/mapping", Reply(status=201, json={"things": []}))
    status, headers, body = _request(
        server,
        "POST",
        "/mapping?x=1",
        b'{"a":1}',
        {"Content-Type": "application/json", "X-Test": "yes"},
    )
    assert status == 201
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"things": []}
    (req,) = server.requests
    assert req.method == "POST"
    assert req.path == "/mapping"
    assert req.query == "x=1"
    assert req.target == "/mapping?x=1"
    assert req.body == b'{"a":1}'
    assert req.json() == {"a": 1}
    assert req.headers["content-type"] == "application/json"
    assert req.headers["X-TEST"] == "yes"
    assert req.header_values("x-test") == ["yes"]


def test_replies_consumed_in_order_then_unmatched(server: FakeServer) -> None:
    """Replies for one route are used in order; when exhausted the server answers 599."""
    server.add("GET", "/a", Reply(status=200, body=b"one"))
    server.add("GET", "/a", Reply(status=202, body=b"two", repeat=2))
    results = [_request(server, "GET", "/a")[::2] for _ in range(3)]
    assert results == [(200, b"one"), (202, b"two"), (202, b"two")]
    status, _, body = _request(server, "GET", "/a")
    assert status == UNMATCHED_STATUS
    payload = json.loads(body)
    assert "GET /a" in payload["error"]
    assert payload["routes"] == ["GET /a (0 scripted)"]


def test_repeat_none_serves_forever_and_regex_routes(server: FakeServer) -> None:
    """``repeat=None`` never runs out; regex routes fullmatch the path."""
    server.add("GET", re.compile(r"/things/bootstrap/[^/]+"), Reply(status=404, repeat=None))
    statuses = [_request(server, "GET", f"/things/bootstrap/id{i}")[0] for i in range(5)]
    assert statuses == [404] * 5
    assert _request(server, "GET", "/things/bootstrap/a/b")[0] == UNMATCHED_STATUS
    assert _request(server, "POST", "/things/bootstrap/x")[0] == UNMATCHED_STATUS


def test_headers_are_sent_as_scripted(server: FakeServer) -> None:
    """Custom headers (Retry-After, Content-Type) reach the client unchanged."""
    server.add(
        "GET",
        "/busy",
        Reply(
            status=429,
            body=b"slow down",
            headers={"Retry-After": "7", "Content-Type": "text/plain"},
        ),
    )
    status, headers, body = _request(server, "GET", "/busy")
    assert (status, headers["Retry-After"], headers["Content-Type"], body) == (
        429,
        "7",
        "text/plain",
        b"slow down",
    )


def test_truncated_body_announces_more_than_it_sends(server: FakeServer) -> None:
    """``truncate_to`` sends the full Content-Length but only part of the body."""
    server.add("GET", "/t", Reply(body=b"0123456789", truncate_to=3))
    conn = HTTPConnection("127.0.0.1", server.port, timeout=2)
    try:
        conn.request("GET", "/t")
        resp: HTTPResponse = conn.getresponse()
        assert resp.getheader("Content-Length") == "10"
        with pytest.raises(IncompleteRead) as info:
            resp.read()
        assert info.value.partial == b"012"
    finally:
        conn.close()


def test_close_without_reply_resets_connection(server: FakeServer) -> None:
    """``close_without_reply`` drops the connection before any status line."""
    server.add("GET", "/drop", Reply(close_without_reply=True))
    with pytest.raises((ConnectionError, OSError)):
        _request(server, "GET", "/drop")
    assert len(server.requests_to("GET", "/drop")) == 1


def test_stop_cuts_a_slow_reply_short() -> None:
    """``stop()`` ends a reply still in its scripted delay: the client gets no answer."""
    srv = FakeServer().start()
    srv.add("GET", "/slow", Reply(delay_s=20, json={"late": True}))
    outcome: list[object] = []

    def client() -> None:
        # waits longer than the delay: only a dropped connection ends it without a reply
        try:
            outcome.append(_request(srv, "GET", "/slow", timeout=25)[0])
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    wait_for(lambda: srv.requests, 2.0, what="slow request arrived")
    srv.stop()
    thread.join(30)
    assert not thread.is_alive()
    (result,) = outcome
    # a stop() that waited the delay out would have let the 200 through
    assert isinstance(result, ConnectionError), result
    assert len(srv.requests) == 1


def test_concurrent_requests_each_get_one_reply(server: FakeServer) -> None:
    """Thread-safe: 8 parallel clients consume exactly 8 scripted replies."""
    for i in range(8):
        server.add("GET", "/n", Reply(json={"n": i}))
    got: list[int] = []
    lock = threading.Lock()

    def client() -> None:
        status, _, body = _request(server, "GET", "/n")
        with lock:
            got.append(json.loads(body)["n"] if status == 200 else -1)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert sorted(got) == list(range(8))
    assert len(server.requests) == 8


def test_head_reply_has_no_body(server: FakeServer) -> None:
    """A HEAD answer announces the length but sends no body (the connection stays usable)."""
    server.add("HEAD", "/health", Reply(json={"status": "pass"}))
    server.add("GET", "/health", Reply(json={"status": "pass"}))
    conn = HTTPConnection("127.0.0.1", server.port, timeout=2)
    try:
        conn.request("HEAD", "/health")
        head = conn.getresponse()
        assert head.status == 200 and head.read() == b""
        assert head.getheader("Content-Length") == str(len(b'{"status": "pass"}'))
        conn.request("GET", "/health")
        assert json.loads(conn.getresponse().read()) == {"status": "pass"}
    finally:
        conn.close()


def test_headers_mapping_is_case_insensitive() -> None:
    """Headers looks names up case-insensitively and keeps the original spelling."""
    headers = Headers([("Content-Type", "a"), ("X-One", "1")])
    assert headers["content-type"] == "a"
    assert "X-ONE" in headers
    assert "x-two" not in headers
    assert list(headers) == ["Content-Type", "X-One"]
    assert len(headers) == 2


def test_add_rejects_nonpositive_repeat(server: FakeServer) -> None:
    """A repeat of 0 is a scripting mistake and fails at once."""
    with pytest.raises(ValueError, match="repeat"):
        server.add("GET", "/x", Reply(repeat=0))


def test_clear_forgets_routes_and_requests(server: FakeServer) -> None:
    """``clear()`` empties the request log and the script."""
    server.add("GET", "/x", Reply())
    _request(server, "GET", "/y")
    server.clear()
    assert server.requests == []
    assert server.describe_routes() == []


def test_throwaway_ca_issues_client_and_server_certs(tmp_path: Path) -> None:
    """The CA issues client certs that chain to it and server cert files with 0600 keys."""
    ca = ThrowawayCA(tmp_path)
    assert ca.ca_path.read_text() == ca.cert_pem
    cert_pem, key_pem = ca.issue_client("thing-1", 600)
    info = pki.parse_certificate(cert_pem)
    assert info.common_name == "thing-1"
    assert pki.cert_matches_key(cert_pem, key_pem)
    pki.verify_chain(cert_pem, ca.cert_pem)
    cert_path, key_path = ca.issue_server(["127.0.0.1", "localhost"])
    assert cert_path.is_file() and key_path.is_file()
    assert key_path.stat().st_mode & 0o777 == 0o600
    pki.verify_chain(cert_path.read_text(), ca.cert_pem)


def test_https_fake_server_with_throwaway_ca(tmp_path: Path) -> None:
    """An HTTPS FakeServer is trusted through the CA and refused without it."""
    ca = ThrowawayCA(tmp_path)
    cert_path, key_path = ca.issue_server()
    with FakeServer(certfile=cert_path, keyfile=key_path) as srv:
        srv.add("GET", "/health", Reply(json={"status": "pass"}, repeat=None))
        assert srv.url.startswith("https://127.0.0.1:")
        trusted = ssl.create_default_context(cafile=str(ca.ca_path))
        with urllib.request.urlopen(srv.url + "/health", context=trusted, timeout=2) as resp:
            assert json.loads(resp.read()) == {"status": "pass"}
        untrusted = ssl.create_default_context()
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(srv.url + "/health", context=untrusted, timeout=2)
        wait_for(lambda: srv.tls_errors, 2.0, what="tls error recorded")


def test_free_port_is_bindable() -> None:
    """free_port returns a loopback port that can be bound right away."""
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))


def test_wait_for_returns_value_and_times_out() -> None:
    """wait_for returns the first truthy value; it gives up after a bounded number of polls."""
    calls: list[int] = []

    def third_time() -> int:
        calls.append(1)
        return len(calls) if len(calls) >= 3 else 0

    assert wait_for(third_time, 2.0, interval_s=0.001) == 3
    polls: list[int] = []

    def never() -> bool:
        polls.append(1)
        return False

    with pytest.raises(TimeoutError, match="never"):
        wait_for(never, 0.1, interval_s=0.01, what="never")
    assert 1 <= len(polls) <= int(0.1 / 0.01) + 2  # the documented bound on calls
