"""The lab server's listening socket and uvicorn, which runs the ASGI app on it.

:func:`open_listener` binds the socket and loads the configuration (so every
start-up error is a :class:`ConfigError` before anything runs);
:meth:`Listener.run` serves until :meth:`Listener.stop` (from another thread) or
SIGINT/SIGTERM (in the main thread, where it exits cleanly, not by the signal).

Each answer goes out in one write, head and body together (:class:`_HeadWithBody`;
uvicorn writes them separately). Slow and idle clients cannot take the server
(:class:`_GuardedProtocol`, the httptools protocol of uvicorn with deadlines and a cap):

- a request's headers must be complete ``header_timeout_s`` after its first
  byte (after the connection opened, for the first request): else ``408`` and
  the connection is closed (closed silently if nothing was sent);
- its body ``body_timeout_s`` after the headers: else the connection is closed
  (the handler sees the client go away);
- at most ``max_connections`` connections are open: one more closes the
  connection idle longest (no request in flight: keep-alive, a new one that sent
  nothing, a slowloris); if every one has a request in flight, the newcomer gets
  ``503`` with ``Retry-After: 1``. The process's open-file limit is raised
  (within the hard limit) to fit the cap, or the cap lowered to fit the limit.

Between requests uvicorn's keep-alive timeout (5 s) closes idle connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import resource
import signal
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from edge_provision.errors import ConfigError
from edge_provision.lab.http.messages import ASGIApp

__all__ = ["FD_RESERVE", "Limits", "Listener", "open_listener"]

logger = logging.getLogger("edge_provision.lab.http")

FD_RESERVE = 256
"""Open files kept free of connections: the database (per worker thread), CA, broker, logs."""


@dataclass(frozen=True)
class Limits:
    """Deadlines and the connection cap of a listener (see the module docstring)."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_connections: int = 4096


@dataclass
class _Guard:
    """State shared by the connections of one listener: limits and who is idle, oldest first."""

    limits: Limits
    idle: dict[_GuardedProtocol, None] = field(default_factory=dict)

    def evict_idle(self, newcomer: _GuardedProtocol) -> bool:
        """Close the connection idle longest (not ``newcomer``); False if none is idle."""
        for conn in self.idle:
            if conn is not newcomer:
                del self.idle[conn]
                logger.debug("connection cap reached max_connections=%d; closing the "
                             "connection idle longest client=%s", self.limits.max_connections,
                             conn.client)  # fmt: skip
                conn.transport.close()
                return True
        return False


