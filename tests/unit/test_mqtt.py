"""Pure parts of mqtt.py: the paho code table, broker URLs, SenML commands and replies."""

from __future__ import annotations

import json
import ssl

import pytest

from edge_provision.agent import mqtt
from edge_provision.errors import ConfigError, MqttAuthError, MqttError, MqttUnavailable


@pytest.mark.parametrize(("code", "cls"), [
    ("connack:134", MqttAuthError),
    ("connack:135", MqttAuthError),
    ("connack:133", MqttAuthError),
    ("connack:136", MqttUnavailable),
    ("connack:137", MqttUnavailable),
    ("connack:132", MqttError),
    ("client:7", MqttUnavailable),
    ("client:5", MqttUnavailable),
    ("closed-before-connack", MqttAuthError),
    ("tls-rejected", MqttAuthError),
    ("tls-untrusted", MqttError),
    ("refused", MqttUnavailable),
    ("timeout", MqttUnavailable),
])
def test_code_table_classes(code: str, cls: type[MqttError]) -> None:
    """Each paho outcome maps to exactly the documented error class."""
    err = mqtt.mqtt_error(code, "tcp://h:1883")
    assert type(err) is cls
    assert str(err).startswith("tcp://h:1883: ")


def test_paho_311_return_codes_are_in_the_table() -> None:
    """paho's conversion of MQTT 3.1.1 CONNACK codes 1..5 lands on table entries."""
    from paho.mqtt.client import convert_connack_rc_to_reason_code

    for rc in range(1, 6):
        value = convert_connack_rc_to_reason_code(rc).value
        assert f"connack:{value}" in mqtt.CODES
    assert type(mqtt.mqtt_error(
        f"connack:{convert_connack_rc_to_reason_code(4).value}", "u")) is MqttAuthError
    assert type(mqtt.mqtt_error(
        f"connack:{convert_connack_rc_to_reason_code(3).value}", "u")) is MqttUnavailable


def test_closed_before_connack_message_names_the_credential_rejection() -> None:
    """The message says that Mainflux closes the connection for bad credentials."""
    message = str(mqtt.mqtt_error("closed-before-connack", "u"))
    assert "before answering CONNECT" in message
    assert "thing id/key" in message


def test_unknown_code_is_plain_mqtt_error() -> None:
    """Codes missing from the table still give an MqttError naming the code."""
    err = mqtt.mqtt_error("connack:250", "u", "detail")
    assert type(err) is MqttError
    assert "connack:250" in str(err) and "detail" in str(err)


def test_socket_and_tls_errors_classified() -> None:
    """Socket/TLS exceptions and paho log texts map onto the table keys."""
    assert mqtt.classify_socket_error(ConnectionRefusedError()) == "refused"
    assert mqtt.classify_socket_error(TimeoutError()) == "timeout"
    assert mqtt.classify_socket_error(ssl.SSLCertVerificationError("x")) == "tls-untrusted"
    assert mqtt.classify_socket_error(OSError("no route")) == "unreachable"
    text = "failed to receive on socket: [SSL: SSLV3_ALERT_CERTIFICATE_REVOKED] sslv3 alert"
    assert mqtt.classify_text(text) == "tls-rejected"
    assert mqtt.classify_text("nothing special") is None


@pytest.mark.parametrize(("url", "host", "port", "tls"), [
    ("tcp://broker:1883", "broker", 1883, False),
    ("ssl://broker:8883", "broker", 8883, True),
    ("mqtts://broker", "broker", 8883, True),
    ("mqtt://10.0.0.1", "10.0.0.1", 1883, False),
    ("localhost:1884", "localhost", 1884, False),
])
def test_broker_urls(url: str, host: str, port: int, tls: bool) -> None:
    """Agent-style broker URLs parse to host, port and TLS."""
    parsed = mqtt.parse_broker_url(url)
    assert (parsed.host, parsed.port, parsed.tls) == (host, port, tls)


@pytest.mark.parametrize("url", ["http://x:1", "tcp://", "ssl://h:99999"])
def test_bad_broker_urls(url: str) -> None:
    """Anything else is a ConfigError naming the expected forms."""
    with pytest.raises(ConfigError, match="MQTT broker URL"):
        mqtt.parse_broker_url(url)


def test_parse_command_agent_format() -> None:
    """bn loses one trailing colon, n is the command, vs the argument."""
    cmd = mqtt.parse_command(b'[{"bn":"req-1:","n":"renew","vs":"now"}, {"n":"ignored"}]')
    assert cmd == mqtt.ControlCommand("req-1", "renew", "now")
    assert mqtt.parse_command(b'[{"n":" status "}]') == mqtt.ControlCommand("", "status", "")


@pytest.mark.parametrize(("payload", "why"), [
    (b"not json", "not UTF-8 JSON"),
    (b"\xff\xfe", "not UTF-8 JSON"),
    (b"{}", "SenML array"),
    (b"[]", "SenML array"),
    (b"[1]", "SenML array"),
    (b'[{"bn":"x:"}]', "no command name"),
    (b'[{"n":""}]', "no command name"),
    (b'[{"n":"renew","bn":5}]', "must be strings"),
    (b"[" + b" " * 5000 + b"]", "at most"),
])
def test_parse_command_rejects_malformed(payload: bytes, why: str) -> None:
    """Malformed commands raise ValueError saying why (the listener logs and ignores them)."""
    with pytest.raises(ValueError, match=why):
        mqtt.parse_command(payload)


def test_reply_and_status_shapes() -> None:
    """Replies copy the Agent's SenML reply; the status record names the thing."""
    reply = json.loads(mqtt.render_reply("req-1", "renew", "ok", at=12.5))
    assert reply == [{"bn": "req-1", "n": "renew", "t": 12.5, "vs": "ok"}]
    status = json.loads(mqtt.status_message("thing-1", "credentials verified", at=1.0))
    assert status == [{"bn": "thing-1:", "n": "edge-provision-status", "t": 1.0,
                       "vs": "credentials verified"}]


def test_verify_rejects_bad_timeout() -> None:
    """A non-positive timeout is a configuration error, before any network use."""
    with pytest.raises(ConfigError, match="timeout"):
        mqtt.verify_credentials("tcp://127.0.0.1:1", "a", "b", None, timeout_s=0)
