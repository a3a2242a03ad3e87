"""Shared fixtures: isolate every test from the caller's environment and files."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
                       ) -> Iterator[None]:
    """No EDGE_PROVISION_*/MF_* variable or systemd directory from outside leaks into a test."""
    for name in list(os.environ):
        if name.startswith(("EDGE_PROVISION_", "MF_")) or name in (
            "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "STATE_DIRECTORY",
            "CONFIGURATION_DIRECTORY", "JOURNAL_STREAM",
        ):
            monkeypatch.delenv(name, raising=False)
    # a real /etc/edge-provision/config.toml on this machine must not change what tests see
    monkeypatch.setenv("CONFIGURATION_DIRECTORY", str(tmp_path_factory.mktemp("etc")))
    yield
