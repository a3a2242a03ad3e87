"""verify_credentials against misbehaving peers and a real broker; the ControlListener."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from _mqtt_lab import (
    Subscriber,
    channel_of,
    lab_server,
    mapping,
    needs_mosquitto,
    senml,
    wait_until,
)

from edge_provision.agent import mqtt
from edge_provision.errors import MqttAuthError, MqttError, MqttUnavailable
from edge_provision.lab.mosquitto import ADMIN_USER
from edge_provision.testing import ThrowawayCA


class _Peer:
    """A TCP listener on 127.0.0.1 that closes each connection at once, or never answers."""

    def __init__(self, mode: str) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.mode = mode
        self.held: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            if self.mode == "close":
                conn.recv(1024)  # read the CONNECT, then hang up like mProxy
                conn.close()
            else:
                self.held.append(conn)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        for conn in self.held:
            conn.close()
        self.sock.close()


@pytest.fixture
def peer(request: pytest.FixtureRequest) -> Iterator[_Peer]:
    p = _Peer(request.param)
    yield p
    p.close()


@pytest.mark.parametrize("peer", ["close"], indirect=True)
def test_connection_closed_before_connack_is_a_credential_rejection(peer: _Peer) -> None:
    """Like the Mainflux adapter: a hang-up after CONNECT reads as bad thing id/key."""
    with pytest.raises(MqttAuthError, match="before answering CONNECT"):
        mqtt.verify_credentials(f"tcp://127.0.0.1:{peer.port}", "id", "key", "ch", timeout_s=3)


@pytest.mark.parametrize("peer", ["silent"], indirect=True)
def test_silent_broker_times_out_within_the_timeout(peer: _Peer) -> None:
    """No CONNACK at all: our own timeout ends the check (MqttUnavailable), not the peer."""
    outcome: list[BaseException] = []

    def check() -> None:
        try:
            mqtt.verify_credentials(f"tcp://127.0.0.1:{peer.port}", "id", "key", None,
                                    timeout_s=0.5)  # fmt: skip
        except BaseException as exc:  # handed to the test thread
            outcome.append(exc)

    worker = threading.Thread(target=check, daemon=True)
    worker.start()
    worker.join(30)  # a bounded wait; the broker below never answers nor hangs up
    assert not worker.is_alive() and len(outcome) == 1
    assert isinstance(outcome[0], MqttUnavailable) and "no answer" in str(outcome[0])
    assert "gave up after the timeout" in str(outcome[0])
    assert len(peer.held) == 1  # the connection was made and the peer still holds it


def test_nothing_listening_is_unavailable() -> None:
    """Connection refused is retryable."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(MqttUnavailable, match="refused") as info:
        mqtt.verify_credentials(f"tcp://127.0.0.1:{port}", "id", "key", None, timeout_s=2)
    assert info.value.retryable


@pytest.mark.mosquitto
@pytest.mark.parametrize("marker", needs_mosquitto[1:])
def test_tls_broker_with_untrusted_ca_is_not_an_auth_error(tmp_path: Path, marker: object) -> None:
    """The broker's certificate from another CA: MqttError about trust, never MqttAuthError."""
    with lab_server(tmp_path, mqtt_tls_port=0) as server:
        assert server.mqtt is not None
        other = ThrowawayCA(tmp_path / "other")
        with pytest.raises(MqttError, match="not trusted") as info:
            mqtt.verify_credentials(server.mqtt.urls[1], "id", "key", None,
                                    ca_path=other.ca_path, timeout_s=3)
        assert not isinstance(info.value, MqttAuthError)
        # with the lab CA the TLS listener works (password auth decides)
        body = mapping(server, tmp_path, "aa:00:00:00:00:09")
        thing = body["things"][0]  # type: ignore[index]
        wait_until(lambda: _ok(server.mqtt.urls[1], thing, tmp_path / "lab" / "ca" / "ca.crt"))


def _ok(url: str, thing: dict[str, str], ca: Path) -> bool:
    try:
        mqtt.verify_credentials(url, thing["id"], thing["key"], None, ca_path=ca, timeout_s=2)
    except MqttAuthError:
        return False
    return True


@pytest.mark.mosquitto
@pytest.mark.parametrize("marker", needs_mosquitto[1:])
def test_control_listener_handles_commands_and_ignores_garbage(tmp_path: Path,
                                                               marker: object) -> None:
    """renew/status are handled and answered on .../res; malformed and foreign ones ignored."""
    with lab_server(tmp_path) as server:
        assert server.mqtt is not None
        body = mapping(server, tmp_path, "aa:00:00:00:00:0a")
        thing = body["things"][0]  # type: ignore[index]
        control = channel_of(body, "control")
        url = server.mqtt.urls[0]
        target = mqtt.MqttTarget(url, thing["id"], thing["key"])
        wait_until(lambda: _ok(url, thing, Path("/nonexistent")) if False else _connects(target))
        seen: list[mqtt.ControlCommand] = []
        listener = mqtt.ControlListener(target, control,
                                        lambda c: seen.append(c) or f"{c.name} accepted")
        admin = Subscriber(mqtt.parse_broker_url(url).port, ADMIN_USER,
                           server.mqtt.admin_password, f"channels/{control}/messages/res")
        try:
            listener.start(timeout_s=5)
            assert listener.subscribed
            req = f"channels/{control}/messages/req"
            admin.publish(req, b"garbage")
            admin.publish(req, b'[{"bn":"x:","n":"exec","vs":"ls,-l"}]')
            admin.publish(req, b'[{"bn":"r-1:","n":"renew"}]')
            admin.publish(req, b'[{"bn":"r-2:","n":"status"}]')
            replies = wait_until(lambda: [m for m in admin.received()
                                          if senml(m[1])[0].get("bn") in ("r-1", "r-2")]
                                 if len(admin.received()) >= 2 else None, timeout_s=5)
            assert [c.name for c in seen] == ["renew", "status"]
            first = senml(replies[0][1])[0]
            assert (first["bn"], first["n"], first["vs"]) == ("r-1", "renew", "renew accepted")
            assert listener.ignored == 2 and listener.handled == 2
        finally:
            listener.stop()
            admin.close()


def _connects(target: mqtt.MqttTarget) -> bool:
    try:
        mqtt.verify_credentials(target.url, target.username, target.password, None, timeout_s=2)
    except MqttAuthError:
        return False
    return True
