"""Wire-level pieces of :mod:`edge_provision.agent.mqtt` (pure: no paho, no I/O).

The one table of paho outcomes -> error classes (:data:`CODES`), the classification of
socket/TLS failures, broker URLs, and the SenML control-command format. Import these
names from :mod:`edge_provision.agent.mqtt`, which re-exports them.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from edge_provision.errors import ConfigError, MqttAuthError, MqttError, MqttUnavailable

__all__ = [
    "CODES",
    "BrokerUrl",
    "ControlCommand",
    "mqtt_error",
    "parse_broker_url",
    "parse_command",
    "render_reply",
    "status_message",
]

_MAX_COMMAND_BYTES = 4096

_CRED_HINT = "check the thing id/key in the current generation, or run `edge-provision renew`"
CODES: Mapping[str, tuple[type[MqttError], str]] = {
    # CONNACK reason codes; paho turns MQTT 3.1.1 return codes 1..5 into 132..135.
    "connack:128": (MqttError, "the broker refused the connection (unspecified error)"),
    "connack:131": (MqttError, "the broker refused the connection (implementation specific)"),
    "connack:132": (MqttError, "the broker does not support MQTT 3.1.1"),
    "connack:133": (MqttAuthError, "the broker rejected the client identifier"),
    "connack:134": (MqttAuthError, f"bad user name or password (id/key refused); {_CRED_HINT}"),
    "connack:135": (MqttAuthError, f"not authorized: the thing id/key were refused; {_CRED_HINT}"),
    "connack:136": (MqttUnavailable, "the broker is unavailable; it will be retried"),
    "connack:137": (MqttUnavailable, "the broker is busy; it will be retried"),
    "connack:138": (MqttAuthError, "this client is banned by the broker"),
    "connack:140": (MqttAuthError, "bad authentication method"),
    "connack:151": (MqttUnavailable, "broker quota exceeded; it will be retried"),
    "connack:159": (MqttUnavailable, "connection rate exceeded; it will be retried"),
    # paho client error codes (MQTTErrorCode)
    "client:4": (MqttUnavailable, "not connected to the broker"),
    "client:5": (MqttUnavailable, "the broker refused the connection"),
    "client:7": (MqttUnavailable, "the connection to the broker was lost"),
    "client:8": (MqttError, "TLS error talking to the broker"),
    "client:11": (MqttAuthError, f"authentication failed; {_CRED_HINT}"),
    "client:12": (MqttAuthError, "the broker denied access to the topic"),
    # transport events seen around paho
    "closed-before-connack": (
        MqttAuthError,
        "the broker closed the connection before answering CONNECT; the Mainflux MQTT "
        "adapter does this when it rejects the thing id/key (or, with mTLS, a certificate "
        f"whose CN does not match the key); {_CRED_HINT}",
    ),
    "closed-after-publish": (
        MqttAuthError,
        "the broker closed the connection after PUBLISH; the thing is probably not "
        "connected to the channel (Mainflux drops unauthorised publishers)",
    ),
    "tls-rejected": (
        MqttAuthError,
        "the broker rejected our TLS client certificate (revoked, expired or from another "
        "CA); a new certificate is needed: run `edge-provision renew --force`",
    ),
    "tls-untrusted": (
        MqttError,
        "the broker's TLS certificate is not trusted (wrong CA or host name); set mqtt.ca "
        "to the CA that signed the broker's certificate",
    ),
    "refused": (MqttUnavailable, "connection refused: no broker listens there (yet)"),
    "unreachable": (MqttUnavailable, "the broker cannot be reached"),
    "timeout": (MqttUnavailable, "no answer from the broker in time"),
    "suback-refused": (MqttAuthError, "the broker refused the subscription (0x80)"),
}

_TLS_REJECT_MARKERS = (
    "REVOKED", "CERTIFICATE_REQUIRED", "BAD_CERTIFICATE", "UNKNOWN_CA", "CERTIFICATE_EXPIRED",
    "CERTIFICATE_UNKNOWN", "HANDSHAKE_FAILURE", "UNSUPPORTED_CERTIFICATE", "ACCESS_DENIED",
)  # fmt: skip


def mqtt_error(code: str, url: str, detail: str = "") -> MqttError:
    """The error for ``code`` (a key of :data:`CODES`; unknown codes give MqttError)."""
    cls, message = CODES.get(code, (MqttError, f"MQTT failure ({code})"))
    extra = f" ({detail})" if detail else ""
    return cls(f"{url}: {message}{extra}")


def classify_socket_error(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "tls-untrusted"
    if isinstance(exc, ssl.SSLError):
        return classify_text(str(exc)) or "unreachable"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, TimeoutError):
        return "timeout"
    return "unreachable"


def close_leaked_sockets(exc: BaseException) -> None:
    """Close the sockets paho leaves open when its TLS handshake fails (found in the traceback)."""
    import socket

    tb = exc.__traceback__
    while tb is not None:
        for value in list(tb.tb_frame.f_locals.values()):
            if isinstance(value, socket.socket):
                value.close()
        tb = tb.tb_next


def classify_text(text: str) -> str | None:
    upper = text.upper()
    if "CERTIFICATE_VERIFY_FAILED" in upper:
        return "tls-untrusted"
    if any(marker in upper for marker in _TLS_REJECT_MARKERS):
        return "tls-rejected"
    return None


# --------------------------------------------------------------------------- broker URL


@dataclass(frozen=True)
class BrokerUrl:
    """``tcp://host:1883``, ``ssl://host:8883`` (also mqtt://, mqtts://, tls://, host:port)."""

    host: str
    port: int
    tls: bool

    def __str__(self) -> str:
        return f"{'ssl' if self.tls else 'tcp'}://{self.host}:{self.port}"


