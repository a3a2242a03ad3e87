"""Agent tests against the real lab server: start it, read its token, count what it holds,
and the agent's settings (in-process runs) or environment (``edge-provision`` processes)."""

from __future__ import annotations

import os
from pathlib import Path

import requests

from edge_provision.lab.server import TOKEN_FILE, RunningLabServer, start_in_thread
from edge_provision.settings import AgentSettings, load_agent_settings, load_lab_settings


def start_lab(tmp_path: Path, layout: str | None = None) -> RunningLabServer:
    """A lab server on 127.0.0.1:0 with its state in ``tmp_path/lab`` (built-in layout)."""
    flags: dict[str, object] = {"state_dir": tmp_path / "lab", "port": 0}
    if layout is not None:
        layout_file = tmp_path / "layout.toml"
        layout_file.write_text(layout)
        flags["layout_file"] = layout_file
    return start_in_thread(load_lab_settings(flags, env={}))


def lab_token(lab_dir: Path) -> str:
    """The generated operator token of the lab server in ``lab_dir``."""
    return (lab_dir / TOKEN_FILE).read_text().strip()


def lab_total(url: str, lab_dir: Path, what: str = "things") -> int:
    """How many ``what`` (things, channels) the lab server at ``url`` holds."""
    reply = requests.get(f"{url}/{what}", timeout=10,
                         headers={"Authorization": f"Bearer {lab_token(lab_dir)}"})
    reply.raise_for_status()
    total = reply.json()["total"]
    assert isinstance(total, int)
    return total


def agent_settings(tmp_path: Path, url: str, identity: tuple[str, str],
                   **flags: object) -> AgentSettings:  # fmt: skip
    """Agent settings against ``url`` for ``identity`` (external_id, external_key).

    State in ``tmp_path/agent``, the lab's token from ``tmp_path/lab``, no MQTT check.
    """
    base: dict[str, object] = {"state_dir": tmp_path / "agent", "provision_url": url,
                               "token": lab_token(tmp_path / "lab"), "external_id": identity[0],
                               "external_key": identity[1], "mqtt_verify": "never"}
    base.update(flags)
    return load_agent_settings(base, env={})


def agent_env(tmp_path: Path, url: str, identity: tuple[str, str], lab_dir: Path | None = None,
              **extra: str) -> dict[str, str]:  # fmt: skip
    """The environment of an ``edge-provision`` process: everything in EDGE_PROVISION_*."""
    env = dict(os.environ)
    env.update({
        "EDGE_PROVISION_STATE_DIR": str(tmp_path / "agent"),
        "EDGE_PROVISION_PROVISION_URL": url,
        "EDGE_PROVISION_TOKEN": lab_token(lab_dir or tmp_path / "lab"),
        "EDGE_PROVISION_EXTERNAL_ID": identity[0],
        "EDGE_PROVISION_EXTERNAL_KEY": identity[1],
        "EDGE_PROVISION_MQTT_VERIFY": "never",
    })
    env.update(extra)
    return env
