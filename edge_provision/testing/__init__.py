"""Test helpers shipped with the package: a scripted loopback HTTP(S) server and a throwaway CA.

Nothing here is used at run time. Our own tests use it, and so can anyone who
builds on edge-provision and wants to test against the same misbehaving peers:

* :class:`FakeServer` -- a real ``ThreadingHTTPServer`` on ``127.0.0.1:<free port>``
  that records every request and answers from scripted :class:`Reply` objects
  (status, JSON or raw body, headers, delay, truncated body, dropped connection).
  Unmatched requests get status 599 and a JSON body listing the routes, so a
  test that forgot to script a reply fails loudly.
* :class:`ThrowawayCA` -- a :class:`edge_provision.crypto.pki.LocalCA` in a temporary
  directory that issues client and server certificates (for HTTPS/mTLS tests).
* :class:`FaultProxy` -- a proxy in front of any HTTP server that drips, stalls, answers
  a captive portal's page, cuts or bloats replies, redirects (:mod:`.faults`).
* :func:`free_port` and :func:`wait_for` -- small, bounded helpers.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import ssl
import struct
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Union

from edge_provision.net import free_port
from edge_provision.testing._support import (
    Served,
    Serving,
    ThrowawayCA,
    TrackingServer,
    wait_for,
)
from edge_provision.testing.faults import Fault, FaultProxy

__all__ = [
    "UNMATCHED_STATUS",
    "FakeServer",
    "Fault",
    "FaultProxy",
    "Headers",
    "RecordedRequest",
    "Reply",
    "ThrowawayCA",
    "free_port",
    "wait_for",
]

UNMATCHED_STATUS = 599
"""Status a :class:`FakeServer` answers when no scripted reply matches."""

_MAX_DELAY_S = 30.0
_STOP_JOIN_S = 0.8
_HANDLER_SOCKET_TIMEOUT_S = 10.0
_MAX_REQUEST_BODY = 16 * 1024 * 1024

PathPattern = Union[str, "re.Pattern[str]"]


class Headers(Mapping[str, str]):
    """Read-only header mapping with case-insensitive lookup (original spelling kept).

    A header sent several times keeps its last value here; :attr:`RecordedRequest.raw_headers`
    has every line.
    """

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: dict[str, tuple[str, str]] = {}
        for name, value in items:
            self._items[name.lower()] = (name, value)

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()][1]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return (original for original, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the :class:`FakeServer` received it."""

    method: str
    path: str
    """The path without the query string (percent-escapes kept as sent)."""
    headers: Headers
    body: bytes
    query: str = ""
    raw_headers: tuple[tuple[str, str], ...] = ()

    @property
    def target(self) -> str:
        """The request target as sent: path plus ``?query`` if there was one."""
        return f"{self.path}?{self.query}" if self.query else self.path

    def json(self) -> object:
        """The body parsed as JSON (raises ``ValueError`` if it is not JSON)."""
        return json.loads(self.body.decode("utf-8"))

    def header_values(self, name: str) -> list[str]:
        """Every value sent for header ``name`` (case-insensitive), in order."""
        wanted = name.lower()
        return [value for key, value in self.raw_headers if key.lower() == wanted]


@dataclass(frozen=True)
class Reply:
    """A scripted answer.

    ``json`` (any JSON value but ``None``) wins over ``body`` and sets
    ``Content-Type: application/json`` unless ``headers`` names another.
    ``delay_s`` waits before answering (cut short when the server stops).
    ``truncate_to=n`` announces the full ``Content-Length`` but sends only the
    first ``n`` body bytes, then closes. ``close_without_reply`` resets the
    connection without sending anything. ``repeat`` is how many requests this
    reply answers (``None``: all of them, forever).
    """

    status: int = 200
    json: object = None
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    truncate_to: int | None = None
    close_without_reply: bool = False
    repeat: int | None = 1

    def payload(self) -> bytes:
        """The body bytes this reply sends (before any truncation)."""
        if self.json is not None:
            return json.dumps(self.json).encode("utf-8")
        return self.body


