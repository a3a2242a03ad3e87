"""Child processes and clocks of the supervisor (:mod:`edge_provision.agent.daemon.supervisor`).

The argv of a child command, the capture of its ``--json`` stdout in an anonymous file
(memfd) and the reading of its error document; the injected :class:`Clock`. Standard
library only, like the daemon itself.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from edge_provision.agent.daemon.schedule import ChildResult

if TYPE_CHECKING:
    import random
    import subprocess

__all__ = ["CHILD_ENV_DROP", "CHILD_ENV_SET", "Child", "Clock", "JitterSource", "SystemClock",
           "capture_fd", "command_prefix", "error_of"]

CHILD_ENV_DROP = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
CHILD_ENV_SET = {"EDGE_PROVISION_LOCK_WAIT": "0"}
"""A child never waits for a state lock someone else holds: it exits 75 (reason ``busy``) and
the supervisor, which stays responsive, retries it soon."""
_MAX_STDOUT_BYTES = 65536

class Clock(Protocol):
    """Time, injected: ``monotonic()`` for timers, ``now()`` (aware UTC) for schedules."""

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps."""
        ...

    def now(self) -> datetime:
        """The wall-clock time, timezone-aware UTC."""
        ...


class SystemClock:
    """The real clocks."""

    def monotonic(self) -> float:
        """:func:`time.monotonic`."""
        return time.monotonic()

    def now(self) -> datetime:
        """:func:`datetime.now` in UTC."""
        return datetime.now(timezone.utc)


class JitterSource:
    """``random.Random`` for the backoff's jitter (not secrets), made at its first use: a
    daemon that never failed never loads the ``random`` module."""

    def __init__(self) -> None:
        self._rng: random.Random | None = None

    def uniform(self, a: float, b: float) -> float:
        """A number N with ``a <= N <= b``."""
        if self._rng is None:
            import random

            self._rng = random.Random()
        return self._rng.uniform(a, b)


def command_prefix(
    *, config: Path | None = None, state_dir: Path | None = None, log_level: str | None = None,
    python: str | None = None,
) -> list[str]:
    """``python -m edge_provision [--config C] [--state-dir D] [--log-level L]``.

    The argv before ``<command> --json``. Only the global options given to ``run`` are
    repeated; everything else reaches the child through the same environment and file.
    """
    argv = [python or sys.executable, "-m", "edge_provision"]
    if config is not None:
        argv += ["--config", str(config)]
    if state_dir is not None:
        argv += ["--state-dir", str(state_dir)]
    if log_level is not None:
        argv += ["--log-level", log_level]
    return argv


class Child:
    """A running child command: its process, start time and captured stdout."""

    def __init__(self, command: str, proc: subprocess.Popen[bytes], stdout_fd: int,
                 started: float) -> None:
        self.command = command
        self.proc = proc
        self.stdout_fd = stdout_fd
        self.started = started
        self.kill_at: float | None = None  # SIGKILL when the monotonic clock passes this
        self.timed_out_s: float | None = None

    def result(self, returncode: int) -> ChildResult:
        """Parse the ``--json`` document (bounded read) and close the capture file."""
        try:
            os.lseek(self.stdout_fd, 0, os.SEEK_SET)
            raw = os.read(self.stdout_fd, _MAX_STDOUT_BYTES)
        finally:
            self.close()
        kind, message, reason, has_doc = error_of(raw)
        return ChildResult(self.command, returncode, kind, message, has_doc, self.timed_out_s,
                           reason)

    def close(self) -> None:
        """Release the stdout capture (idempotent)."""
        if self.stdout_fd >= 0:
            os.close(self.stdout_fd)
            self.stdout_fd = -1


def capture_fd() -> int:
    """An anonymous file for a child's stdout: memfd (no import of tempfile), else a temp file.

    A file, not a pipe: the child never blocks on a full pipe while the loop sleeps.
    """
    try:
        return os.memfd_create("edge-provision-child-stdout", os.MFD_CLOEXEC)
    except (AttributeError, OSError):  # not Linux, or an old kernel
        import tempfile

        fd, path = tempfile.mkstemp(prefix="edge-provision-child-")
        os.unlink(path)
        return fd


def error_of(raw: bytes) -> tuple[str | None, str | None, str | None, bool]:
    """(kind, message, reason, is an error document) from a child's stdout; never logged."""
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None, None, None, False
    if not isinstance(doc, dict) or doc.get("ok") is not False:
        return None, None, None, False
    error = doc.get("error")
    if not isinstance(error, dict):
        return None, None, None, True
    kind, message, reason = error.get("kind"), error.get("message"), error.get("reason")
    return (kind if isinstance(kind, str) else None,
            message if isinstance(message, str) else None,
            reason if isinstance(reason, str) else None, True)
