"""Helpers shared by the lab server tests: settings for a throwaway lab on 127.0.0.1."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path

from edge_provision.lab.server import TOKEN_FILE, RunningLabServer, start_in_thread
from edge_provision.settings import LabSettings, load_lab_settings


def lab_settings(tmp_path: Path, env: dict[str, str] | None = None, **overrides: object
                 ) -> LabSettings:
    """Settings for a lab server on 127.0.0.1:0 with its state under ``tmp_path``."""
    base = load_lab_settings({"state_dir": tmp_path / "lab", "port": 0}, env=env or {})
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


@contextlib.contextmanager
def serving(settings: LabSettings) -> Iterator[RunningLabServer]:
    """A started lab server, stopped afterwards; no request may have ended in a 500."""
    with start_in_thread(settings) as server:
        yield server
        assert server.service.internal_errors == 0


def operator_auth(tmp_path: Path) -> dict[str, str]:
    """The Authorization header with the token generated for ``lab_settings(tmp_path)``."""
    return {"Authorization": "Bearer " + (tmp_path / "lab" / TOKEN_FILE).read_text().strip()}