def _raw_answer(status: int, phrase: str, message: str, *headers: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    head = [f"HTTP/1.1 {status} {phrase}", "content-type: application/json",
            f"content-length: {len(body)}", "connection: close", *headers]  # fmt: skip
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


class _HeadWithBody:
    """The transport as one request's response cycle sees it: the response head is held
    and written together with the first body bytes, one send and one TCP segment instead
    of two (the client reads the whole answer at once).

    The head is the first write once the response has started (a ``100 Continue`` before
    it goes out at once); what is held goes out with the next write, at ``close`` or when
    the response is complete (a ``HEAD`` answer has no body write).
    """

    __slots__ = ("_cycle", "_held", "_holding", "_on_response", "_transport")

    def __init__(self, transport: asyncio.Transport, cycle: Any) -> None:
        self._transport = transport
        self._cycle = cycle
        self._held: bytes | None = None
        self._holding = True  # until the head was held
        self._on_response: Callable[[], None] = cycle.on_response
        cycle.on_response = self._finished
        cycle.transport = self

    def write(self, data: bytes) -> None:
        if self._held is not None:
            data, self._held = self._held + data, None
        elif self._holding and self._cycle.response_started:
            self._holding = False
            self._held = data
            return
        self._transport.write(data)

    def flush(self) -> None:
        if self._held is not None:
            data, self._held = self._held, None
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def _finished(self) -> None:
        self.flush()
        self._on_response()


class _GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header/body deadlines and the connection cap."""

    guard: _Guard  # set on the per-listener subclass (see :func:`_protocol_class`)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._reading_head = False  # first byte of a request seen, headers not complete
        self._reading_body = False  # headers complete, body not complete
        self._refused = False

    # ------------------------------------------------------------- connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        guard = self.guard
        if len(self.connections) > guard.limits.max_connections and not guard.evict_idle(self):
            self._refuse()
            return
        guard.idle[self] = None
        self._arm(guard.limits.header_timeout_s, self._headers_late)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.guard.idle.pop(self, None)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            self.transport.close()
            return
        super().data_received(data)
        if self._deadline is None and not self.transport.is_closing():
            if self._reading_head:
                self._arm(self.guard.limits.header_timeout_s, self._headers_late)
            elif self._reading_body:
                self._arm(self.guard.limits.body_timeout_s, self._body_late)

    # ---------------------------------------------------------- parser events

    def on_message_begin(self) -> None:
        self._reading_head = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._disarm()
        self.guard.idle.pop(self, None)
        self._reading_head = False
        self._reading_body = True
        before = self.cycle
        super().on_headers_complete()
        if self.cycle is not before and self.cycle is not None:  # a new request's cycle
            _HeadWithBody(self.transport, self.cycle)

    def on_message_complete(self) -> None:
        self._disarm()
        self._reading_body = False
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if (not self.transport.is_closing() and not self._reading_body and not self.pipeline
                and (self.cycle is None or self.cycle.response_complete)):  # fmt: skip
            self.guard.idle[self] = None  # idle again, and the youngest

    # -------------------------------------------------------------- deadlines

    def _arm(self, delay_s: float, callback: Callable[[], None]) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(delay_s, callback)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_late(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if not self._reading_head:  # nothing sent since the connection opened
            self.transport.close()
            return
        limit = self.guard.limits.header_timeout_s
        logger.debug("request headers not complete within %ss; answering 408 client=%s",
                     limit, self.client)  # fmt: skip
        self.transport.write(_raw_answer(
            408, "Request Timeout", f"request headers not complete within {limit:g} s; "
            "send the whole request head at once"))  # fmt: skip
        self.transport.close()

    def _body_late(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            logger.debug("request body not complete within %ss; closing client=%s",
                         self.guard.limits.body_timeout_s, self.client)  # fmt: skip
            self.transport.close()

    def _refuse(self) -> None:
        """Every connection has a request in flight: 503, closed at the next byte or in 1 s."""
        self._refused = True
        cap = self.guard.limits.max_connections
        logger.warning("connection cap reached max_connections=%d, none idle; answering 503 "
                       "client=%s", cap, self.client)  # fmt: skip
        self.transport.write(_raw_answer(
            503, "Service Unavailable", f"the server has {cap} connections with requests in "
            "flight; retry in a second", "retry-after: 1"))  # fmt: skip
        self.loop.call_later(1.0, self.transport.close)


def _protocol_class(limits: Limits) -> type[_GuardedProtocol]:
    """A protocol class for one listener (its connections share one :class:`_Guard`)."""

    class ListenerProtocol(_GuardedProtocol):
        guard = _Guard(limits)

    return ListenerProtocol


def _fit_open_files(limits: Limits) -> Limits:
    """Raise the soft open-file limit to hold the cap (up to the hard limit), else lower the cap."""
    want = limits.max_connections + FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
    if soft == resource.RLIM_INFINITY or soft >= want:
        return limits
    cap = max(16, soft - FD_RESERVE)
    logger.warning("open-file limit %d holds only %d connections (max_connections %d); raise "
                   "LimitNOFILE (systemd) or ulimit -n", soft, cap, limits.max_connections)
    return Limits(limits.header_timeout_s, limits.body_timeout_s, cap)

_UVICORN_LEVELS = {"debug": "debug", "info": "info", "warn": "warning", "warning": "warning",
                   "error": "error", "critical": "critical", "trace": "trace"}  # fmt: skip


class _Server(uvicorn.Server):
    """uvicorn's server that reports once it listens and exits 0 on SIGINT/SIGTERM.

    uvicorn re-raises a captured signal after a graceful shutdown (so SIGTERM
    would end the process with -15); we only restore the previous handlers.
    """

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None],
                 stop_requested: threading.Event | None) -> None:  # fmt: skip
        super().__init__(config)
        self._on_started = on_started
        self._stop_requested = stop_requested

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._on_started()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        if self._stop_requested is not None and self._stop_requested.is_set():
            self.handle_exit(signal.SIGTERM, None)  # asked to stop while starting up
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class Listener:
    """A bound socket and the uvicorn configuration that will serve on it."""

    def __init__(self, sock: socket.socket, config: uvicorn.Config) -> None:
        self._sock = sock
        self._config = config
        self._server: _Server | None = None
        self._stop_asked = False
        host, port = sock.getsockname()[:2]
        self.host: str = host
        """The bound address (numeric)."""
        self.port: int = int(port)
        shown = f"[{host}]" if ":" in host else host
        self.url = f"{'https' if config.is_ssl else 'http'}://{shown}:{port}"
        """Where it listens (``--port 0`` resolved to the real port)."""

    @property
    def started(self) -> bool:
        """Whether uvicorn got as far as listening."""
        return self._server is not None and bool(self._server.started)

    def run(self, on_started: Callable[[], None] = lambda: None,
            stop_requested: threading.Event | None = None) -> bool:  # fmt: skip
        """Serve until stopped; return whether it ever started.

        ``on_started`` runs once it accepts connections; ``stop_requested`` (main
        thread only) is a stop that arrived before uvicorn's signal handlers did.
        """
        self._server = _Server(self._config, on_started, stop_requested)
        self._server.should_exit = self._stop_asked
        self._server.run(sockets=[self._sock])
        return bool(self._server.started)

    def stop(self, *, force: bool = False) -> None:
        """Ask :meth:`run` to return (in-flight requests finish unless ``force``)."""
        self._stop_asked = True
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = force

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()


def _bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket, or ConfigError saying why not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host!r}: cannot resolve the address: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    # proto must be IPPROTO_TCP (not 0): asyncio sets TCP_NODELAY on accepted
    # sockets only then, and without it Nagle + delayed ACKs cost 40 ms a request
    sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        hint = ("pick another with --port (0 = any free port)" if exc.errno == errno.EADDRINUSE
                else "check --host and --port")  # fmt: skip
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}; {hint}") from None
    sock.setblocking(False)
    return sock


def open_listener(app: ASGIApp, *, host: str, port: int, log_level: str,
                  tls_cert: Path | None = None, tls_key: Path | None = None,
                  limits: Limits | None = None) -> Listener:  # fmt: skip
    """Bind ``host:port`` and prepare uvicorn to serve ``app`` there (HTTPS with both TLS files)."""
    level = _UVICORN_LEVELS.get(log_level.lower(), "info")
    tls = tls_cert is not None and tls_key is not None
    limits = _fit_open_files(limits or Limits())
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=_protocol_class(limits),
        log_level=level,
        log_config=None,
        access_log=level in ("debug", "trace"),
        lifespan="on",
        ws="none",
        server_header=False,
        ssl_certfile=str(tls_cert) if tls else None,
        ssl_keyfile=str(tls_key) if tls else None,
    )
    try:
        config.load()
    except (OSError, ValueError) as exc:  # unreadable TLS files, mostly
        raise ConfigError(
            f"cannot load the HTTPS certificate/key ({tls_cert}, {tls_key}): {exc}; "
            "check MF_PROVISION_SERVER_CERT/_KEY"
        ) from None
    return Listener(_bind(host, port), config)
