"""Hand-off: Agent config.toml and environment file, Export config, hook environment.

The deploy hooks themselves (processes): tests/integration/test_agent_handoff_hooks.py.
"""

from __future__ import annotations

import json
import os
import pwd
import sys
from pathlib import Path

import pytest

from edge_provision.agent.handoff import (
    hand_off,
    hook_environment,
    render_agent_config,
    render_agent_env,
    render_export_config,
    to_toml,
)
from edge_provision.agent.store import Generation, GenerationData, Store, StoredChannel, StoredThing
from edge_provision.settings import AgentSettings, load_agent_settings
from edge_provision.testing import ThrowawayCA

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

GW = "5d0f1c2a-7c1e-4b7e-9a55-0b7f3f0a1e11"
GW_KEY = "e6b3a4c0-2f0e-4e43-8f3f-6b8d1c0c9a22"
CONTROL = "9a1b2c3d-1111-4a4a-8b8b-0c0c0c0c0c01"
DATA = "9a1b2c3d-2222-4a4a-8b8b-0c0c0c0c0c02"
EXPORT = "9a1b2c3d-3333-4a4a-8b8b-0c0c0c0c0c03"
CONTENT = {
    "agent": {
        "server": {"port": "9001", "nats_url": "nats://127.0.0.1:4222"},
        "mqtt": {"url": "ssl://mqtt.example.net:8883", "qos": 1, "retain": False},
        "heartbeat": {"interval": "30s"},
        "terminal": {"session_timeout": 60_000_000_000},
        "log": {"level": "debug"},
    },
    "export": {
        "exp": {"nats": "nats://127.0.0.1:4222", "port": "8170"},
        "mqtt": {"host": "ssl://mqtt.example.net:8883", "qos": 0},
        "routes": [{"nats_topic": "export", "mqtt_topic": "", "type": "plain", "workers": 10},
                   {"nats_topic": "x", "mqtt_topic": "custom/topic", "type": "mfx"}],
    },
}


def make_generation(tmp_path: Path, *, content: object = CONTENT, certs: bool = True
                    ) -> tuple[Store, Generation]:
    """A store with one current generation: data channel listed BEFORE control."""
    store = Store(tmp_path / "agent")
    certificates: dict[str, tuple[str, str]] = {}
    ca_pem = None
    if certs:
        ca = ThrowawayCA(tmp_path / "ca")
        certificates[GW] = ca.issue_client(GW)
        ca_pem = ca.cert_pem
    data = GenerationData(
        things=(StoredThing(GW, "gw", GW_KEY, {"external_id": "aa"}),),
        channels=(StoredChannel(DATA, "data", {"type": "data"}),
                  StoredChannel(CONTROL, "control", {"type": "control"}),
                  StoredChannel(EXPORT, "export", {"type": "export"})),
        gateway_thing_id=GW, bootstrap_content=json.dumps(content) if content else "",
        source="mapping", external_id="aa", certificates=certificates, ca_pem=ca_pem,
    )
    with store.lock():
        number = store.write_generation(data)
        store.switch_current(number)
    return store, store.load_generation(number)


def settings_for(tmp_path: Path, **flags: object) -> AgentSettings:
    """Agent settings with the state dir under ``tmp_path``."""
    return load_agent_settings({"state_dir": tmp_path / "agent", **flags}, env={})


def test_to_toml_round_trips_through_tomllib() -> None:
    """Strings with quotes, newlines and PEM, nested tables and arrays of tables parse back."""
    doc = {"File": "a \"b\" \\ c", "pem": "-----BEGIN X-----\nAA==\n-----END X-----\n",
           "n": 3, "f": 1.5, "on": True, "list": ["a", 1], "ctl": "\x01",
           "t": {"inner": {"k": "v"}, "dotted.key": 1},
           "routes": [{"a": 1}, {"a": 2, "sub": {"x": "y"}}]}
    assert tomllib.loads(to_toml(doc)) == doc


