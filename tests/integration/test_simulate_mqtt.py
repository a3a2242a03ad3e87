"""``simulate --mqtt-url``: the gateways connect to the lab's real mosquitto with their new keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _mqtt_lab import lab_server, needs_mosquitto, token

from edge_provision.cli import main

pytestmark = needs_mosquitto


def test_gateways_connect_with_their_new_credentials(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every enrolled gateway passed the MQTT check; a refusal is the only way to fail it."""
    with lab_server(tmp_path) as server:
        assert server.mqtt is not None
        with pytest.raises(SystemExit) as exited:
            main(["simulate", "--json", "--provision-url", server.url,
                  "--token", token(server, tmp_path), "--gateways", "6", "--ramp", "1.5",
                  "--no-csr", "--mqtt-url", server.mqtt.urls[0], "--time-scale", "0.01"])
        doc = json.loads(capsys.readouterr().out)
    run = doc["run"]
    assert doc["fleet"]["mqtt_url"] == server.mqtt.urls[0]
    assert run["enrolled"] >= 1 and run["steps"]["mqtt"]["count"] == run["enrolled"]
    # the lab rebuilds mosquitto's password file after the mapping, asynchronously: a
    # gateway that connects first is refused, and like the daemon it does not retry that
    assert set(run["failures"]) <= {"MqttAuthError"}
    assert set(run["failed_steps"]) <= {"mqtt"}
    assert exited.value.code == (0 if run["failed"] == 0 else 3)
    assert doc["audit"]["ok"]
