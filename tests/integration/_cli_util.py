"""Helpers of the CLI tests: a lab server in a thread and the agent run as a technician runs it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import requests

from edge_provision.agent.store import Phase, State, Store
from edge_provision.lab.server import TOKEN_FILE, RunningLabServer, start_in_thread
from edge_provision.settings import load_lab_settings

EXT_ID = "02:42:ac:11:00:42"
EXT_KEY = "cli-test-external-key-42"
TIMEOUT_S = 60


@contextlib.contextmanager
def lab_server(tmp_path: Path) -> Iterator[RunningLabServer]:
    """A lab server (in a thread, 127.0.0.1, any port) with its state in ``tmp_path/lab``."""
    server = start_in_thread(load_lab_settings({"state_dir": tmp_path / "lab", "port": 0},
                                               env={}))
    try:
        yield server
    finally:
        server.stop()


def token(tmp_path: Path) -> str:
    """The lab's operator token."""
    return (tmp_path / "lab" / TOKEN_FILE).read_text().strip()


def cli_env(tmp_path: Path, url: str | None = None, key: str = EXT_KEY) -> dict[str, str]:
    """The environment of an agent command: identity (and lab URL and token) from variables."""
    env = dict(os.environ)
    env.update({"EDGE_PROVISION_EXTERNAL_ID": EXT_ID, "EDGE_PROVISION_EXTERNAL_KEY": key,
                "EDGE_PROVISION_MQTT_VERIFY": "never"})
    if url is not None:
        env["EDGE_PROVISION_PROVISION_URL"] = url
        env["EDGE_PROVISION_TOKEN"] = token(tmp_path)
    return env


def cli_argv(tmp_path: Path, *args: str, state: str = "agent") -> list[str]:
    """``python -m edge_provision --state-dir <tmp>/<state> ARGS``."""
    return [sys.executable, "-m", "edge_provision", "--state-dir", str(tmp_path / state), *args]


def cli(tmp_path: Path, *args: str, url: str | None = None, key: str = EXT_KEY,
        state: str = "agent") -> subprocess.CompletedProcess[str]:
    """Run ``python -m edge_provision --state-dir <tmp>/agent ARGS`` with secrets in env."""
    return subprocess.run(cli_argv(tmp_path, *args, state=state),
                          env=cli_env(tmp_path, url, key), capture_output=True, text=True,
                          timeout=TIMEOUT_S, stdin=subprocess.DEVNULL, check=False)


def secrets_of(tmp_path: Path, lab: RunningLabServer) -> list[str]:
    """external_key, operator token and every thing key on the platform."""
    reply = requests.get(f"{lab.url}/things", timeout=10,
                         headers={"Authorization": f"Bearer {token(tmp_path)}"})
    keys = [t["key"] for t in reply.json()["things"]]
    return [EXT_KEY, token(tmp_path), *keys]


def assert_clean(done: subprocess.CompletedProcess[str], secrets: list[str]) -> None:
    """No secret in stdout or stderr."""
    for secret in secrets:
        assert secret not in done.stdout and secret not in done.stderr


EXTREME_TIMES = ["0001-01-01T00:00:00+00:00", "9999-12-31T23:59:59+00:00",
                 "0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"]


def save_extreme_state(state_dir: Path, when: str, phase: Phase = Phase.PROVISIONED) -> None:
    """A state.json whose every time (journal, last error, next action) is ``when``."""
    store = Store(state_dir)
    with store.lock():
        state = State(phase=phase, next_action="renew", next_action_at=when)
        state = state.record("renew", "done", {"last_renewal": when}, at=when)
        store.save_state(state.with_error("ServiceUnavailable", "503", at=when))