def test_to_toml_refuses_what_toml_cannot_hold() -> None:
    """NaN and arbitrary objects are a ValueError, not a broken file."""
    with pytest.raises(ValueError):
        to_toml({"x": float("nan")})
    with pytest.raises(ValueError):
        to_toml({"x": object()})


def test_agent_config_picks_channels_by_type_and_fills_mqtt(tmp_path: Path) -> None:
    """control/data come from metadata.type (not position); MQTT from the gateway thing."""
    _, gen = make_generation(tmp_path)
    settings = settings_for(tmp_path, agent_config=tmp_path / "agent.toml")
    doc = tomllib.loads(render_agent_config(settings, gen))
    assert doc["channels"] == {"control": CONTROL, "data": DATA}
    mqtt = doc["mqtt"]
    assert mqtt["username"] == GW and mqtt["password"] == GW_KEY
    assert mqtt["url"] == "ssl://mqtt.example.net:8883" and mqtt["qos"] == 1
    assert mqtt["skip_tls_ver"] is False and mqtt["mtls"] is False
    current = tmp_path / "agent" / "current"
    assert mqtt["cert_path"] == str(current / f"{GW}.crt")
    assert mqtt["priv_key_path"] == str(current / f"{GW}.key")
    assert mqtt["ca_path"] == str(current / "ca.crt")
    assert "BEGIN CERTIFICATE" in mqtt["client_cert"] and "PRIVATE KEY" in mqtt["client_key"]
    assert doc["server"] == {"port": "9001", "nats_url": "nats://127.0.0.1:4222"}
    assert doc["heartbeat"]["interval"] == "30s"
    assert doc["terminal"]["session_timeout"] == "60s"
    assert doc["log"]["level"] == "debug" and doc["File"] == str(tmp_path / "agent.toml")


def test_agent_config_defaults_without_content_or_certs(tmp_path: Path) -> None:
    """Empty content gives the Agent's defaults; mqtt_url setting wins; no cert paths."""
    _, gen = make_generation(tmp_path, content=None, certs=False)
    settings = settings_for(tmp_path, mqtt_url="tcp://127.0.0.1:1883")
    doc = tomllib.loads(render_agent_config(settings, gen))
    assert doc["mqtt"]["url"] == "tcp://127.0.0.1:1883"
    assert doc["mqtt"]["cert_path"] == "" and doc["mqtt"]["client_key"] == ""
    assert doc["heartbeat"]["interval"] == "10s" and doc["log"]["level"] == "info"


def test_agent_env_file_has_the_variables_the_agent_reads(tmp_path: Path) -> None:
    """MF_AGENT_* with credentials, channels, cert paths and bootstrap disabled."""
    _, gen = make_generation(tmp_path)
    text = render_agent_env(settings_for(tmp_path), gen)
    lines = dict(line.split("=", 1) for line in text.splitlines() if not line.startswith("#"))
    values = {k: v.strip('"') for k, v in lines.items()}
    assert values["MF_AGENT_BOOTSTRAP_RETRIES"] == "0"
    assert values["MF_AGENT_MQTT_USERNAME"] == GW and values["MF_AGENT_MQTT_PASSWORD"] == GW_KEY
    assert values["MF_AGENT_CONTROL_CHANNEL"] == CONTROL
    assert values["MF_AGENT_DATA_CHANNEL"] == DATA
    assert values["MF_AGENT_MQTT_URL"] == "ssl://mqtt.example.net:8883"
    assert values["MF_AGENT_MQTT_CLIENT_CERT"].endswith(f"current/{GW}.crt")
    assert values["MF_AGENT_MQTT_CLIENT_PK"].endswith(f"current/{GW}.key")
    assert values["MF_AGENT_MQTT_CA"].endswith("current/ca.crt")
    assert values["MF_AGENT_MQTT_MTLS"] == "false"
    assert values["MF_AGENT_HEARTBEAT_INTERVAL"] == "30s"


