"""MQTT with paho-mqtt 2.x: verify credentials, and listen for commands on the control channel.

Credentials follow the Mainflux MQTT adapter (wire contract section 6): username = thing
id, password = thing key; with mTLS the thing's client certificate is presented as well.
TLS always verifies the broker (``tls_set`` with the platform CA, or the system store);
``tls_insecure_set`` is used only when the caller passes ``insecure=True`` (lab flag).

Every paho outcome -- CONNACK reason code, client error code, socket or TLS failure --
becomes an :mod:`edge_provision.errors` class through ONE table, :data:`CODES`. The
Mainflux adapter answers a bad thing id/key by closing the connection *without* a
CONNACK, so "connection closed before CONNACK" is reported as a probable credential
rejection (:class:`~edge_provision.errors.MqttAuthError`), never as a plain network error.

Control channel (format of the Mainflux Agent, contract section 8.4): commands arrive on
``channels/<control>/messages/req`` as SenML JSON, only record 0 is read::

    [{"bn": "<request id>:", "n": "renew"}]          also "reprovision", "status"

``bn`` is the request id (one trailing ``:`` stripped), ``n`` the command, ``vs`` an
optional argument. Replies go to ``channels/<control>/messages/res``::

    [{"bn": "<request id>", "n": "renew", "t": 1717000000.5, "vs": "renewal scheduled"}]

Other commands (``exec``, ``config``, ``term``... for the Mainflux Agent, which may share
the channel) are ignored; malformed payloads are logged and ignored.
"""

from __future__ import annotations

import json
import logging
import math
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, TypeVar

from edge_provision import deadline
from edge_provision.agent.mqtt._wire import (
    CODES,
    BrokerUrl,
    ControlCommand,
    classify_socket_error,
    classify_text,
    close_leaked_sockets,
    mqtt_error,
    parse_broker_url,
    parse_command,
    render_reply,
    status_message,
)
from edge_provision.errors import (
    CertificateError,
    ConfigError,
    EdgeProvisionError,
    MqttAuthError,
    MqttError,
)

if TYPE_CHECKING:
    from paho.mqtt.client import Client, MQTTMessage
    from paho.mqtt.reasoncodes import ReasonCode

    from edge_provision.agent.store import Generation

__all__ = [
    "CODES",
    "CONTROL_COMMANDS",
    "BrokerUrl",
    "ControlCommand",
    "ControlListener",
    "MqttTarget",
    "Verifier",
    "VerifyReport",
    "broker_url_in_content",
    "check_subscribe",
    "control_channel_id",
    "make_verifier",
    "mqtt_error",
    "parse_broker_url",
    "parse_command",
    "render_reply",
    "retry_refusals",
    "status_message",
    "target_for",
    "verify_credentials",
]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

CONTROL_COMMANDS = frozenset({"renew", "reprovision", "status"})
_KEEPALIVE_S = 30

Verifier = Callable[["Generation"], Optional["VerifyReport"]]

# --------------------------------------------------------------------------- connections


@dataclass(frozen=True)
class MqttTarget:
    """Where and as whom to connect."""

    url: str
    username: str
    password: str = field(repr=False)
    ca_path: Optional[Path] = None
    cert_path: Optional[Path] = None
    key_path: Optional[Path] = None
    mtls: bool = False
    insecure: bool = False
    client_id: Optional[str] = None


@dataclass(frozen=True)
class VerifyReport:
    """What a successful credential check did."""

    url: str
    elapsed_s: float
    published_on: Optional[str]


