"""The lab server's answers on the wire (raw sockets on 127.0.0.1): each in one TCP segment.

The client side of the connection counts the data segments it received (Linux
``TCP_INFO``, ``tcpi_data_segs_in``): an answer whose head and body were written
separately arrives as two. ``HEAD``, ``Expect: 100-continue`` and pipelined requests
keep working with the head held back until the body is written.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import time
from pathlib import Path

import pytest
from _lab_util import operator_auth

from edge_provision.lab.server import RunningLabServer

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="counts segments with Linux TCP_INFO")  # fmt: skip

TIMEOUT = 10
_DATA_SEGS_IN = 152  # offset of tcpi_data_segs_in in struct tcp_info (Linux >= 4.6)


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=TIMEOUT)


def _data_segments_in(sock: socket.socket) -> int:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return int(struct.unpack_from("I", info, _DATA_SEGS_IN)[0])


class _Answers:
    """Reads answers off one connection (what a recv brings beyond one answer is kept)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _more(self, deadline: float, what: str) -> None:
        assert time.monotonic() < deadline, f"no complete answer {what}"
        chunk = self.sock.recv(65536)
        assert chunk, f"closed after {self.buffer!r}"
        self.buffer += chunk

    def next(self, *, head_only: bool = False) -> tuple[bytes, bytes]:
        """One answer: (head, body), the body as long as its Content-Length says."""
        deadline = time.monotonic() + TIMEOUT
        while b"\r\n\r\n" not in self.buffer:
            self._more(deadline, "head")
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        if head_only:
            return head, b""
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(self.buffer) < length:
            self._more(deadline, "body")
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return head, body


def _request(method: str, path: str, body: bytes = b"", **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1",
             *(f"{k.replace('_', '-')}: {v}" for k, v in headers.items())]  # fmt: skip
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def test_every_answer_arrives_in_one_segment(lab: RunningLabServer, tmp_path: Path) -> None:
    """A success, a created mapping, a refusal and a 404 each arrive head and body together,
    one after the other on one keep-alive connection."""
    token = operator_auth(tmp_path)["Authorization"]
    mapping = json.dumps({"external_id": "02:42:ac:11:09:01", "external_key": "k"}).encode()
    asks = [
        (_request("GET", "/health"), b"200"),
        (_request("POST", "/mapping", mapping, Authorization=token,
                  Content_Type="application/json"), b"201"),
        (_request("POST", "/mapping", b"{}", Authorization=token,
                  Content_Type="application/json"), b"400"),
        (_request("GET", "/no/such/endpoint"), b"404"),
    ]
    with _connect(lab.url) as sock:
        answers = _Answers(sock)
        for request, status in asks:
            before = _data_segments_in(sock)
            sock.sendall(request)
            head, body = answers.next()
            assert head.split(b" ")[1] == status and body
            assert _data_segments_in(sock) - before == 1, head


def test_a_head_answer_is_sent_and_the_connection_stays_usable(lab: RunningLabServer) -> None:
    """HEAD: the head alone (no body write to join it), then a GET on the same connection."""
    with _connect(lab.url) as sock:
        answers = _Answers(sock)
        sock.sendall(_request("HEAD", "/health"))
        head, _ = answers.next(head_only=True)
        assert head.startswith(b"HTTP/1.1 200") and b"content-length: " in head.lower()
        sock.sendall(_request("GET", "/health"))
        head, body = answers.next()
        assert head.startswith(b"HTTP/1.1 200") and json.loads(body)["status"] == "pass"


def test_100_continue_comes_before_the_body_is_sent(lab: RunningLabServer,
                                                    tmp_path: Path) -> None:  # fmt: skip
    """A client that waits for ``100 Continue`` gets it at once, then the answer."""
    token = operator_auth(tmp_path)["Authorization"]
    body = json.dumps({"external_id": "02:42:ac:11:09:02", "external_key": "k"}).encode()
    head = _request("POST", "/mapping", Authorization=token, Content_Type="application/json",
                    Expect="100-continue").replace(b"Content-Length: 0",
                                                   f"Content-Length: {len(body)}".encode())
    with _connect(lab.url) as sock:
        answers = _Answers(sock)
        sock.sendall(head)
        interim, _ = answers.next(head_only=True)
        assert interim == b"HTTP/1.1 100 Continue" and answers.buffer == b""
        sock.sendall(body)
        answer, created = answers.next()
        assert answer.startswith(b"HTTP/1.1 201") and json.loads(created)["things"]


def test_pipelined_requests_are_answered_in_order(lab: RunningLabServer) -> None:
    """Three requests in one packet: three whole answers, in order."""
    with _connect(lab.url) as sock:
        answers = _Answers(sock)
        sock.sendall(_request("GET", "/health") + _request("GET", "/nope")
                     + _request("GET", "/health"))  # fmt: skip
        statuses = [answers.next()[0].split(b" ")[1] for _ in range(3)]
    assert statuses == [b"200", b"404", b"200"]
