"""The throwaway CA, the serving thread of the test servers and the small polling helpers
of :mod:`edge_provision.testing`."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Callable, TypeVar

from edge_provision import fileio
from edge_provision.net import free_port

__all__ = ["Served", "Serving", "ThrowawayCA", "TrackingServer", "free_port", "wait_for"]

T = TypeVar("T")
S = TypeVar("S", bound="Served")


class ThrowawayCA:
    """A :class:`~edge_provision.crypto.pki.LocalCA` living in ``directory/ca`` for one test."""

    def __init__(self, directory: Path) -> None:
        from edge_provision.crypto.pki import LocalCA  # only tests pay for cryptography here

        self.directory = Path(directory)
        self._ca = LocalCA.load_or_create(self.directory / "ca", common_name="throwaway test CA")
        self._count = 0
        self._lock = threading.Lock()

    @property
    def cert_pem(self) -> str:
        """The CA certificate (PEM)."""
        return self._ca.cert_pem

    @property
    def ca_path(self) -> Path:
        """Path of the CA certificate file (use as a CA bundle)."""
        return self.directory / "ca" / "ca.crt"

    def issue_client(self, cn: str, ttl_s: int = 3600) -> tuple[str, str]:
        """A client certificate (clientAuth) for ``cn``: ``(cert_pem, key_pem)``."""
        issued, key_pem = self._ca.issue(common_name=cn, key_type="ec", key_bits=None, ttl_s=ttl_s)
        return issued.cert_pem, key_pem

    def write_client(self, cn: str, ttl_s: int = 3600) -> tuple[Path, Path]:
        """Like :meth:`issue_client` but written to files: ``(cert_path, key_path)``."""
        cert_pem, key_pem = self.issue_client(cn, ttl_s)
        return self._write(f"client-{cn}", cert_pem, key_pem)

    def issue_server(
        self, hostnames: list[str] | tuple[str, ...] = ("127.0.0.1", "localhost"), ttl_s: int = 3600
    ) -> tuple[Path, Path]:
        """A TLS server certificate for ``hostnames``, written out: ``(cert_path, key_path)``."""
        issued, key_pem = self._ca.issue_server_cert(list(hostnames), ttl_s)
        return self._write("server", issued.cert_pem, key_pem)

    def _write(self, stem: str, cert_pem: str, key_pem: str) -> tuple[Path, Path]:
        with self._lock:
            self._count += 1
            n = self._count
        out = fileio.ensure_private_dir(self.directory / "issued")
        cert_path = out / f"{stem}-{n}.crt"
        key_path = out / f"{stem}-{n}.key"
        fileio.atomic_write(cert_path, cert_pem, mode=fileio.PUBLIC_MODE)
        fileio.atomic_write(key_path, key_pem, mode=fileio.SECRET_MODE)
        return cert_path, key_path


class TrackingServer(socketserver.ThreadingTCPServer):
    """A threading TCP server on ``127.0.0.1:0`` that knows its connections and threads.

    One daemon thread per connection, named ``thread_name``; ``accepted`` counts them.
    :meth:`serve_connection` runs the handler on a (possibly TLS-wrapped) connection and
    keeps it in :attr:`connections` meanwhile; :meth:`abort` shuts every connection down
    and joins the threads, so that stopping a test server is bounded in time.
    Connection-level errors are expected (clients give up): they are not printed.
    """

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, handler: type[socketserver.BaseRequestHandler], thread_name: str) -> None:
        self.lock = threading.Lock()
        self.connections: set[socket.socket] = set()
        self.threads: set[threading.Thread] = set()
        self.accepted = 0
        self.thread_name = thread_name
        super().__init__(("127.0.0.1", 0), handler)

    def process_request(  # type: ignore[override]
        self, request: socket.socket, client_address: tuple[str, int]
    ) -> None:
        thread = threading.Thread(target=self.process_request_thread,
                                  args=(request, client_address), name=self.thread_name,
                                  daemon=True)  # fmt: skip
        with self.lock:
            self.threads.add(thread)
            self.accepted += 1
        thread.start()

    def process_request_thread(  # type: ignore[override]
        self, request: socket.socket, client_address: tuple[str, int]
    ) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.lock:
                self.threads.discard(threading.current_thread())

    def finish_request(  # type: ignore[override]
        self, request: socket.socket, client_address: tuple[str, int]
    ) -> None:
        self.serve_connection(request, client_address)

    def serve_connection(self, conn: socket.socket, client_address: tuple[str, int]) -> None:
        """Run the handler on ``conn``, tracked while it runs."""
        with self.lock:
            self.connections.add(conn)
        try:
            socketserver.BaseServer.finish_request(self, conn, client_address)
        finally:
            with self.lock:
                self.connections.discard(conn)

    def handle_error(  # type: ignore[override]
        self, request: socket.socket, client_address: tuple[str, int]
    ) -> None:
        """Stay quiet."""

    def abort(self, deadline: float) -> None:
        """Shut every connection down; join the connection threads until ``deadline``."""
        with self.lock:
            conns, threads = list(self.connections), list(self.threads)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


class Serving:
    """A socketserver served from a daemon thread, for :class:`FakeServer` and :class:`FaultProxy`.

    :meth:`start` is idempotent; :meth:`stop` sets ``stopping`` (handlers that wait watch
    it), ends the serving loop and calls ``abort(deadline)``, which must close the server
    and end its connections by the monotonic ``deadline``.
    """

    def __init__(self, server: socketserver.BaseServer, name: str, stopping: threading.Event,
                 abort: Callable[[float], None]) -> None:  # fmt: skip
        self.server = server
        self.name = name
        self.stopping = stopping
        self._abort = abort
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Serve in a daemon thread (once)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self.server.serve_forever,
                                                kwargs={"poll_interval": 0.05}, name=self.name,
                                                daemon=True)  # fmt: skip
                self._thread.start()

    def stop(self, within_s: float) -> None:
        """Stop serving and end every connection within about ``within_s``."""
        deadline = time.monotonic() + within_s
        self.stopping.set()
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self.server.shutdown()
            thread.join(max(0.0, deadline - time.monotonic()))
        self._abort(deadline)


class Served:
    """Start, stop and ``with`` for a test server whose ``_serving`` is a :class:`Serving`."""

    _serving: Serving
    stop_within_s = 1.0

    def start(self: S) -> S:
        """Start serving in a daemon thread (idempotent); returns ``self``."""
        self._serving.start()
        return self

    def stop(self) -> None:
        """Stop serving and end every open connection, within about ``stop_within_s``."""
        self._serving.stop(self.stop_within_s)

    def __enter__(self: S) -> S:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.stop()


def wait_for(
    predicate: Callable[[], T],
    timeout_s: float = 5.0,
    *,
    interval_s: float = 0.02,
    what: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns something truthy; return that value.

    Raises ``TimeoutError`` naming ``what`` after ``timeout_s`` seconds. The
    predicate is called at least once and at most ``timeout_s / interval_s + 2`` times.
    """
    deadline = time.monotonic() + timeout_s
    max_calls = int(timeout_s / max(interval_s, 0.001)) + 2
    for _ in range(max_calls):
        value = predicate()
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(interval_s, remaining))
    raise TimeoutError(f"{what} not met within {timeout_s:g} s")