def _new_client(target: MqttTarget, suffix: str) -> tuple[Client, BrokerUrl]:
    from paho.mqtt.client import Client
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    broker = parse_broker_url(target.url)
    client_id = target.client_id or f"edge-provision-{suffix}-{uuid.uuid4().hex[:8]}"
    client = Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv311
    )
    client.username_pw_set(target.username, target.password)
    if broker.tls or target.mtls:
        if target.mtls and (target.cert_path is None or target.key_path is None):
            raise CertificateError(
                "MQTT mTLS is on but this generation has no client certificate; "
                "enroll with x509 certificates or set mqtt.mtls = false"
            )
        try:
            client.tls_set(
                ca_certs=str(target.ca_path) if target.ca_path else None,
                certfile=str(target.cert_path) if target.mtls else None,
                keyfile=str(target.key_path) if target.mtls else None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        except (ssl.SSLError, OSError) as exc:
            raise CertificateError(
                f"cannot load the MQTT TLS files (CA {target.ca_path}, certificate "
                f"{target.cert_path}): {exc}"
            ) from exc
        if target.insecure:
            logger.warning("mqtt tls verification disabled url=%s (insecure, lab only)", broker)
            client.tls_insecure_set(True)
        if not broker.tls:
            logger.warning("mqtt mtls requested on a tcp:// url=%s; using TLS anyway", broker)
    return client, broker


class _Session:
    """One short connection driven by hand (no background thread), every wait bounded."""

    def __init__(self, target: MqttTarget, deadline: float) -> None:
        self.target = target
        self.deadline = deadline
        self.client, self.broker = _new_client(target, "check")
        self.url = str(self.broker)
        self.connack: ReasonCode | None = None
        self.closed = False
        self.log_error = ""
        self.acked: set[int] = set()
        self.granted: dict[int, list[int]] = {}
        c = self.client
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_subscribe = self._on_subscribe
        c.on_log = self._on_log

    def _on_connect(self, _c: Client, _u: object, _f: object, rc: ReasonCode, _p: object) -> None:
        self.connack = rc

    def _on_disconnect(self, _c: Client, _u: object, _f: object, _rc: object, _p: object) -> None:
        self.closed = True

    def _on_publish(self, _c: Client, _u: object, mid: int, _rc: object, _p: object) -> None:
        self.acked.add(mid)

    def _on_subscribe(self, _c: Client, _u: object, mid: int, codes: list[ReasonCode],
                      _p: object) -> None:  # fmt: skip
        self.granted[mid] = [int(rc.value) for rc in codes]

    def _on_log(self, _c: Client, _u: object, level: int, text: str) -> None:
        if level >= 8:  # MQTT_LOG_ERR = 8
            self.log_error = text

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def _fail(self, code: str, detail: str = "") -> MqttError:
        tls = classify_text(self.log_error)
        if tls is not None:
            return mqtt_error(tls, self.url, self.log_error)
        return mqtt_error(code, self.url, detail or self.log_error)

    def connect(self) -> None:
        c = self.client
        c.connect_timeout = max(0.1, self.remaining())
        try:
            c.connect(self.broker.host, self.broker.port, keepalive=_KEEPALIVE_S)
        except (OSError, ssl.SSLError) as exc:
            close_leaked_sockets(exc)
            raise mqtt_error(classify_socket_error(exc), self.url, str(exc)) from exc
        self._pump(lambda: self.connack is not None, "closed-before-connack")
        value = int(self.connack.value) if self.connack is not None else 0
        if value != 0:
            raise mqtt_error(f"connack:{value}", self.url, str(self.connack))

    def _pump(self, done: Callable[[], bool], closed_code: str) -> None:
        while not done():
            left = self.remaining()
            if left <= 0:
                raise self._fail("timeout", f"gave up after the timeout, waiting for {closed_code}")
            rc = self.client.loop(timeout=min(0.05, left))
            if done():
                return
            if self.closed or int(rc) not in (0, -1):
                raise self._fail(closed_code)

    def publish(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        if int(info.rc) != 0:
            raise mqtt_error(f"client:{int(info.rc)}", self.url, f"publish to {topic}")
        self._pump(lambda: info.mid in self.acked, "closed-after-publish")

    def subscribe(self, topic: str) -> list[int]:
        rc, mid = self.client.subscribe(topic, qos=1)
        if int(rc) != 0 or mid is None:
            raise mqtt_error(f"client:{int(rc)}", self.url, f"subscribe to {topic}")
        self._pump(lambda: mid in self.granted, "closed-after-publish")
        return self.granted[mid]

    def close(self) -> None:
        try:
            if not self.closed:
                self.client.disconnect()
                end = min(self.deadline, time.monotonic() + 0.5)
                while not self.closed and time.monotonic() < end:
                    self.client.loop(timeout=0.02)
        except (OSError, ssl.SSLError):  # pragma: no cover - best effort
            pass
        # Break the client <-> session cycle: the client is then freed (and its internal
        # socket pair closed by its __del__) at once instead of by a later gc pass.
        c = self.client
        c.on_connect = c.on_disconnect = c.on_publish = c.on_subscribe = c.on_log = None


def verify_credentials(
    url: str,
    thing_id: str,
    thing_key: str,
    control_channel_id: str | None,
    *,
    ca_path: Path | None = None,
    cert_path: Path | None = None,
    key_path: Path | None = None,
    mtls: bool = False,
    timeout_s: float = 10.0,
    insecure: bool = False,
) -> VerifyReport:
    """Connect as ``thing_id``, publish a status record on the control channel, disconnect.

    The record (QoS 1, PUBACK awaited) goes to ``channels/<control>/messages/res``; with
    no control channel only the connection is checked. Everything happens within
    ``timeout_s``. Raises MqttAuthError / MqttUnavailable / MqttError (see :data:`CODES`).
    """
    if not math.isfinite(timeout_s) or timeout_s <= 0:
        raise ConfigError(f"MQTT timeout must be a positive number of seconds, got {timeout_s}")
    started = time.monotonic()
    target = MqttTarget(url, thing_id, thing_key, ca_path, cert_path, key_path, mtls, insecure)
    session = _Session(target, started + timeout_s)
    topic = f"channels/{control_channel_id}/messages/res" if control_channel_id else None
    try:
        session.connect()
        if topic is not None:
            session.publish(topic, status_message(thing_id, "credentials verified"))
    finally:
        session.close()
    elapsed = time.monotonic() - started
    logger.info("mqtt credentials verified url=%s thing_id=%s elapsed_s=%.3f", session.url,
                thing_id, elapsed)  # fmt: skip
    return VerifyReport(session.url, elapsed, topic)


def retry_refusals(check: Callable[[], _T], grace_s: float) -> _T:
    """``check()``; a credential refusal (:class:`MqttAuthError`) is retried for ``grace_s``.

    For credentials just created: a broker kept in step with the platform (the lab
    server's mosquitto, an MQTT adapter's auth cache) may learn of a new thing a moment
    after ``/mapping`` answered. Backoff 0.25 s doubling to 2 s; never past the run's
    deadline (:func:`edge_provision.deadline.current`). ``grace_s`` 0: no retry.
    """
    give_up = time.monotonic() + grace_s
    delay = 0.25
    while True:
        try:
            return check()
        except MqttAuthError:
            left = give_up - time.monotonic()
            run = deadline.current()
            if run is not None:
                left = min(left, run.remaining())
            if left <= delay:
                raise
            logger.info("new credentials refused by the broker; retrying in %.2f s "
                        "(it may not know the new thing yet)", delay)  # fmt: skip
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def check_subscribe(target: MqttTarget, topic: str, timeout_s: float = 10.0) -> list[int]:
    """Subscribe once and return the granted QoS codes (128 = refused); for diagnostics."""
    session = _Session(target, time.monotonic() + timeout_s)
    try:
        session.connect()
        return session.subscribe(topic)
    finally:
        session.close()


# --------------------------------------------------------------------------- generations


def control_channel_id(generation: Generation) -> str | None:
    """The control channel (``metadata.type == "control"``), else the first channel."""
    for channel in generation.channels:
        if channel.metadata.get("type") == "control":
            return channel.id
    return generation.channels[0].id if generation.channels else None


def broker_url_in_content(content: str) -> str | None:
    """``agent.mqtt.url`` of a bootstrap content (JSON text), or None."""
    try:
        doc = json.loads(content or "{}")
    except ValueError:
        return None
    agent = doc.get("agent") if isinstance(doc, dict) else None
    mqtt_cfg = agent.get("mqtt") if isinstance(agent, dict) else None
    url = mqtt_cfg.get("url") if isinstance(mqtt_cfg, dict) else None
    return url if isinstance(url, str) and url.strip() else None


def target_for(
    generation: Generation,
    *,
    url: str | None = None,
    ca_path: Path | None = None,
    mtls: bool = False,
    insecure: bool = False,
) -> MqttTarget | None:
    """How the gateway thing of ``generation`` connects, or None when no broker is known.

    The broker is ``url``, else the ``agent.mqtt.url`` of the bootstrap content; the CA
    is ``ca_path``, else the generation's ``ca.crt``.
    """
    broker = url or broker_url_in_content(generation.bootstrap_content)
    if broker is None:
        return None
    thing = generation.gateway_thing
    return MqttTarget(
        url=broker,
        username=thing.id,
        password=thing.key,
        ca_path=ca_path or generation.ca_path,
        cert_path=generation.cert_path(thing.id),
        key_path=generation.key_path(thing.id),
        mtls=mtls,
        insecure=insecure,
    )


def make_verifier(
    target_of: Callable[[Generation], MqttTarget | None], *, required: bool, timeout_s: float
) -> Verifier:
    """The credential check enrollment and renewal run on a new generation.

    ``target_of`` says where and as whom a generation connects. A generation without a
    known broker is skipped (logged; the verifier returns None), or with ``required``
    refused with a ConfigError.
    """

    def verify(generation: Generation) -> VerifyReport | None:
        target = target_of(generation)
        if target is None:
            if required:
                raise ConfigError(
                    "mqtt.verify = always but no broker is known: set mqtt.url "
                    "(EDGE_PROVISION_MQTT_URL) or put agent.mqtt.url in the bootstrap content"
                )
            logger.info("mqtt verification skipped generation=%s reason=no broker url",
                        generation.number)  # fmt: skip
            return None
        return verify_credentials(
            target.url, target.username, target.password, control_channel_id(generation),
            ca_path=target.ca_path, cert_path=target.cert_path, key_path=target.key_path,
            mtls=target.mtls, timeout_s=timeout_s, insecure=target.insecure,
        )  # fmt: skip

    return verify


# --------------------------------------------------------------------------- control listener

Handler = Callable[[ControlCommand], Optional[str]]


class ControlListener:
    """Subscribe to ``channels/<control>/messages/req`` and run ``handler`` per command.

    The handler runs on paho's network thread: keep it short (signal the daemon, return
    a reply text, or None for no reply). paho reconnects by itself after a drop.
    """

    def __init__(self, target: MqttTarget, control_channel: str, handler: Handler, *,
                 commands: frozenset[str] = CONTROL_COMMANDS) -> None:  # fmt: skip
        self._target = target
        self._handler = handler
        self._commands = commands
        self.request_topic = f"channels/{control_channel}/messages/req"
        self.reply_topic = f"channels/{control_channel}/messages/res"
        self._subscribed = threading.Event()
        self._connack = threading.Event()
        self._connack_code = 0
        self._client: Client | None = None
        self.handled = 0
        self.ignored = 0

    def start(self, timeout_s: float = 10.0) -> None:
        """Connect and subscribe; raise the mapped error if that fails within ``timeout_s``."""
        client, broker = _new_client(self._target, "control")
        self._client = client
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.reconnect_delay_set(min_delay=1, max_delay=60)
        client.connect_timeout = timeout_s
        try:
            client.connect(broker.host, broker.port, keepalive=_KEEPALIVE_S)
        except (OSError, ssl.SSLError) as exc:
            close_leaked_sockets(exc)
            raise mqtt_error(classify_socket_error(exc), str(broker), str(exc)) from exc
        client.loop_start()
        if not self._connack.wait(timeout_s):
            self.stop()
            raise mqtt_error("closed-before-connack", str(broker), "control listener")
        if self._connack_code != 0:
            self.stop()
            raise mqtt_error(f"connack:{self._connack_code}", str(broker), "control listener")
        if not self._subscribed.wait(max(0.1, timeout_s)):
            self.stop()
            raise mqtt_error("suback-refused", str(broker), self.request_topic)
        logger.info("control listener started topic=%s", self.request_topic)

    def stop(self) -> None:
        """Disconnect and stop the network thread."""
        client, self._client = self._client, None
        if client is None:
            return
        client.disconnect()
        client.loop_stop()

    def reply(self, command: ControlCommand, text: str) -> bool:
        """Publish a reply to ``command`` (QoS 1, not awaited); False when not connected."""
        client = self._client
        if client is None:
            return False
        body = render_reply(command.request_id, command.name, text)
        return int(client.publish(self.reply_topic, body, qos=1).rc) == 0

    @property
    def subscribed(self) -> bool:
        """True once the broker granted the subscription."""
        return self._subscribed.is_set()

    def _on_connect(self, client: Client, _u: object, _f: object, rc: ReasonCode, _p: object
                    ) -> None:  # fmt: skip
        self._connack_code = int(rc.value)
        self._connack.set()
        if self._connack_code == 0:
            client.subscribe(self.request_topic, qos=1)
        else:
            logger.warning("control listener refused code=%s", self._connack_code)

    def _on_subscribe(self, _c: Client, _u: object, _mid: int, codes: list[ReasonCode],
                      _p: object) -> None:  # fmt: skip
        if all(int(rc.value) < 128 for rc in codes):
            self._subscribed.set()
        else:
            logger.warning("control subscription refused topic=%s", self.request_topic)

    def _on_message(self, client: Client, _u: object, message: MQTTMessage) -> None:
        payload = bytes(message.payload)
        try:
            command = parse_command(payload)
        except ValueError as exc:
            self.ignored += 1
            logger.warning("control message ignored topic=%s reason=%s", self.request_topic, exc)
            return
        if command.name not in self._commands:
            self.ignored += 1
            logger.debug("control command not ours name=%s", command.name)
            return
        logger.info("control command received name=%s request_id=%s", command.name,
                    command.request_id)  # fmt: skip
        try:
            reply = self._handler(command)
        except EdgeProvisionError as exc:
            reply = f"error: {exc}"
        except Exception:  # the handler's bug must not kill paho's thread
            logger.exception("control handler failed name=%s", command.name)
            reply = "error: internal error; see the gateway log"
        self.handled += 1
        if reply is not None:
            body = render_reply(command.request_id, command.name, reply)
            client.publish(self.reply_topic, body, qos=1)
