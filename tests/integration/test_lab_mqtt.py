"""serve --mqtt: a real mosquitto whose password and ACL files follow the lab's things."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from _mqtt_lab import (
    MOSQUITTO,
    Subscriber,
    channel_of,
    lab_server,
    mapping,
    needs_mosquitto,
    wait_until,
)

from edge_provision.agent import mqtt
from edge_provision.errors import MqttAuthError
from edge_provision.lab.mosquitto import ADMIN_USER, PROBE_USER, check_password
from edge_provision.settings import load_lab_settings

pytestmark = needs_mosquitto


def _port(url: str) -> int:
    return mqtt.parse_broker_url(url).port


def test_thing_publishes_on_its_data_channel_and_wrong_key_is_refused(tmp_path: Path) -> None:
    """Provisioned thing connects with id/key and its data reaches a subscriber; a bad key fails."""
    with lab_server(tmp_path) as server:
        assert server.mqtt is not None
        body = mapping(server, tmp_path, "aa:00:00:00:00:01")
        thing = body["things"][0]  # type: ignore[index]
        data = channel_of(body, "data")
        url = server.mqtt.urls[0]
        sub = Subscriber(_port(url), ADMIN_USER, server.mqtt.admin_password, "channels/#")
        try:
            target = mqtt.MqttTarget(url, thing["id"], thing["key"])
            wait_until(lambda: _connects(target), timeout_s=10)
            report = mqtt.verify_credentials(url, thing["id"], thing["key"],
                                             channel_of(body, "control"), timeout_s=5)
            assert report.published_on == f"channels/{channel_of(body, 'control')}/messages/res"
            session = mqtt._Session(target, time.monotonic() + 5)
            session.connect()
            session.publish(f"channels/{data}/messages/temp", b'[{"n":"temp","v":21.5}]')
            session.close()
            got = wait_until(lambda: [m for m in sub.received() if m[0].startswith(
                f"channels/{data}/")], timeout_s=5)
            assert got[0] == (f"channels/{data}/messages/temp", b'[{"n":"temp","v":21.5}]')
            with pytest.raises(MqttAuthError, match="not authorized"):
                mqtt.verify_credentials(url, thing["id"], "wrong-key", None, timeout_s=5)
        finally:
            sub.close()


def _connects(target: mqtt.MqttTarget) -> bool:
    try:
        mqtt.verify_credentials(target.url, target.username, target.password, None, timeout_s=2)
    except MqttAuthError:
        return False
    return True


def test_channel_not_connected_is_denied_and_new_things_need_no_restart(tmp_path: Path) -> None:
    """A thing cannot publish to or read another gateway's channel; mosquitto keeps its pid."""
    with lab_server(tmp_path) as server:
        assert server.mqtt is not None and server.mqtt._process is not None
        pid = server.mqtt._process.pid
        url = server.mqtt.urls[0]
        first = mapping(server, tmp_path, "aa:00:00:00:00:01")
        second = mapping(server, tmp_path, "aa:00:00:00:00:02")
        a, b = first["things"][0], second["things"][0]  # type: ignore[index]
        target_b = mqtt.MqttTarget(url, b["id"], b["key"])
        wait_until(lambda: _connects(target_b), timeout_s=10)  # picked up by SIGHUP
        assert server.mqtt._process.pid == pid
        assert server.mqtt.reloads >= 1
        other = channel_of(second, "data")
        sub = Subscriber(_port(url), ADMIN_USER, server.mqtt.admin_password, "channels/#")
        spy = None
        try:
            session = mqtt._Session(mqtt.MqttTarget(url, a["id"], a["key"]), time.monotonic() + 5)
            session.connect()
            session.publish(f"channels/{other}/messages", b"intrusion")
            session.publish(f"channels/{channel_of(first, 'data')}/messages", b"mine")
            session.close()
            wait_until(lambda: any(p == b"mine" for _, p in sub.received()), timeout_s=5)
            assert all(p != b"intrusion" for _, p in sub.received())
            # reading: a, subscribed to its own channel and to b's, gets only its own; the
            # marker on its own channel is published after the secret, so once the marker
            # is in, the secret would have been too
            own = channel_of(first, "data")
            spy = Subscriber(_port(url), a["id"], a["key"], f"channels/{own}/messages/#")
            acked = threading.Event()
            spy.client.on_subscribe = lambda *_a: acked.set()
            spy.client.subscribe(f"channels/{other}/messages/#", qos=1)
            assert acked.wait(10)
            sub.publish(f"channels/{other}/messages/x", b"secret")
            sub.publish(f"channels/{own}/messages/x", b"marker")
            wait_until(lambda: any(p == b"marker" for _, p in spy.received()), timeout_s=5)
            wait_until(lambda: any(p == b"secret" for _, p in sub.received()), timeout_s=5)
            assert all(p != b"secret" for _, p in spy.received())
        finally:
            sub.close()
            if spy is not None:
                spy.close()


