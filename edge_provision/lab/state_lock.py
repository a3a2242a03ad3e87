"""One lab server per state directory: an exclusive lock that names its holder.

``<state_dir>/lab.lock`` is ``flock``-ed for as long as the server runs and holds
its pid. A second server on the same directory is refused with that pid instead
of sharing the database, the CA and the broker files. The kernel drops the lock
when the holder dies (even by SIGKILL); the descriptor is close-on-exec, so a
child (mosquitto) never keeps it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from edge_provision import fileio
from edge_provision.errors import ConfigError, StoreError

__all__ = ["LOCK_FILE", "StateLock"]

LOCK_FILE = "lab.lock"


class StateLock:
    """The held lock of one state directory (see the module docstring)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, state_dir: Path) -> StateLock:
        """Lock ``state_dir`` for this process; ConfigError naming the holder's pid if taken."""
        path = fileio.ensure_private_dir(state_dir) / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, fileio.SECRET_MODE)
        except OSError as exc:
            raise StoreError(f"{path}: cannot open the lab server's lock file: {exc.strerror}; "
                             "check the owner and mode of the state directory") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise ConfigError(
                f"state directory {state_dir} is in use by another lab server ({holder}); "
                "stop that one first, or give this one another --state-dir"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        """Give the lock up (the pid stays in the file, stale but harmless); idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def _holder(fd: int) -> str:
    """``pid N`` from the lock file, or what is known when it is not (yet) written."""
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return f"pid {text}" if text.isdigit() else "pid not yet recorded"
