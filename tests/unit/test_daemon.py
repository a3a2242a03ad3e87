"""The supervisor's small pure helpers: child argv, policy, clock, reading a child's JSON."""

from __future__ import annotations

import sys
from datetime import timezone
from pathlib import Path

import pytest

from edge_provision.agent.daemon.children import error_of as _error_of
from edge_provision.agent.daemon.supervisor import (
    CHILD_ENV_DROP,
    SystemClock,
    command_prefix,
    policy_of,
)
from edge_provision.cli._daemon import lean_daemon_args
from edge_provision.settings import load_agent_settings


def test_command_prefix_repeats_only_the_global_options_given() -> None:
    """The child runs `python -m edge_provision` with run's --config/--state-dir/--log-level."""
    assert command_prefix() == [sys.executable, "-m", "edge_provision"]
    assert command_prefix(config=Path("/etc/e/c.toml"), state_dir=Path("/var/lib/e"),
                          log_level="debug", python="/opt/py") == [
        "/opt/py", "-m", "edge_provision", "--config", "/etc/e/c.toml",
        "--state-dir", "/var/lib/e", "--log-level", "debug",
    ]
    assert command_prefix(log_level="info")[-2:] == ["--log-level", "info"]


def test_policy_comes_from_the_settings(tmp_path: Path) -> None:
    """backoff_initial_s, backoff_cap_s and permanent_retry_s drive the schedule."""
    settings = load_agent_settings(env={
        "EDGE_PROVISION_STATE_DIR": str(tmp_path),
        "EDGE_PROVISION_BACKOFF_INITIAL": "0.2", "EDGE_PROVISION_BACKOFF_CAP": "1m",
        "EDGE_PROVISION_PERMANENT_RETRY": "2h",
    })
    policy = policy_of(settings)
    assert (policy.backoff.initial_s, policy.backoff.cap_s) == (0.2, 60.0)
    assert policy.permanent_retry_s == 7200.0
    defaults = policy_of(load_agent_settings(env={"EDGE_PROVISION_STATE_DIR": str(tmp_path)}))
    assert (defaults.backoff.initial_s, defaults.backoff.cap_s) == (2.0, 300.0)
    assert defaults.permanent_retry_s == 3600.0


def test_system_clock_is_utc_and_monotonic() -> None:
    """now() is timezone-aware UTC; monotonic() never goes back."""
    clock = SystemClock()
    assert clock.now().tzinfo is timezone.utc
    first = clock.monotonic()
    assert clock.monotonic() >= first


def test_children_never_see_the_notify_socket() -> None:
    """Only the supervisor talks to systemd: these variables are dropped for children."""
    assert set(CHILD_ENV_DROP) == {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"}


@pytest.mark.parametrize(
    ("stdout", "expected"),
    [
        (b'{"ok": false, "error": {"kind": "Unauthorized", "message": "401"}}',
         ("Unauthorized", "401", None, True)),
        (b'{"ok": false, "error": {"kind": "LockBusy", "message": "held", "reason": "busy"}}',
         ("LockBusy", "held", "busy", True)),
        (b'{"ok": false, "error": {"kind": 3, "reason": 4}}', (None, None, None, True)),
        (b'{"ok": false}', (None, None, None, True)),
        (b'{"ok": true, "generation": 2}', (None, None, None, False)),
        (b"[1, 2]", (None, None, None, False)),
        (b"Traceback (most recent call last):", (None, None, None, False)),
        (b"\xff\xfe", (None, None, None, False)),
        (b"", (None, None, None, False)),
    ],
)
def test_error_document_of_a_child(stdout: bytes, expected: tuple[object, ...]) -> None:
    """Only {"ok": false, "error": {...}} counts as an error document; kind/message/reason read."""
    assert _error_of(stdout) == expected


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["run"], (None, None, None)),
        (["--state-dir", "/var/lib/e", "run"], (None, Path("/var/lib/e"), None)),
        (["--config=/etc/e/c.toml", "--log-level", "debug", "run"],
         (Path("/etc/e/c.toml"), None, "debug")),
        (["--log-level", "loud", "run"], None),  # click says what is wrong
        (["run", "--help"], None),
        (["--help"], None),
        (["status"], None),
        (["--state-dir", "run"], None),
        (["--state-dir", "/a", "--state-dir", "/b", "run"], None),
        (["--verbose", "run"], None),
        ([], None),
    ],
)
def test_only_a_plain_run_command_line_skips_click(argv: list[str],
                                                   expected: tuple[object, ...] | None) -> None:
    """`[--config C] [--state-dir D] [--log-level L] run` starts the daemon without click;
    anything else (help, typos, other commands) goes through click as before."""
    ctx = lean_daemon_args(argv)
    if expected is None:
        assert ctx is None
        return
    assert ctx is not None
    assert (ctx.config, ctx.flags["state_dir"], ctx.flags["log_level"]) == expected


@pytest.mark.parametrize(("deadline", "expected"), [("10m", 600 + 10 + 30), ("1d", 86400 + 10 + 30),
                                                     ("5s", 5 + 1 + 30)])
def test_a_child_may_run_its_whole_run_deadline(tmp_path: Path, deadline: str,
                                                expected: float) -> None:
    """The daemon kills a child only after its run deadline, the backstop's grace and start-up."""
    from edge_provision.agent.daemon.supervisor import Daemon

    settings = load_agent_settings(env={"EDGE_PROVISION_STATE_DIR": str(tmp_path),
                                        "EDGE_PROVISION_RUN_DEADLINE": deadline})
    assert Daemon(settings, env={}).child_timeout_s() == expected
    assert Daemon(settings, env={}, child_timeout_s=3.0).child_timeout_s() == 3.0