def test_password_file_is_mosquitto_format(tmp_path: Path) -> None:
    """The passwd file holds one $7$ line per thing plus the admin and the probe, each valid."""
    with lab_server(tmp_path) as server:
        assert server.mqtt is not None
        body = mapping(server, tmp_path, "aa:00:00:00:00:03")
        thing = body["things"][0]  # type: ignore[index]
        passwd = server.mqtt.directory / "passwd"
        wait_until(lambda: thing["id"] in passwd.read_text(), timeout_s=5)
        entries = dict(line.split(":", 1) for line in passwd.read_text().splitlines())
        assert set(entries) == {thing["id"], ADMIN_USER, PROBE_USER}
        assert check_password(entries[thing["id"]], thing["key"])
        assert passwd.stat().st_mode & 0o777 == 0o600
        acl = server.mqtt.directory / "acl"
        rule = f"topic readwrite channels/{channel_of(body, 'data')}/messages/#"
        wait_until(lambda: rule in acl.read_text(), timeout_s=5)  # written after passwd


def test_operator_mode_only_maintains_files(tmp_path: Path) -> None:
    """--mosquitto-config-dir writes passwd/acl/crl.pem there and starts no broker."""
    from edge_provision.lab.server import start_in_thread

    conf_dir = tmp_path / "mosq"
    settings = load_lab_settings({"state_dir": tmp_path / "lab", "port": 0,
                                  "mosquitto_config_dir": conf_dir, "log_level": "warning"},
                                 env={})  # fmt: skip
    server = start_in_thread(settings)
    try:
        assert server.mqtt is not None and server.mqtt._process is None
        body = mapping(server, tmp_path, "aa:00:00:00:00:04")
        thing_id = body["things"][0]["id"]  # type: ignore[index]
        wait_until(lambda: thing_id in (conf_dir / "acl").read_text(), timeout_s=5)
        assert (conf_dir / "crl.pem").read_text().startswith("-----BEGIN X509 CRL-----")
        assert "mosquitto files" in server.mqtt.banner_lines()[0]
    finally:
        server.stop()


def test_serve_banner_prints_broker_urls(tmp_path: Path) -> None:
    """`serve --mqtt --mqtt-tls-port 0` prints the tcp:// and ssl:// URLs, then stops on SIGTERM."""
    env = dict(os.environ, EDGE_PROVISION_LAB_MOSQUITTO_BIN=MOSQUITTO or "mosquitto")
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_provision", "--state-dir", str(tmp_path / "lab"), "serve",
         "--port", "0", "--mqtt", "--mqtt-port", "0", "--mqtt-tls-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.strip())
            if line.startswith("press Ctrl-C"):
                break
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        if proc.stdout is not None:
            proc.stdout.close()
    brokers = [line for line in lines if line.startswith("mqtt broker: ")]
    assert [b.split("://")[0] for b in brokers] == ["mqtt broker: tcp", "mqtt broker: ssl"]
    assert all("127.0.0.1:" in b for b in brokers)
    assert proc.returncode == 0