@dataclass
class _Route:
    method: str
    pattern: PathPattern
    queue: list[list[object]]  # [Reply, remaining count or None]

    def matches(self, method: str, path: str, target: str) -> bool:
        if method != self.method:
            return False
        if isinstance(self.pattern, str):
            return self.pattern == (target if "?" in self.pattern else path)
        return self.pattern.fullmatch(path) is not None

    def describe(self) -> str:
        pattern = self.pattern if isinstance(self.pattern, str) else f"re:{self.pattern.pattern}"
        return f"{self.method} {pattern} ({len(self.queue)} scripted)"


class _Server(TrackingServer, ThreadingHTTPServer):
    """The HTTP(S) server with connection tracking (so :meth:`FakeServer.stop` is bounded)."""

    def __init__(self, owner: FakeServer, ssl_context: ssl.SSLContext | None) -> None:
        self.owner = owner
        self.ssl_context = ssl_context
        super().__init__(_Handler, "fake-server-conn")

    def finish_request(  # type: ignore[override]
        self, request: socket.socket, client_address: tuple[str, int]
    ) -> None:
        if self.ssl_context is None:
            self.serve_connection(request, client_address)
            return
        try:
            request.settimeout(_HANDLER_SOCKET_TIMEOUT_S)
            conn = self.ssl_context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            self.owner._record_tls_error(exc)
            return
        try:
            self.serve_connection(conn, client_address)
        finally:
            with contextlib.suppress(OSError):
                conn.close()