_SCHEMES = {"tcp": False, "mqtt": False, "ssl": True, "tls": True, "mqtts": True}


def parse_broker_url(url: str) -> BrokerUrl:
    """Parse a broker URL as the Mainflux Agent writes it; ConfigError if it is not one."""
    text = url.strip()
    if "://" not in text:
        text = "tcp://" + text
    parts = urlsplit(text)
    if parts.scheme not in _SCHEMES or not parts.hostname:
        raise ConfigError(
            f"MQTT broker URL {url!r}: expected tcp://host:1883 or ssl://host:8883 "
            f"(schemes {', '.join(sorted(_SCHEMES))})"
        )
    tls = _SCHEMES[parts.scheme]
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError:
        raise ConfigError(f"MQTT broker URL {url!r}: the port is not a number 1-65535") from None
    return BrokerUrl(parts.hostname, port, tls)


# --------------------------------------------------------------------------- SenML commands


@dataclass(frozen=True)
class ControlCommand:
    """One command from the control channel."""

    request_id: str
    name: str
    argument: str = ""


def parse_command(payload: bytes) -> ControlCommand:
    """Read record 0 of a SenML command; ``ValueError`` says what is wrong with it."""
    if len(payload) > _MAX_COMMAND_BYTES:
        raise ValueError(f"command is {len(payload)} bytes; at most {_MAX_COMMAND_BYTES}")
    try:
        doc = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ValueError("command is not UTF-8 JSON") from None
    if not isinstance(doc, list) or not doc or not isinstance(doc[0], dict):
        raise ValueError("command must be a SenML array whose first record is an object")
    record = doc[0]
    name, bn, vs = record.get("n"), record.get("bn", ""), record.get("vs", "")
    if not isinstance(name, str) or not name.strip():
        raise ValueError("record 0 has no command name 'n'")
    if not isinstance(bn, str) or not isinstance(vs, str):
        raise ValueError("'bn' and 'vs' must be strings")
    request_id = bn[:-1] if bn.endswith(":") else bn
    return ControlCommand(request_id=request_id, name=name.strip(), argument=vs)


def render_reply(request_id: str, name: str, text: str, at: float | None = None) -> bytes:
    """A SenML reply as the Mainflux Agent sends it."""
    t = time.time() if at is None else at
    record = {"bn": request_id, "n": name, "t": t, "vs": text}
    return json.dumps([record], separators=(",", ":")).encode("utf-8")


def status_message(thing_id: str, text: str, at: float | None = None) -> bytes:
    """The status record published by a credential check: ``bn`` = ``<thing id>:``."""
    t = time.time() if at is None else at
    record = {"bn": f"{thing_id}:", "n": "edge-provision-status", "t": t, "vs": text}
    return json.dumps([record], separators=(",", ":")).encode("utf-8")
