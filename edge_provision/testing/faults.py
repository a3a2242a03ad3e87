"""A fault-injecting HTTP proxy: a hostile network between the agent and a real server.

:class:`FaultProxy` listens on ``127.0.0.1:<free port>`` and forwards HTTP/1.1 requests
to one upstream server (the lab server in our tests), unless a :class:`Rule` says how to
misbehave for the request at hand:

===================  ==========================================================================
:class:`Fault`       what the client gets
===================  ==========================================================================
``PASS``             the upstream answer, as is
``DRIP``             the upstream answer, one byte every ``interval_s`` (headers included)
``STALL``            nothing: the request is read and never answered
``HTML``             ``200 text/html``: a captive portal's login page (upstream not asked)
``TRUNCATED_JSON``   ``200 application/json`` whose body is JSON cut in the middle (a complete
                     HTTP reply; upstream not asked)
``RESET_MID_BODY``   the upstream answer's headers and half its body, then a TCP reset
``OVERSIZED``        ``200 application/json``, ``size`` bytes without an end, read to close
``CONFLICT_201``     ``201`` with ``{"things": null, "channels": null, "error": "...409
                     Conflict"}``, as Mainflux 0.13 answers ``POST /mapping`` for an
                     external_id that has a bootstrap config; the request goes upstream first
                     when ``forward`` (the mapping is made, its answer lost)
``REDIRECT``         ``302`` to ``location`` (another host)
===================  ==========================================================================

Rules are tried in the order they were added; the first one that matches the method and
path prefix and still applies (``times`` requests, or ``until`` a ``time.monotonic()``)
decides; otherwise the request passes. :meth:`FaultProxy.set` replaces every rule with
one. A request in absolute form (``GET http://host/path``: the proxy used as
``HTTP_PROXY``) is served the same way and recorded with ``proxied=True``.

Thread-safe; :attr:`FaultProxy.connections` counts accepted connections,
:attr:`FaultProxy.seen` lists the requests with the fault each got; :meth:`FaultProxy.stop`
ends every connection (dripping and stalled ones too) within about a second.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import select
import socket
import struct
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

from edge_provision.testing._support import Served, Serving, TrackingServer

__all__ = ["CAPTIVE_PORTAL_HTML", "CONFLICT_ERROR", "Fault", "FaultProxy", "Rule", "Seen"]

CAPTIVE_PORTAL_HTML = (
    b"<!DOCTYPE html><html><head><title>Guest WiFi - Sign in</title></head><body>"
    b"<h1>Welcome</h1><p>Accept the terms of use to reach the internet.</p>"
    b'<form method="post" action="/login"><button>Accept</button></form></body></html>'
)
"""The page ``Fault.HTML`` answers."""

CONFLICT_ERROR = "failed to create bootstrap config : failed to create entity : 409 Conflict"
"""The error chain ``Fault.CONFLICT_201`` answers (Mainflux 0.13, wire contract section 1.6)."""

_UPSTREAM_TIMEOUT_S = 30.0
_OVERSIZED_BYTES = 4 * 1024 * 1024
_REDIRECT_TO = "http://captive-portal.invalid/login"
_POLL_S = 0.05
_MAX_REQUEST_BODY = 16 * 1024 * 1024
_HOP_HEADERS = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding",
                          "content-length", "host", "te", "trailer", "upgrade"})  # fmt: skip
_TRUNCATED_JSON = b'{"mainflux_id":"5b0ba1a9-4fa6-4a3b-9f1a-2d5e0c4c2f11","mainflux_key":"'


class Fault(str, Enum):
    """How the proxy treats a request (see the module table)."""

    PASS = "pass"  # noqa: S105 (not a password)
    DRIP = "drip"
    STALL = "stall"
    HTML = "html"
    TRUNCATED_JSON = "truncated-json"
    RESET_MID_BODY = "reset-mid-body"
    OVERSIZED = "oversized"
    CONFLICT_201 = "conflict-201"
    REDIRECT = "redirect"


_FORWARDED = frozenset({Fault.PASS, Fault.DRIP, Fault.RESET_MID_BODY})


@dataclass
class Rule:
    """When and how to misbehave; ``times`` counts down as the rule is used."""

    fault: Fault
    method: str | None = None  # None: any method
    path: str = ""  # path prefix ("" matches every path)
    times: int | None = None  # requests left (None: no limit)
    until: float | None = None  # time.monotonic() after which the rule no longer applies
    interval_s: float = 1.0  # DRIP: seconds between two bytes
    size: int = _OVERSIZED_BYTES  # OVERSIZED: body bytes
    location: str = _REDIRECT_TO  # REDIRECT target
    forward: bool = True  # CONFLICT_201: send the request upstream first

    def applies(self, method: str, path: str, now: float) -> bool:
        """Whether this rule decides for ``method path`` at ``now`` (monotonic)."""
        if self.times is not None and self.times <= 0:
            return False
        if self.until is not None and now >= self.until:
            return False
        return (self.method is None or self.method == method) and path.startswith(self.path)


@dataclass(frozen=True)
class Seen:
    """One request the proxy received and the fault it got."""

    method: str
    path: str
    fault: Fault
    proxied: bool = False  # sent in absolute form, i.e. through HTTP_PROXY


@dataclass(frozen=True)
class _Answer:
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def head(self, *, length: int | None, close: bool = False) -> bytes:
        lines = [f"HTTP/1.1 {self.status} {self.reason}"]
        lines += [f"{name}: {value}" for name, value in self.headers
                  if name.lower() not in _HOP_HEADERS]  # fmt: skip
        if length is not None:
            lines.append(f"Content-Length: {length}")
        if close:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def wire(self) -> bytes:
        return self.head(length=len(self.body)) + self.body


def _made(status: int, reason: str, content_type: str, body: bytes,
          *extra: tuple[str, str]) -> _Answer:  # fmt: skip
    return _Answer(status, reason, (("Content-Type", content_type), *extra), body)


class _Server(TrackingServer):
    def __init__(self, owner: FaultProxy) -> None:
        self.owner = owner
        super().__init__(_Handler, "fault-proxy-conn")


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        """No access log on stderr."""

    def do_GET(self) -> None:
        """Every method is handled alike."""
        owner = self.server.owner
        target, proxied = self.path, False
        if "://" in target.split("?", 1)[0]:  # absolute form: we are someone's HTTP_PROXY
            parts = urlsplit(target)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            proxied = True
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(min(max(length, 0), _MAX_REQUEST_BODY)) if length else b""
        path = target.split("?", 1)[0]
        rule = owner._pick(self.command, path, proxied) or Rule(Fault.PASS)
        upstream: _Answer | None = None
        if rule.fault in _FORWARDED or (rule.fault is Fault.CONFLICT_201 and rule.forward):
            upstream = owner._forward(self.command, target, self.headers.items(), body)
        self._answer(rule, upstream)

    def _answer(self, rule: Rule, upstream: _Answer | None) -> None:
        fault = rule.fault
        if upstream is not None and fault is Fault.PASS:
            self._write(upstream.wire())
        elif upstream is not None and fault is Fault.DRIP:
            self._drip(upstream.wire(), rule.interval_s)
        elif upstream is not None and fault is Fault.RESET_MID_BODY:
            cut = upstream.body[: len(upstream.body) // 2]
            self._write(upstream.head(length=len(upstream.body)) + cut)
            self._reset()
        elif fault is Fault.STALL:
            self._stall()
        elif fault is Fault.HTML:
            self._write(_made(200, "OK", "text/html; charset=utf-8", CAPTIVE_PORTAL_HTML).wire())
        elif fault is Fault.TRUNCATED_JSON:
            self._write(_made(200, "OK", "application/json", _TRUNCATED_JSON).wire())
        elif fault is Fault.OVERSIZED:
            self._oversized(rule.size)
        elif fault is Fault.CONFLICT_201:
            error = {"things": None, "channels": None, "error": CONFLICT_ERROR}
            self._write(_made(201, "Created", "application/json",
                              json.dumps(error).encode()).wire())  # fmt: skip
        else:  # Fault.REDIRECT
            self._write(_made(302, "Found", "text/html", b"<a href>moved</a>",
                              ("Location", rule.location)).wire())  # fmt: skip

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    def _write(self, data: bytes) -> None:
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    def _drip(self, data: bytes, interval_s: float) -> None:
        stopping = self.server.owner._stopping
        for i in range(len(data)):
            if i and stopping.wait(interval_s):
                break
            try:
                self.connection.sendall(data[i:i + 1])
            except OSError:
                break
        self.close_connection = True

    def _stall(self) -> None:
        """Hold the connection until the client gives up or the proxy stops."""
        stopping = self.server.owner._stopping
        self.close_connection = True
        while not stopping.is_set():
            try:
                readable, _, _ = select.select([self.connection], [], [], _POLL_S)
                if readable and not self.connection.recv(4096):
                    return  # the client closed
            except OSError:
                return

    def _oversized(self, size: int) -> None:
        self.close_connection = True
        head = _made(200, "OK", "application/json", b"").head(length=None, close=True)
        chunk = b"[" + b'"padding",' * 6553
        sent = 0
        try:
            self.connection.sendall(head)
            while sent < size and not self.server.owner._stopping.is_set():
                piece = chunk[: size - sent]
                self.connection.sendall(piece)
                sent += len(piece)
        except OSError:
            return

    def _reset(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()


class FaultProxy(Served):
    """A fault-injecting proxy in front of ``upstream`` (a context manager); see the module.

    :meth:`stop` ends every connection, dripping and stalled ones included.
    """

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be an http:// URL, not {upstream!r}")
        self.upstream = upstream.rstrip("/")
        self._host = parts.hostname
        self._port = parts.port or 80
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self._seen: list[Seen] = []
        self._stopping = threading.Event()
        self._server = _Server(self)
        self.port: int = self._server.server_address[1]
        self._serving = Serving(self._server, f"fault-proxy-{self.port}", self._stopping,
                                self._abort)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    def _abort(self, deadline: float) -> None:
        self._server.server_close()
        self._server.abort(deadline)

    # ------------------------------------------------------------------ rules

    def add(self, fault: Fault, *, method: str | None = None, path: str = "",
            times: int | None = None, for_s: float | None = None, interval_s: float = 1.0,
            size: int = _OVERSIZED_BYTES, location: str = _REDIRECT_TO,
            forward: bool = True) -> Rule:  # fmt: skip
        """Add a rule after the others (``for_s``: it applies for that many seconds from now).

        See :class:`Rule` for the fields; ``method`` is matched case-insensitively.
        """
        if times is not None and times < 1:
            raise ValueError("times must be at least 1 (or None: no limit)")
        until = time.monotonic() + for_s if for_s is not None else None
        rule = Rule(fault, method.upper() if method else None, path, times, until, interval_s,
                    size, location, forward)  # fmt: skip
        with self._lock:
            self._rules.append(rule)
        return rule

    def set(self, fault: Fault, **rule: Any) -> Rule:
        """Replace every rule with this one (``set(Fault.PASS)``: behave); as :meth:`add`."""
        with self._lock:
            self._rules.clear()
        return self.add(fault, **rule)

    def clear(self) -> None:
        """Drop every rule: pass everything from now on."""
        with self._lock:
            self._rules.clear()

    # ------------------------------------------------------------------ what happened

    @property
    def connections(self) -> int:
        """How many TCP connections were accepted so far."""
        with self._server.lock:
            return self._server.accepted

    @property
    def seen(self) -> list[Seen]:
        """A copy of every request received so far, with its fault, in arrival order."""
        with self._lock:
            return list(self._seen)

    def faults(self) -> list[Fault]:
        """The fault each request got, in arrival order."""
        return [s.fault for s in self.seen]

    # ------------------------------------------------------------------ internals

    def _pick(self, method: str, path: str, proxied: bool) -> Rule | None:
        now = time.monotonic()
        with self._lock:
            rule = next((r for r in self._rules if r.applies(method, path, now)), None)
            if rule is not None and rule.times is not None:
                rule.times -= 1
            self._seen.append(Seen(method, path, rule.fault if rule else Fault.PASS, proxied))
        return rule

    def _forward(self, method: str, target: str, headers: Iterable[tuple[str, str]],
                 body: bytes) -> _Answer:  # fmt: skip
        """The upstream's answer (``502`` with a JSON error when it cannot be reached)."""
        pairs = [(k, v) for k, v in headers if k.lower() not in _HOP_HEADERS]
        conn = http.client.HTTPConnection(self._host, self._port, timeout=_UPSTREAM_TIMEOUT_S)
        try:
            conn.putrequest(method, target, skip_accept_encoding=True)
            for name, value in pairs:
                conn.putheader(name, value)
            if body or method in ("POST", "PUT", "PATCH"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            response = conn.getresponse()
            return _Answer(response.status, response.reason, tuple(response.getheaders()),
                           response.read())  # fmt: skip
        except (OSError, http.client.HTTPException) as exc:
            error = json.dumps({"error": f"fault proxy: upstream unreachable ({exc})"})
            return _made(502, "Bad Gateway", "application/json", error.encode())
        finally:
            conn.close()
