"""Crash-safe file primitives shared by the store, identity and the lab server.

Every write goes: temporary file in the same directory, created with its final
mode, written, fsynced, ``os.replace``d over the target, directory fsynced. A
power cut at any line leaves either the old file or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Callable, Union

from edge_provision.errors import LockBusy, StoreError

__all__ = [
    "DIR_MODE",
    "PUBLIC_MODE",
    "SECRET_MODE",
    "atomic_symlink",
    "atomic_write",
    "ensure_private_dir",
    "exclusive_lock",
    "fsync_dir",
    "is_temp_name",
    "os_error",
    "read_text",
    "remove_temp_files",
]

SECRET_MODE = 0o600
PUBLIC_MODE = 0o644
DIR_MODE = 0o700

StrPath = Union[str, "os.PathLike[str]"]

_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.[0-9a-f]{8}\.tmp$")


def _temp_path(target: Path) -> Path:
    """Where :func:`atomic_write` / :func:`atomic_symlink` stage ``target``."""
    return target.with_name(f".{target.name}.{os.urandom(4).hex()}.tmp")


def is_temp_name(name: str, of: str | None = None) -> bool:
    """True for a staging file of :func:`atomic_write` (``.<name>.<8 hex>.tmp``), of ``of``."""
    match = _TEMP_RE.match(name)
    return match is not None and (of is None or match.group("name") == of)


def remove_temp_files(directory: StrPath, *, of: str | None = None) -> list[Path]:
    """Remove the staging files a crash left in ``directory`` (only those of ``of`` if given).

    A process killed between writing and renaming leaves ``.<name>.<8 hex>.tmp`` behind,
    possibly with a secret in it. Call this with the lock that guards those writes held.
    A missing directory has nothing to remove; StoreError if one cannot be removed.
    """
    try:
        names = sorted(os.listdir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise StoreError(f"{directory}: cannot list: {exc.strerror or exc}") from exc
    removed = []
    for name in names:
        if not is_temp_name(name, of):
            continue
        path = Path(directory, name)
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise StoreError(f"{path}: cannot remove a leftover temporary file: "
                             f"{exc.strerror or exc}") from exc
        removed.append(path)
    return removed


_HINTS = {
    errno.EACCES: "run as the service user or fix ownership of the state directory",
    errno.EPERM: "run as the service user or fix ownership of the state directory",
    errno.ENOSPC: "free some disk space",
    errno.EDQUOT: "free some disk space or raise the quota",
    errno.EROFS: "the filesystem is read-only; remount it read-write or pick --state-dir",
}


def os_error(path: StrPath, action: str, exc: OSError) -> StoreError:
    """An OSError as a StoreError naming the path, what failed and the likely fix."""
    hint = _HINTS.get(exc.errno or 0, "check the state directory (--state-dir) and the disk")
    return StoreError(f"{path}: cannot {action}: {exc.strerror or exc}; {hint}")


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
    tmp = _temp_path(target)
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
        raise os_error(target, "write", exc) from exc


def atomic_symlink(link: StrPath, target: str) -> None:
    """Point symlink ``link`` at ``target`` with one atomic rename."""
    link_path = Path(link)
    tmp = _temp_path(link_path)
    try:
        os.symlink(target, tmp)
        os.replace(tmp, link_path)
        fsync_dir(link_path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise os_error(link_path, "switch the link", exc) from exc


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


_LOCK_POLL_S = 0.1


def _describe_holder(fd: int) -> str | None:
    """Who holds the lock, from what the holder wrote into the lock file (None: unknown)."""
    try:
        raw = os.pread(fd, 4096, 0)
        doc = json.loads(raw.decode("utf-8")) if raw else None
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or type(doc.get("pid")) is not int:
        return None
    pid, command, since = doc["pid"], doc.get("command"), doc.get("since")
    if not os.path.exists(f"/proc/{pid}"):
        return None  # written by a process that is gone: stale
    text = f"pid {pid}"
    if isinstance(command, str) and command:
        text += f" ({command}"
        text += f", since {since})" if isinstance(since, str) and since else ")"
    return text


def _write_holder(fd: int, holder: str | None) -> None:
    """Say in the lock file who holds it (best effort: a full disk must not stop the run)."""
    doc = {"pid": os.getpid(), "command": holder or "edge-provision",
           "since": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}  # fmt: skip
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(doc).encode("utf-8"), 0)


def _busy(path: Path, holder: str | None, waited_s: float) -> LockBusy:
    who = holder or "another edge-provision process"
    after = f" for {waited_s:g} s" if waited_s > 0 else ""
    return LockBusy(
        f"{path}: the state lock is held by {who}; waited{after or ' not at all'}. It is "
        "never held longer than one run: try again when that run is done (the daemon "
        "retries by itself), or wait longer with agent.lock_wait / EDGE_PROVISION_LOCK_WAIT",
        holder=holder,
    )


@contextlib.contextmanager
def exclusive_lock(
    lock_path: StrPath,
    *,
    blocking: bool = True,
    wait_s: float | None = None,
    holder: str | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` for the duration of the block.

    While held, the lock file says who holds it (``{"pid", "command", "since"}``, the
    command being ``holder``: a label, never an argv, which may carry a secret); it is
    emptied again on release. A lock held by another process is waited for: without limit
    when ``blocking`` and ``wait_s`` is None (the kernel queues us), at most ``wait_s``
    seconds otherwise, and not at all with ``blocking=False`` (as ``wait_s=0``); then
    :class:`~edge_provision.errors.LockBusy` (temporary, exit 75) names the holder.
    ``on_wait`` is called once, with the holder's description, when we start waiting.
    """
    path = Path(lock_path)
    limit = 0.0 if not blocking else wait_s
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, SECRET_MODE)
    except OSError as exc:
        raise StoreError(f"{path}: cannot open lock file: {exc.strerror}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _wait_for(fd, path, limit, on_wait)
        _write_holder(fd, holder)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _wait_for(fd: int, path: Path, limit: float | None,
              on_wait: Callable[[str], None] | None) -> None:  # fmt: skip
    """Take the lock another process holds: wait up to ``limit`` seconds (None: forever)."""
    holder = _describe_holder(fd)
    if limit is not None and limit <= 0:
        raise _busy(path, holder, 0.0)
    if on_wait is not None:
        on_wait(holder or "another edge-provision process")
    if limit is None:
        fcntl.flock(fd, fcntl.LOCK_EX)  # queued in the kernel until the holder lets go
        return
    started = time.monotonic()
    deadline = started + limit
    while True:
        time.sleep(min(_LOCK_POLL_S, max(0.0, deadline - time.monotonic())))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise _busy(path, _describe_holder(fd) or holder,
                            time.monotonic() - started) from None
