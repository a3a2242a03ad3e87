"""The logging backstop: secrets masked, control characters escaped, tracebacks intact."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from edge_provision.logs import escape_controls, register_secret, setup_logging


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """The root logger writing through setup_logging's handler into a string."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    out = io.StringIO()
    setup_logging("info", stream=out)
    yield out
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])


@pytest.mark.parametrize(("raw", "shown"), [
    ("gw\n2026-01-01 ERROR forged", "gw\\n2026-01-01 ERROR forged"),
    ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
    ("a\rb\tc\x00d\x7fe\x9bf", "a\\rb\\tc\\x00d\\x7fe\\x9bf"),
    ("line\u2028sep\u2029", "line\\u2028sep\\u2029"),
    ("plain: é ü ключ 02:42:ac", "plain: é ü ключ 02:42:ac"),
])
def test_escape_controls(raw: str, shown: str) -> None:
    """C0, DEL, C1 and Unicode line separators become escapes; printable text is kept."""
    assert escape_controls(raw) == shown


def test_a_logged_value_cannot_forge_a_line(stream: io.StringIO) -> None:
    """A value with a line break and ANSI codes stays on its own, escaped, log line."""
    logging.getLogger("edge_provision.lab.test").warning(
        "mapping created external_id=%s", "gw\n2026-01-01 00:00:00 ERROR forged \x1b[2J")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].endswith("external_id=gw\\n2026-01-01 00:00:00 ERROR forged \\x1b[2J")
    assert "\x1b" not in stream.getvalue()


def test_tracebacks_keep_their_lines_and_secrets_stay_masked(stream: io.StringIO) -> None:
    """The escaping touches the message only; redaction still applies to both."""
    register_secret("s3cret-token-value")
    try:
        raise ValueError("boom s3cret-token-value")
    except ValueError:
        logging.getLogger("edge_provision.lab.test").exception("failed token=%s",
                                                               "s3cret-token-value")
    text = stream.getvalue()
    assert "s3cret-token-value" not in text
    assert "failed token=<redacted>" in text
    assert "Traceback (most recent call last):\n" in text
    assert "ValueError: boom <redacted>" in text
