"""Who is connected to the lab broker, read from its log (private to the lab broker).

mosquitto 2.0 keeps a session of a user that is no longer allowed in two cases: on a
listener where the certificate is the identity (a reload re-checks neither the CRL nor
a password for open sessions), and nowhere offers "disconnect user X" without the
dynamic-security plugin. It does drop an open session when a new client connects with
the same client id. So the lab reads the client ids from the broker's connection
messages::

    New connection from 127.0.0.1:50312 on port 8883.
    New client connected from 127.0.0.1:50312 as gw-7 (p2, c1, k60, u'<thing id>').

and ends a session by connecting with its client id as the admin user, then
disconnecting (:meth:`SessionLog.client_ids` gives the ids to take over).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from pathlib import Path

__all__ = ["SessionLog"]

_NEW_CONNECTION = re.compile(r"New connection from (\S+) on port (\d+)\.$")
_CONNECTED = re.compile(
    r"New client connected from (\S+) as (.*) \(p\d+, c\d+, k\d+(?:, u'(.*)')?\)\.$"
)
_MAX_PENDING = 10_000  # addresses seen connecting but not yet authenticated


class SessionLog:
    """Client id -> (user, listener port) of the sessions the broker reported, latest first."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0
        self._partial = b""
        self._port_of: dict[str, int] = {}  # peer address -> listener port
        self._sessions: dict[str, tuple[str, int]] = {}  # client id -> (user, port)

    def refresh(self) -> None:
        """Read what the broker logged since the last call."""
        try:
            with self._path.open("rb") as f:
                size = f.seek(0, 2)
                if size < self._offset:  # replaced or truncated: start over
                    self._offset, self._partial = 0, b""
                f.seek(self._offset)
                data = f.read()
        except OSError:
            return
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for raw in lines:
            self._line(raw.decode("utf-8", "replace").rstrip("\r"))

    def _line(self, line: str) -> None:
        text = line.split(": ", 1)[1] if line[:1].isdigit() and ": " in line else line
        found = _NEW_CONNECTION.search(text)
        if found is not None:
            if len(self._port_of) >= _MAX_PENDING:
                self._port_of.clear()
            self._port_of[found.group(1)] = int(found.group(2))
            return
        found = _CONNECTED.search(text)
        if found is not None and found.group(3) is not None:
            port = self._port_of.pop(found.group(1), 0)
            self._sessions[found.group(2)] = (found.group(3), port)

    def client_ids(self, user: str, ports: Collection[int] | None = None) -> list[str]:
        """Client ids whose latest session is ``user``'s (on one of ``ports``, if given)."""
        return [cid for cid, (who, port) in self._sessions.items()
                if who == user and (ports is None or port in ports)]  # fmt: skip

    def forget(self, client_id: str) -> None:
        """Drop ``client_id`` (its session was taken over)."""
        self._sessions.pop(client_id, None)
