"""The lab server's listening socket and uvicorn, which runs the ASGI app on it.

:func:`open_listener` binds the socket and loads the configuration (so every
start-up error is a :class:`ConfigError` before anything runs);
:meth:`Listener.run` serves until :meth:`Listener.stop` (from another thread) or
SIGINT/SIGTERM (in the main thread, where it exits cleanly, not by the signal).
"""

from __future__ import annotations

import contextlib
import errno
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import uvicorn

from edge_provision.errors import ConfigError
from edge_provision.lab.http.messages import ASGIApp

__all__ = ["Listener", "open_listener"]

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
                  tls_cert: Path | None = None, tls_key: Path | None = None) -> Listener:
    """Bind ``host:port`` and prepare uvicorn to serve ``app`` there (HTTPS with both TLS files)."""
    level = _UVICORN_LEVELS.get(log_level.lower(), "info")
    tls = tls_cert is not None and tls_key is not None
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
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