def test_export_config_fills_credentials_and_default_topic(tmp_path: Path) -> None:
    """Empty mqtt_topic routes go to the data channel; credentials filled from the thing."""
    _, gen = make_generation(tmp_path)
    text = render_export_config(settings_for(tmp_path), gen, tmp_path / "export.toml")
    assert text is not None
    doc = tomllib.loads(text)
    assert doc["routes"][0]["mqtt_topic"] == f"channels/{DATA}/messages"
    assert doc["routes"][1]["mqtt_topic"] == "custom/topic"
    assert doc["mqtt"]["username"] == GW and doc["mqtt"]["password"] == GW_KEY
    assert doc["mqtt"]["host"] == "ssl://mqtt.example.net:8883"
    assert doc["File"] == str(tmp_path / "export.toml")


def test_no_export_section_means_no_export_config(tmp_path: Path) -> None:
    """Content without ``export`` renders nothing and hand_off writes no file."""
    store, gen = make_generation(tmp_path, content={"agent": {}})
    settings = settings_for(tmp_path, export_config=tmp_path / "export.toml")
    assert render_export_config(settings, gen) is None
    report = hand_off(settings, gen, "aa", store=store)
    assert report.ok and report.files == () and not (tmp_path / "export.toml").exists()


def test_hand_off_writes_files_with_the_configured_mode(tmp_path: Path) -> None:
    """Agent config, env file and export config are written atomically with file_mode."""
    store, gen = make_generation(tmp_path)
    settings = settings_for(tmp_path, agent_config=tmp_path / "etc" / "agent.toml",
                            agent_env=tmp_path / "etc" / "agent.env",
                            export_config=tmp_path / "etc" / "export.toml", file_mode="0600")
    report = hand_off(settings, gen, "aa", store=store)
    assert report.ok and len(report.files) == 3
    for name in ("agent.toml", "agent.env", "export.toml"):
        assert (tmp_path / "etc" / name).stat().st_mode & 0o777 == 0o600
    assert store.load_state().journal[-1].step == "handoff"
    assert store.load_state().journal[-1].status == "done"


def test_hook_environment_is_complete(tmp_path: Path) -> None:
    """Every documented variable is present."""
    _, gen = make_generation(tmp_path)
    env = hook_environment(settings_for(tmp_path), gen, "aa")
    assert set(env) == {
        "EDGE_PROVISION_STATE_DIR", "EDGE_PROVISION_GENERATION", "EDGE_PROVISION_GENERATION_DIR",
        "EDGE_PROVISION_EXTERNAL_ID", "EDGE_PROVISION_THING_ID", "EDGE_PROVISION_CONTROL_CHANNEL",
        "EDGE_PROVISION_DATA_CHANNEL", "EDGE_PROVISION_EXPORT_CHANNEL",
        "EDGE_PROVISION_CHANNEL_IDS", "EDGE_PROVISION_CERT_PATH", "EDGE_PROVISION_KEY_PATH",
        "EDGE_PROVISION_CA_PATH"}
    assert env["EDGE_PROVISION_GENERATION_DIR"] == str(gen.path)


def test_owner_setting(tmp_path: Path) -> None:
    """chown works as root; otherwise the report says why; unknown users are an error."""
    store, gen = make_generation(tmp_path)
    target = tmp_path / "agent.toml"
    bad = hand_off(settings_for(tmp_path, agent_config=target, file_owner="no-such-user-x1"),
                   gen, "aa", store=store)
    assert not bad.ok and "no such user" in bad.errors[0]
    nobody = pwd.getpwnam("nobody")
    report = hand_off(settings_for(tmp_path, agent_config=target, file_owner="nobody"),
                      gen, "aa", store=store)
    if os.geteuid() == 0:
        assert report.ok and target.stat().st_uid == nobody.pw_uid
    else:
        assert not report.ok and "run edge-provision as root" in report.errors[0]
    state = store.load_state()
    assert state.last_error is None or state.last_error.kind == "HandoffFailed"
