"""Pure-Python ``sd_notify(3)``: tell systemd we are ready, alive, reloading or stopping.

No C library, no dependency. :class:`Notifier` sends ``KEY=VALUE`` lines as one datagram
to the ``AF_UNIX`` socket named by ``$NOTIFY_SOCKET`` (a path, or an abstract name when
it starts with ``@``). Outside systemd it is a no-op; a failing send is logged once at
debug level and never raised, because the daemon must not die for want of a status line.

:func:`watchdog_interval_s` says how often to send ``WATCHDOG=1`` (half of
``$WATCHDOG_USEC``, as ``sd_watchdog_enabled(3)`` recommends). Whether stderr is the
journal is :func:`edge_provision.logs.journal_logging_wanted` (the log format follows it).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from collections.abc import Mapping

__all__ = ["Notifier", "watchdog_interval_s"]

logger = logging.getLogger(__name__)

_FIELD_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")


class Notifier:
    """Sends ``sd_notify`` messages to ``socket_path`` (default ``$NOTIFY_SOCKET``).

    ``enabled`` is False when there is no usable socket; every method is then a no-op
    returning False. Methods return True when the datagram was sent.
    """

    def __init__(
        self, socket_path: str | None = None, *, env: Mapping[str, str] | None = None
    ) -> None:
        if socket_path is None:
            socket_path = (os.environ if env is None else env).get("NOTIFY_SOCKET") or None
        self.socket_path = socket_path
        self._address: str | bytes | None = _parse_address(socket_path)
        self._failed_once = False

    def __repr__(self) -> str:
        return f"Notifier(socket_path={self.socket_path!r}, enabled={self.enabled})"

    @property
    def enabled(self) -> bool:
        """True when there is a notify socket to talk to."""
        return self._address is not None

    def ready(self, status: str | None = None) -> bool:
        """``READY=1`` (and ``STATUS=`` if given): startup is finished, the service is up."""
        return self.notify(READY=1) if status is None else self.notify(READY=1, STATUS=status)

    def status(self, text: str) -> bool:
        """``STATUS=<text>``: the one-line status ``systemctl status`` shows."""
        return self.notify(STATUS=text)

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: keep-alive ping for ``WatchdogSec=``."""
        return self.notify(WATCHDOG=1)

    def stopping(self) -> bool:
        """``STOPPING=1``: shutdown has begun."""
        return self.notify(STOPPING=1)

    def reloading(self) -> bool:
        """``RELOADING=1`` with ``MONOTONIC_USEC`` (required by ``Type=notify-reload``)."""
        return self.notify(RELOADING=1, MONOTONIC_USEC=time.monotonic_ns() // 1000)

    def notify(self, **fields: str | int) -> bool:
        """Send ``KEY=VALUE`` lines, in the order given, as one datagram.

        Keys must be upper-case sd_notify variable names; newlines in values become
        spaces (the protocol is line based). Never raises on a send failure.
        """
        bad = [k for k in fields if not _FIELD_RE.match(k)]
        if bad:
            raise ValueError(f"sd_notify field names must be upper case: {', '.join(bad)}")
        if self._address is None or not fields:
            return False
        lines = [f"{k}={str(v).replace(chr(10), ' ')}" for k, v in fields.items()]
        payload = "\n".join(lines).encode("utf-8")
        try:  # one short-lived socket per message, as libsystemd does: nothing to leak
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(payload, self._address)
        except OSError as exc:
            if not self._failed_once:
                self._failed_once = True
                logger.debug("sd_notify failed socket=%s error=%s", self.socket_path, exc)
            return False
        return True


def _parse_address(socket_path: str | None) -> str | bytes | None:
    """The ``sendto`` address for ``$NOTIFY_SOCKET``; None if unset or unsupported."""
    if not socket_path:
        return None
    if socket_path.startswith("@"):
        return b"\0" + socket_path[1:].encode("utf-8")
    if socket_path.startswith("/"):
        return socket_path
    logger.debug("sd_notify socket unsupported socket=%s", socket_path)
    return None


def watchdog_interval_s(
    env: Mapping[str, str] | None = None, pid: int | None = None
) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings: half of ``$WATCHDOG_USEC``; None if no watchdog.

    ``$WATCHDOG_PID``, when set, must name this process (``pid``, default our own):
    the watchdog was armed for someone else otherwise.
    """
    env = os.environ if env is None else env
    usec_text = env.get("WATCHDOG_USEC", "")
    try:
        usec = int(usec_text)
    except ValueError:
        if usec_text:
            logger.debug("watchdog ignored WATCHDOG_USEC=%s: not an integer", usec_text)
        return None
    if usec <= 0:
        return None
    pid_text = env.get("WATCHDOG_PID", "")
    if pid_text:
        wanted = os.getpid() if pid is None else pid
        if pid_text.strip() != str(wanted):
            return None
    return usec / 2 / 1_000_000

