"""Helpers for the MQTT/renewal integration tests: a lab server with a real mosquitto.

Not a test module (leading underscore); imported by test_lab_mqtt*, test_mqtt*, test_renew*.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from edge_provision.lab.server import RunningLabServer, start_in_thread
from edge_provision.settings import AgentSettings, load_agent_settings, load_lab_settings

MOSQUITTO = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")

needs_mosquitto = [
    pytest.mark.mosquitto,
    pytest.mark.skipif(MOSQUITTO is None,
                       reason="mosquitto binary not installed (apt install mosquitto)"),
]


@contextlib.contextmanager
def lab_server(tmp_path: Path, **flags: object) -> Iterator[RunningLabServer]:
    """A lab server on 127.0.0.1:<free> with a mosquitto on free ports (``mqtt`` on)."""
    base: dict[str, object] = {"state_dir": tmp_path / "lab", "port": 0, "mqtt": True,
                               "mqtt_port": 0, "log_level": "warning"}
    base.update(flags)
    env = {"EDGE_PROVISION_LAB_MOSQUITTO_BIN": MOSQUITTO or "mosquitto"}
    settings = load_lab_settings(base, env=env)
    server = start_in_thread(settings)
    try:
        yield server
    finally:
        server.stop()


def token(server: RunningLabServer, tmp_path: Path) -> str:
    """The lab's generated operator token."""
    return (tmp_path / "lab" / "api-token").read_text().strip()


def mapping(server: RunningLabServer, tmp_path: Path, external_id: str,
            external_key: str = "ext-key") -> dict[str, object]:
    """POST /mapping and return the body."""
    r = requests.post(f"{server.url}/mapping", timeout=10,
                      json={"external_id": external_id, "external_key": external_key},
                      headers={"Authorization": f"Bearer {token(server, tmp_path)}"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert isinstance(body, dict)
    return body


def channel_of(body: dict[str, object], kind: str) -> str:
    """Id of the channel of metadata type ``kind`` in a mapping body."""
    channels = body["channels"]
    assert isinstance(channels, list)
    return next(str(c["id"]) for c in channels if c["metadata"].get("type") == kind)


def agent_settings(tmp_path: Path, server: RunningLabServer, *, url_index: int = 0,
                   env: dict[str, str] | None = None, **flags: object) -> AgentSettings:
    """Agent settings pointing at ``server`` and its broker (MQTT verification always)."""
    assert server.mqtt is not None
    full_env = {
        "CONFIGURATION_DIRECTORY": str(tmp_path / "etc"),
        "EDGE_PROVISION_MQTT_URL": server.mqtt.urls[url_index],
        "EDGE_PROVISION_MQTT_VERIFY": "always",
        "EDGE_PROVISION_MQTT_TIMEOUT": "5",
        "EDGE_PROVISION_BACKOFF_INITIAL": "1",
    }
    full_env.update(env or {})
    base: dict[str, object] = {"state_dir": tmp_path / "gw", "provision_url": server.url,
                               "external_id": "02:42:ac:11:00:07", "external_key": "gw-key",
                               "token": token(server, tmp_path), "log_level": "warning"}
    base.update(flags)
    return load_agent_settings(base, env=full_env)


def wait_until(predicate, timeout_s: float = 10.0, interval_s: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until truthy (returned) or fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s} s (last value {last!r})")


class Subscriber:
    """A paho client (the lab admin user by default) collecting messages of one topic filter."""

    def __init__(self, url_port: int, username: str, password: str, topic: str) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"test-sub-{id(self)}")
        self.client.username_pw_set(username, password)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_a: self._subscribed.set()
        self.client.on_connect = lambda c, *_a: c.subscribe(topic, qos=1)
        self.client.connect("127.0.0.1", url_port, keepalive=10)
        self.client.loop_start()
        assert self._subscribed.wait(10), "subscription not acknowledged"

    def _on_message(self, _c: object, _u: object, message: object) -> None:
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload)))  # type: ignore[attr-defined]

    def received(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return list(self.messages)

    def publish(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout=5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def senml(payload: bytes) -> list[dict[str, object]]:
    """Decode a SenML payload."""
    doc = json.loads(payload)
    assert isinstance(doc, list)
    return doc
