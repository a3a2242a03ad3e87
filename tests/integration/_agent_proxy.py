"""A recording HTTP proxy for agent tests that can hold one request on a gate.

It sits between the agent and a real lab server, records what it forwards, and can
block a chosen request (by method, path prefix and occurrence) before forwarding it
or after the upstream answered, until the test releases it. Tests use it to kill the
agent (or the server) at an exact point of the enrollment; product code has no hooks.
"""

from __future__ import annotations

import contextlib
import http.client
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_HOLD_S = 60.0
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


@dataclass
class Gate:
    """Holds the ``occurrence``-th ``method path*`` request ``when`` ("before"/"after")."""

    method: str
    path_prefix: str
    occurrence: int
    when: str
    hit: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    seen: int = 0


@dataclass(frozen=True)
class Forwarded:
    """A request the proxy passed upstream (with the upstream status, 502 if none)."""

    method: str
    path: str
    body: bytes
    headers: dict[str, str]
    status: int


class GatedProxy:
    """``http://127.0.0.1:<port>`` forwarding to ``upstream``; see the module docstring."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.forwarded: list[Forwarded] = []
        self.gates: list[Gate] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                """Quiet."""

            def do_GET(self) -> None:
                """Forward any method."""
                proxy._handle(self)

            do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def gate(self, method: str, path_prefix: str, occurrence: int = 1,
             when: str = "before") -> Gate:
        """Add a gate; it fires once."""
        gate = Gate(method.upper(), path_prefix, occurrence, when)
        with self._lock:
            self.gates.append(gate)
        return gate

    def requests_to(self, method: str, path_prefix: str) -> list[Forwarded]:
        """Forwarded requests with ``method`` whose path starts with ``path_prefix``."""
        with self._lock:
            return [f for f in self.forwarded
                    if f.method == method.upper() and f.path.startswith(path_prefix)]

    def all_bodies(self) -> bytes:
        """Every forwarded request body, concatenated."""
        with self._lock:
            return b"\n".join(f.body for f in self.forwarded)

    def stop(self) -> None:
        """Release every gate and stop serving."""
        with self._lock:
            for gate in self.gates:
                gate.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _pick(self, method: str, path: str) -> Gate | None:
        with self._lock:
            for gate in self.gates:
                if gate.method == method and path.startswith(gate.path_prefix):
                    gate.seen += 1
                    if gate.seen == gate.occurrence:
                        return gate
        return None

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        method, path = handler.command, handler.path
        gate = self._pick(method, path.split("?")[0])
        if gate is not None and gate.when == "before":
            gate.hit.set()
            gate.release.wait(_HOLD_S)
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP_HEADERS}
        status, reply_headers, reply = 502, [("Content-Type", "application/json")], (
            b'{"error":"proxy: upstream unreachable"}')
        try:
            conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=30)
            conn.request(method, path, body=body or None, headers=headers)
            response = conn.getresponse()
            status, reply_headers, reply = response.status, response.getheaders(), response.read()
            conn.close()
        except OSError:
            pass
        with self._lock:
            self.forwarded.append(Forwarded(method, path.split("?")[0], body, headers, status))
        if gate is not None and gate.when == "after":
            gate.hit.set()
            gate.release.wait(_HOLD_S)
        with contextlib.suppress(OSError):
            handler.send_response_only(status)
            for name, value in reply_headers:
                if name.lower() not in _HOP_HEADERS:
                    handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(reply)))
            handler.end_headers()
            handler.wfile.write(reply)
            handler.wfile.flush()
