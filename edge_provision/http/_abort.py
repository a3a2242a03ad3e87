"""Ending a request at its deadline, whatever phase it is in (private to ``http``).

``requests``/``urllib3`` timeouts bound each socket operation, not a request: a server
that sends one byte every few seconds keeps a request going for ever. Here the
connections of a :class:`DeadlineAdapter` note themselves, when they connect and when
they send, in the :class:`Guard` of the request running on their thread; when the
request's deadline passes, one watchdog thread (for all requests) shuts their sockets
down (TCP, or the TCP under TLS), so that the blocked read returns at once and the
request fails. The caller (``HttpClient``) then reports the deadline, not the broken
connection; urllib3 drops a shut-down connection from its pool instead of reusing it.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time
from types import TracebackType
from typing import Any, Optional

import requests.adapters
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

__all__ = ["DeadlineAdapter", "Guard"]

_ACTIVE = threading.local()  # .guard: the Guard of the request running on this thread


class Guard:
    """Abort the connections a request uses once ``delay_s`` has passed (a context manager)."""

    def __init__(self, delay_s: float) -> None:
        self._lock = threading.Lock()
        self._connections: list[HTTPConnection] = []
        self.done = False
        self.fired = False
        self._at = time.monotonic() + max(0.0, delay_s)

    def __enter__(self) -> Guard:
        _ACTIVE.guard = self
        _WATCHDOG.arm(self, self._at)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        with self._lock:
            self.done = True
        _WATCHDOG.disarm()
        _ACTIVE.guard = None

    def attach(self, connection: HTTPConnection) -> None:
        """Note ``connection`` as used by this request (cut at once if already too late)."""
        with self._lock:
            if self.done:
                return
            if connection not in self._connections:
                self._connections.append(connection)
            late = self.fired
        if late:
            _shut(connection)

    def fire(self) -> None:
        """The deadline has passed: cut every connection the request uses (once it is over,
        nothing)."""
        with self._lock:
            if self.done:
                return
            self.fired = True
            connections = list(self._connections)
        for connection in connections:
            _shut(connection)


class _Watchdog:
    """One thread for every guard of the process: it sleeps until the earliest deadline.

    Arming and disarming are a heap push and a counter under a lock (no thread per
    request); guards that finished are dropped lazily, and the heap is compacted when
    they outnumber the live ones.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Guard]] = []
        self._order = itertools.count()
        self._live = 0
        self._thread: threading.Thread | None = None

    def after_fork(self) -> None:
        """In a forked child the thread is gone (and the lock may be held): start afresh."""
        self._cond = threading.Condition()
        self._heap = []
        self._live = 0
        self._thread = None

    def arm(self, guard: Guard, at: float) -> None:
        with self._cond:
            # the thread sleeps until the earliest deadline: only an earlier one wakes it
            # (requests share one delay, so mostly none: no thread switch per request)
            earlier = not self._heap or at < self._heap[0][0]
            heapq.heappush(self._heap, (at, next(self._order), guard))
            self._live += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="edge-provision-http-deadline")  # fmt: skip
                self._thread.start()
            elif earlier:
                self._cond.notify()

    def disarm(self) -> None:
        with self._cond:
            self._live -= 1
            if len(self._heap) > 64 and len(self._heap) > 2 * self._live:
                self._heap = [entry for entry in self._heap if not entry[2].done]
                heapq.heapify(self._heap)

    def _run(self) -> None:
        while True:
            due: list[Guard] = []
            with self._cond:
                while not due:
                    while self._heap and self._heap[0][2].done:
                        heapq.heappop(self._heap)
                    if not self._heap:
                        self._cond.wait()
                        continue
                    wait = self._heap[0][0] - time.monotonic()
                    if wait > 0:
                        self._cond.wait(wait)
                        continue
                    due.append(heapq.heappop(self._heap)[2])
            for guard in due:
                guard.fire()


_WATCHDOG = _Watchdog()
os.register_at_fork(after_in_child=_WATCHDOG.after_fork)


def _shut(connection: HTTPConnection) -> None:
    """Shut the connection's socket down in both directions; a blocked read returns."""
    sock: Optional[socket.socket] = getattr(connection, "sock", None)
    if sock is None:
        return
    with contextlib.suppress(OSError, ValueError):
        # socket.socket's own shutdown: for a TLS socket this acts on the TCP under it
        # without touching the TLS state another thread is reading through
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _attach(connection: HTTPConnection) -> None:
    guard: Optional[Guard] = getattr(_ACTIVE, "guard", None)
    if guard is not None:
        guard.attach(connection)


class _HTTPConnection(HTTPConnection):
    """A connection that notes itself in the running request's guard."""

    def connect(self) -> None:
        _attach(self)
        super().connect()

    def request(self, *args: Any, **kwargs: Any) -> None:
        _attach(self)
        super().request(*args, **kwargs)


class _HTTPSConnection(_HTTPConnection, HTTPSConnection):
    """The same over TLS (``super()`` reaches ``HTTPSConnection`` first)."""


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOLS: dict[str, type[HTTPConnectionPool]] = {"http": _HTTPPool, "https": _HTTPSPool}


class DeadlineAdapter(requests.adapters.HTTPAdapter):
    """An ``HTTPAdapter`` whose connections (direct or through an HTTP proxy) can be guarded.

    SOCKS proxies keep urllib3's own connections: there the deadline ends a request at
    the next socket timeout (the timeouts are cut to the time left) instead of at once.
    """

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = _POOLS
        return manager

