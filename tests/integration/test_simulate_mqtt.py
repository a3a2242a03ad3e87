"""``simulate --mqtt-url``: the gateways connect to the lab's real mosquitto with their keys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests
from _mqtt_lab import lab_server, needs_mosquitto, token, wait_until

from edge_provision.agent import mqtt
from edge_provision.cli import main
from edge_provision.errors import MqttAuthError

pytestmark = needs_mosquitto


def _simulate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[object, dict[str, Any]]:
    with pytest.raises(SystemExit) as exited:
        main(["simulate", "--json", "--gateways", "6", "--seed", "7", "--no-csr",
              "--time-scale", "0.01", *args])
    return exited.value.code, json.loads(capsys.readouterr().out)


def test_rebooted_fleet_passes_the_mqtt_check(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Once the broker knows the things, every gateway connects and publishes: exit 0."""
    with lab_server(tmp_path) as server:
        assert server.mqtt is not None
        url, secret = server.mqtt.urls[0], token(server, tmp_path)
        code, first = _simulate(capsys, "--provision-url", server.url, "--token", secret)
        assert code == 0
        things = requests.get(f"{server.url}/things?limit=100", timeout=10, headers={
            "Authorization": f"Bearer {secret}"}).json()["things"]

        def all_known() -> bool:
            # the lab rewrites mosquitto's password file after a mapping, asynchronously
            try:
                for thing in things:
                    mqtt.verify_credentials(url, thing["id"], thing["key"], None, timeout_s=2)
            except MqttAuthError:
                return False
            return True

        wait_until(all_known, timeout_s=30)
        code, again = _simulate(capsys, "--provision-url", server.url, "--token", secret,
                                "--mqtt-url", url)
    run = again["run"]
    assert code == 0 and again["fleet"]["mqtt_url"] == url
    assert again["fleet"]["run_name"] == first["fleet"]["run_name"]
    assert run["mappings_created"] == 0  # the same fleet, rebooted: lookups find the configs
    assert run["enrolled"] == 6 and run["steps"]["mqtt"]["count"] == 6
    assert again["audit"]["ok"]


def test_a_fresh_fleet_passes_the_mqtt_check(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """New gateways connect at once: a refusal while the broker reloads is retried (grace)."""
    with lab_server(tmp_path) as server:
        assert server.mqtt is not None
        url, secret = server.mqtt.urls[0], token(server, tmp_path)
        code, doc = _simulate(capsys, "--provision-url", server.url, "--token", secret,
                              "--mqtt-url", url)
    run = doc["run"]
    assert code == 0, doc
    assert run["mappings_created"] == 6 and run["enrolled"] == 6
    assert run["steps"]["mqtt"]["count"] == 6 and doc["audit"]["ok"]
