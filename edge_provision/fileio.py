"""Crash-safe file primitives shared by the store, identity and the lab server.

Every write goes: temporary file in the same directory, created with its final
mode, written, fsynced, ``os.replace``d over the target, directory fsynced. A
power cut at any line leaves either the old file or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Union

from edge_provision.errors import StoreError

__all__ = [
    "DIR_MODE",
    "PUBLIC_MODE",
    "SECRET_MODE",
    "atomic_symlink",
    "atomic_write",
    "ensure_private_dir",
    "exclusive_lock",
    "fsync_dir",
    "read_text",
]

SECRET_MODE = 0o600
PUBLIC_MODE = 0o644
DIR_MODE = 0o700

StrPath = Union[str, "os.PathLike[str]"]


def fsync_dir(directory: StrPath) -> None:
    """Flush a directory entry (a rename or a new file) to disk."""
    fd = os.open(os.fspath(directory), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_private_dir(directory: StrPath, mode: int = DIR_MODE) -> Path:
    """Create ``directory`` (and parents) if needed; tighten its mode to ``mode``.

    An existing directory owned by us whose mode is looser is tightened; one that
    we cannot fix raises :class:`StoreError`.
    """
    path = Path(directory)
    try:
        path.mkdir(mode=mode, parents=True, exist_ok=True)
        st = path.stat()
        if st.st_mode & 0o777 != mode and st.st_uid == os.geteuid():
            os.chmod(path, mode)
    except NotADirectoryError as exc:
        raise StoreError(f"{path}: expected a directory, found a file") from exc
    except PermissionError as exc:
        raise StoreError(
            f"{path}: permission denied; run as the service user or pick another "
            "directory with --state-dir"
        ) from exc
    except OSError as exc:
        raise StoreError(f"{path}: cannot create directory: {exc.strerror}") from exc
    return path


def atomic_write(path: StrPath, data: bytes | str, mode: int = SECRET_MODE) -> None:
    """Replace ``path`` with ``data`` atomically and durably, with file mode ``mode``."""
    target = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    tmp = target.with_name(f".{target.name}.{os.urandom(4).hex()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            os.fchmod(fd, mode)  # the umask must not loosen or tighten it
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise StoreError(f"{target}: cannot write: {exc.strerror or exc}") from exc


def atomic_symlink(link: StrPath, target: str) -> None:
    """Point symlink ``link`` at ``target`` with one atomic rename."""
    link_path = Path(link)
    tmp = link_path.with_name(f".{link_path.name}.{os.urandom(4).hex()}.tmp")
    try:
        os.symlink(target, tmp)
        os.replace(tmp, link_path)
        fsync_dir(link_path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise StoreError(f"{link_path}: cannot switch link: {exc.strerror or exc}") from exc


def read_text(path: StrPath, what: str = "file") -> str:
    """Read a UTF-8 text file, turning every way it can fail into a clear message.

    Raises :class:`OSError`-free errors: callers wrap the message into the error
    class that fits (``ConfigError`` for settings, ``StoreError`` for state).
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"{p}: {what} not found") from None
    except IsADirectoryError:
        raise ValueError(f"{p}: is a directory, expected a {what}") from None
    except PermissionError:
        raise ValueError(f"{p}: permission denied reading the {what}") from None
    except OSError as exc:
        if exc.errno == errno.EISDIR:
            raise ValueError(f"{p}: is a directory, expected a {what}") from None
        raise ValueError(f"{p}: cannot read the {what}: {exc.strerror}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ValueError(
            f"{p}:{line}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset "
            f"{exc.start}); save the {what} as UTF-8"
        ) from None


@contextlib.contextmanager
def exclusive_lock(lock_path: StrPath, *, blocking: bool = True) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` for the duration of the block.

    With ``blocking=False`` a lock held by another process raises ``StoreError``
    at once instead of waiting.
    """
    path = Path(lock_path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, SECRET_MODE)
    except OSError as exc:
        raise StoreError(f"{path}: cannot open lock file: {exc.strerror}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            raise StoreError(
                f"{path}: another edge-provision process holds the state lock; "
                "wait for it to finish (is the daemon enrolling right now?)"
            ) from None
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
