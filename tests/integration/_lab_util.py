"""Helpers shared by the lab server tests: settings for a throwaway lab on 127.0.0.1."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from edge_provision.settings import LabSettings, load_lab_settings


def lab_settings(tmp_path: Path, env: dict[str, str] | None = None, **overrides: object
                 ) -> LabSettings:
    """Settings for a lab server on 127.0.0.1:0 with its state under ``tmp_path``."""
    base = load_lab_settings({"state_dir": tmp_path / "lab", "port": 0}, env=env or {})
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]