class _Handler(BaseHTTPRequestHandler):
    """Record the request, then play the scripted reply."""

    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # no 40 ms delayed-ACK wait per keep-alive reply
    timeout = _HANDLER_SOCKET_TIMEOUT_S

    def log_message(self, format: str, *args: object) -> None:
        """Silence the default stderr access log."""

    def _handle(self) -> None:
        owner = self.server.owner
        path, _, query = self.path.partition("?")
        length_text = self.headers.get("Content-Length")
        body = b""
        if length_text:
            try:
                length = int(length_text)
            except ValueError:
                length = 0
            body = self.rfile.read(min(max(length, 0), _MAX_REQUEST_BODY))
        raw = tuple((k, v) for k, v in self.headers.items())
        recorded = RecordedRequest(
            method=self.command,
            path=path,
            headers=Headers(list(raw)),
            body=body,
            query=query,
            raw_headers=raw,
        )
        reply = owner._record_and_pick(recorded)
        if reply is None:
            self._send(
                UNMATCHED_STATUS,
                json.dumps(
                    {
                        "error": f"no scripted reply for {self.command} {self.path}",
                        "routes": owner.describe_routes(),
                    }
                ).encode("utf-8"),
                {"Content-Type": "application/json"},
            )
            return
        if reply.delay_s > 0 and owner._stopping.wait(min(reply.delay_s, _MAX_DELAY_S)):
            self.close_connection = True
            return
        if reply.close_without_reply:
            self._reset()
            return
        headers = dict(reply.headers)
        if reply.json is not None and not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "application/json"
        payload = reply.payload()
        if reply.truncate_to is not None:
            self._send(reply.status, payload, headers, send_bytes=reply.truncate_to)
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_WR)
            return
        self._send(reply.status, payload, headers)

    def _send(
        self,
        status: int,
        payload: bytes,
        headers: Mapping[str, str],
        send_bytes: int | None = None,
    ) -> None:
        self.send_response_only(status)
        names = {k.lower() for k in headers}
        for name, value in headers.items():
            self.send_header(name, value)
        if "content-length" not in names:
            self.send_header("Content-Length", str(len(payload)))
        if "date" not in names:
            self.send_header("Date", self.date_time_string())
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload if send_bytes is None else payload[:send_bytes])

    def _reset(self) -> None:
        """Drop the connection with a TCP RST (a peer that crashed mid-request)."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            self.connection.close()

    def do_GET(self) -> None:
        """Serve a GET."""
        self._handle()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET


class FakeServer(Served):
    """A scripted HTTP(S) server on ``127.0.0.1`` for tests (a context manager).

    >>> with FakeServer() as server:
    ...     server.add("GET", "/health", Reply(json={"status": "pass"}))
    ...     # requests.get(server.url + "/health").json() == {"status": "pass"}

    Routes match on method plus either an exact path (a string; include ``?`` to
    match the query too) or a compiled regular expression (``fullmatch`` on the
    path). Replies added for the same route are used in order. Requests that
    match nothing get :data:`UNMATCHED_STATUS`. All methods are thread-safe.

    For HTTPS pass ``certfile`` and ``keyfile`` (see :class:`ThrowawayCA`); add
    ``client_ca`` to require a client certificate signed by that CA (mTLS).
    Handshake failures are kept in :attr:`tls_errors`. :meth:`stop` returns within about
    one second.
    """

    stop_within_s = _STOP_JOIN_S

    def __init__(
        self,
        *,
        certfile: Path | None = None,
        keyfile: Path | None = None,
        client_ca: Path | None = None,
    ) -> None:
        context: ssl.SSLContext | None = None
        if certfile is not None or keyfile is not None:
            if certfile is None or keyfile is None:
                raise ValueError("HTTPS needs both certfile and keyfile")
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(certfile), str(keyfile))
            if client_ca is not None:
                context.load_verify_locations(cafile=str(client_ca))
                context.verify_mode = ssl.CERT_REQUIRED
        self._lock = threading.Lock()
        self._routes: list[_Route] = []
        self._requests: list[RecordedRequest] = []
        self._tls_errors: list[str] = []
        self._stopping = threading.Event()
        self._server = _Server(self, context)
        self.scheme = "https" if context is not None else "http"
        self.port: int = self._server.server_address[1]
        self._serving = Serving(self._server, f"fake-server-{self.port}", self._stopping,
                                self._abort)  # fmt: skip

    # ------------------------------------------------------------------ lifecycle

    def _abort(self, deadline: float) -> None:
        self._server.server_close()
        self._server.abort(deadline)

    # ------------------------------------------------------------------ scripting

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234`` (no trailing slash)."""
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def add(self, method: str, path_or_regex: PathPattern, reply: Reply | None = None) -> None:
        """Script ``reply`` (default: an empty 200) for ``method`` and the path pattern."""
        if reply is None:
            reply = Reply()
        if reply.repeat is not None and reply.repeat < 1:
            raise ValueError("Reply.repeat must be >= 1 or None (forever)")
        method = method.upper()
        with self._lock:
            for route in self._routes:
                if route.method == method and route.pattern == path_or_regex:
                    route.queue.append([reply, reply.repeat])
                    return
            self._routes.append(_Route(method, path_or_regex, [[reply, reply.repeat]]))

    def describe_routes(self) -> list[str]:
        """One line per route with how many scripted replies it still holds."""
        with self._lock:
            return [route.describe() for route in self._routes]

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of every request received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def tls_errors(self) -> list[str]:
        """Messages of TLS handshakes that failed (e.g. the client refused our cert)."""
        with self._lock:
            return list(self._tls_errors)

    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        """The recorded requests with this method and exact path."""
        return [r for r in self.requests if r.method == method.upper() and r.path == path]

    def clear(self) -> None:
        """Forget recorded requests and every scripted reply."""
        with self._lock:
            self._requests.clear()
            self._routes.clear()

    # ------------------------------------------------------------------ internals

    def _record_tls_error(self, exc: BaseException) -> None:
        with self._lock:
            self._tls_errors.append(str(exc))

    def _record_and_pick(self, request: RecordedRequest) -> Reply | None:
        with self._lock:
            self._requests.append(request)
            for route in self._routes:
                if not route.queue or not route.matches(
                    request.method, request.path, request.target
                ):
                    continue
                entry = route.queue[0]
                reply = entry[0]
                assert isinstance(reply, Reply)
                remaining = entry[1]
                if isinstance(remaining, int):
                    if remaining <= 1:
                        route.queue.pop(0)
                    else:
                        entry[1] = remaining - 1
                return reply
        return None
