"""Log set-up: journald detection and line form, the redaction backstop, control
characters escaped, tracebacks intact."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_provision.logs import (
    escape_controls,
    journal_logging_wanted,
    register_secret,
    setup_logging,
)


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    """Each test configures the root logger; put the previous handlers back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_journal_logging_wanted(tmp_path: Path) -> None:
    """JOURNAL_STREAM set means journald; with a descriptor it must name that very file."""
    assert not journal_logging_wanted({})
    assert journal_logging_wanted({"JOURNAL_STREAM": "8:12345"})
    with open(tmp_path / "stderr.log", "w") as fh:
        st = os.fstat(fh.fileno())
        matching = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert journal_logging_wanted(matching, stderr_fd=fh.fileno())
        assert not journal_logging_wanted({"JOURNAL_STREAM": "1:2"}, stderr_fd=fh.fileno())


def test_journal_lines_carry_the_syslog_priority_and_no_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Under journald: `<6>name: message` for info, `<4>` warning, `<3>` error; no timestamp."""
    with open(tmp_path / "journal.log", "w") as fh:
        st = os.fstat(fh.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        setup_logging("info", stream=fh)
        log = logging.getLogger("edge_provision.test")
        log.debug("not shown")
        log.info("child exited command=%s", "enroll")
        log.warning("retrying")
        log.error("failed")
    assert (tmp_path / "journal.log").read_text().splitlines() == [
        "<6>edge_provision.test: child exited command=enroll",
        "<4>edge_provision.test: retrying",
        "<3>edge_provision.test: failed",
    ]


def test_a_stream_that_is_not_the_journal_gets_times(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """JOURNAL_STREAM naming another file (stderr redirected): plain lines with a time."""
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")
    with open(tmp_path / "plain.log", "w") as fh:
        setup_logging("info", stream=fh)
        logging.getLogger("edge_provision.test").info("hello")
    line = (tmp_path / "plain.log").read_text().strip()
    assert line.endswith("INFO edge_provision.test: hello") and line[:4].isdigit()


def test_registered_secrets_are_masked_in_messages_and_tracebacks() -> None:
    """A registered thing key never reaches a line, in the message or in a traceback."""
    register_secret("thing-key-5f0c1d2e-never-logged")
    out = io.StringIO()
    setup_logging("info", stream=out)
    log = logging.getLogger("edge_provision.test")
    log.info("connecting with password=%s", "thing-key-5f0c1d2e-never-logged")
    try:
        raise ValueError("refused thing-key-5f0c1d2e-never-logged")
    except ValueError:
        log.exception("unexpected")
    text = out.getvalue()
    assert "thing-key-5f0c1d2e-never-logged" not in text
    assert text.count("<redacted>") >= 2 and "Traceback" in text


def test_a_loaded_thing_key_is_masked_from_then_on(tmp_path: Path) -> None:
    """Thing keys (MQTT passwords) are registered wherever they are loaded: as StoredThing."""
    from edge_provision.agent.store import StoredThing

    key = "4a7c2e90-1b3d-4f5e-8a6b-0c9d8e7f6a51"
    StoredThing("thing-1", "gateway", key)
    out = io.StringIO()
    setup_logging("info", stream=out)
    logging.getLogger("edge_provision.test").warning("mqtt refused user=thing-1 password=%s", key)
    assert key not in out.getvalue() and "password=<redacted>" in out.getvalue()


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
