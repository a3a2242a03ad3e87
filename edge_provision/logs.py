"""Logging set-up: operator-friendly lines, journald-aware, with a redaction backstop.

Code never logs secrets on purpose; :class:`RedactingFilter` is the backstop that
masks anything registered with :func:`register_secret` (tokens, thing keys, MQTT
passwords, external keys) and any PEM private key block that slips into a message anyway.
It also escapes control characters in every message (``\\n``, ``\\x1b``, ...): a value a
client sent (an external_id, a path) can neither forge a log line nor colour a terminal.
Tracebacks keep their line breaks.

When stderr is the journal (``$JOURNAL_STREAM`` names it, :func:`journal_logging_wanted`)
each line starts with its syslog priority (``<6>`` info, ``<4>`` warning, ``<3>`` error,
as ``sd-daemon(3)`` prefixes are read by journald) and carries no timestamp: the journal
has its own, and ``journalctl -p warning`` then filters by level.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections.abc import Mapping

__all__ = [
    "RedactingFilter",
    "escape_controls",
    "journal_logging_wanted",
    "register_secret",
    "setup_logging",
]

_PEM_KEY_RE = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.DOTALL
)
_UNSAFE_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_secrets: set[str] = set()
_lock = threading.Lock()
_MIN_SECRET_LEN = 4


def register_secret(value: str | None) -> None:
    """Mask ``value`` wherever it would appear in a log line from now on."""
    if value and len(value) >= _MIN_SECRET_LEN:
        with _lock:
            _secrets.add(value)


def _redact(text: str) -> str:
    text = _PEM_KEY_RE.sub("<redacted private key>", text)
    with _lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, "<redacted>")
    return text


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    escaped = _ESCAPES.get(char)
    if escaped is not None:
        return escaped
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` with C0/C1 control characters and line separators as backslash escapes."""
    return _UNSAFE_RE.sub(_escape_char, text)


class RedactingFilter(logging.Filter):
    """Rewrites each record's final message: secrets masked, control characters escaped."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = escape_controls(_redact(message))
        if cleaned != message:
            record.msg = cleaned
            record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = _redact(exc_text)
        return True


def journal_logging_wanted(
    env: Mapping[str, str] | None = None, *, stderr_fd: int | None = None
) -> bool:
    """True when ``$JOURNAL_STREAM`` is set: stderr is connected to the journal.

    With ``stderr_fd`` the ``device:inode`` it names must also match that descriptor,
    as ``systemd.exec(5)`` recommends (a child whose stderr was redirected says False).
    """
    env = os.environ if env is None else env
    stream = env.get("JOURNAL_STREAM", "")
    if not stream:
        return False
    if stderr_fd is None:
        return True
    try:
        st = os.fstat(stderr_fd)
    except OSError:
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"


_SYSLOG_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
                    logging.CRITICAL: 2}  # fmt: skip


class _JournalFormatter(logging.Formatter):
    """``<priority>name: message``: the line form journald reads its level from."""

    def format(self, record: logging.LogRecord) -> str:
        priority = _SYSLOG_PRIORITY.get(record.levelno, 6)
        return f"<{priority}>{super().format(record)}"


def setup_logging(level: str = "info", *, stream: object = None) -> None:
    """Configure the root logger: stderr, journald style when stderr is the journal."""
    out = stream or sys.stderr
    handler = logging.StreamHandler(out)  # type: ignore[arg-type]
    fileno = getattr(out, "fileno", None)
    try:
        fd = fileno() if callable(fileno) else None
    except (OSError, ValueError):  # a stream without a descriptor (e.g. io.StringIO)
        fd = None
    formatter: logging.Formatter
    if fd is not None and journal_logging_wanted(stderr_fd=fd):
        formatter = _JournalFormatter("%(name)s: %(message)s")
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(formatter)
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    # third-party chatter stays at warning unless we debug
    quiet = logging.DEBUG if level == "debug" else logging.WARNING
    for name in ("urllib3", "uvicorn.access", "asyncio"):
        logging.getLogger(name).setLevel(quiet)
