"""Log lines gathered over a short window of the event loop (private to :mod:`edge_provision.lab`).

A log line per answered request costs ~10% of a request's CPU (record, redaction,
format, a write). A :class:`TurnLog` collects what the requests report and logs one
line for all of them ``interval_s`` after the first (0: when the current turn of the
loop is over; outside a running loop: at once). Nothing is lost when a loop ends
without running the flush: the next report, or :meth:`TurnLog.flush`, logs it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Callable, Generic, TypeVar

__all__ = ["TurnLog"]

T = TypeVar("T")


class TurnLog(Generic[T]):
    """Items reported within ``interval_s`` (or one turn) of the event loop, logged as one
    INFO line by ``render``.

    ``render(items)`` returns the format string and its arguments (lazy ``%s``).
    """

    def __init__(self, logger: logging.Logger,
                 render: Callable[[list[T]], tuple[str, tuple[object, ...]]], *,
                 interval_s: float = 0.0) -> None:  # fmt: skip
        self._logger = logger
        self._render = render
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._items: list[T] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(self, item: T) -> None:
        """Report ``item``; it is logged with the others of its window (see the module)."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._lock:
            if self._loop is not loop:  # items of a loop that ended before logging them
                self._log_locked()
            self._items.append(item)
            first = len(self._items) == 1
            self._loop = loop
        if loop is None:
            self.flush()
        elif first and self._interval_s > 0:
            loop.call_later(self._interval_s, self.flush)
        elif first:
            loop.call_soon(self.flush)

    def flush(self) -> None:
        """Log what was reported since the last line."""
        with self._lock:
            self._log_locked()

    def _log_locked(self) -> None:
        items, self._items = self._items, []
        if items:
            text, args = self._render(items)
            self._logger.info(text, *args)
