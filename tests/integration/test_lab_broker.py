"""The lab broker (issue 10, rows 4, 5, 12) with a real mosquitto.

Row 4: no change is lost (coalesced reloads, each confirmed; a SIGHUP lost in a reload is
sent again). Row 5: the broker dies with the server, a stale broker of ours is replaced,
a port held by someone else is an error, nothing is announced unverified. Row 12: the
certificate is the identity on the TLS listener, ``DELETE /things/{id}`` removes a thing
from platform and broker and closes its sessions, revocation closes TLS sessions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from _mqtt_lab import (
    MOSQUITTO,
    Subscriber,
    channel_of,
    lab_server,
    mapping,
    needs_mosquitto,
    wait_until,
)
from _mqtt_lab import token as lab_token

from edge_provision.crypto import pki
from edge_provision.lab.backends.embedded import EmbeddedBackend
from edge_provision.lab.mosquitto import ADMIN_USER
from edge_provision.lab.server import RunningLabServer
from edge_provision.layout import load_layout, plan
from edge_provision.net import free_port

pytestmark = needs_mosquitto

TIMEOUT = 10
DATA = Path(__file__).resolve().parent.parent / "data" / "layouts"
BAD_CREDENTIALS = 5  # MQTT 3.1.1 CONNACK "not authorised"


def _connack(port: int, user: str, password: str, client_id: str = "t") -> int:
    """CONNACK code of one plain connection (raw MQTT, no paho needed)."""
    from edge_provision.lab.mosquitto._probe import connect_once

    return connect_once("127.0.0.1", port, client_id=client_id, username=user,
                        password=password, timeout_s=5)


def _operator(server: RunningLabServer, tmp_path: Path) -> dict[str, str]:
    return {"Authorization": f"Bearer {lab_token(server, tmp_path)}"}


class _Client:
    """A paho client that records whether it is connected (plain or TLS)."""

    def __init__(self, port: int, user: str, password: str, client_id: str,
                 tls: tuple[Path, Path, Path] | None = None) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.connected = threading.Event()
        self.dropped = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.username_pw_set(user, password)
        if tls is not None:
            ca, cert, key = tls
            self.client.tls_set(ca_certs=str(ca), certfile=str(cert), keyfile=str(key))
        self.client.on_connect = lambda c, u, f, rc, p=None: (
            self.connected.set() if not rc.is_failure else None)
        self.client.on_disconnect = lambda *a: self.dropped.set()
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        assert self.connected.wait(TIMEOUT), "client did not connect"

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(timeout=5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# ------------------------------------------------------------------------- row 4


def test_no_change_is_lost_when_sighups_land_during_reloads(tmp_path: Path) -> None:
    """30 concurrent mappings under a storm of foreign SIGHUPs: every thing can connect."""
    with lab_server(tmp_path) as server:
        broker = server.mqtt
        assert broker is not None and broker.pid is not None
        stop = threading.Event()

        def storm() -> None:  # reloads the broker's own way, so ours land in reloads
            deadline = time.monotonic() + 30
            while not stop.is_set() and time.monotonic() < deadline:
                os.kill(broker.pid or 0, signal.SIGHUP)
                time.sleep(0.002)

        noise = threading.Thread(target=storm, daemon=True)
        noise.start()
        try:
            with ThreadPoolExecutor(8) as pool:
                bodies = list(pool.map(
                    lambda n: mapping(server, tmp_path, f"aa:01:00:00:00:{n:02x}"), range(30)))
            assert broker.wait_applied(30)
        finally:
            stop.set()
            noise.join(timeout=5)
        things = [b["things"][0] for b in bodies]  # type: ignore[index]
        codes = [_connack(broker.port, t["id"], t["key"], f"c{n}") for n, t in enumerate(things)]
        assert codes == [0] * 30
        assert broker.reloads >= 1 and broker.syncs <= 31 + broker.reloads


# ------------------------------------------------------------------------- row 5


def _serve(state: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    env = dict(os.environ, EDGE_PROVISION_LAB_MOSQUITTO_BIN=MOSQUITTO or "mosquitto")
    return subprocess.Popen(
        [sys.executable, "-m", "edge_provision", "--state-dir", str(state), "serve", "--port",
         "0", "--mqtt", "--mqtt-port", str(port), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _banner(proc: subprocess.Popen[str]) -> list[str]:
    """Lines up to 'press Ctrl-C' (or to the end if the server exits)."""
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.strip())
        if line.startswith("press Ctrl-C"):
            break
    return lines


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state == "Z"


def _finish(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
    proc.wait(timeout=20)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def test_broker_dies_with_a_killed_server_and_the_next_server_gets_the_port(
        tmp_path: Path) -> None:
    """SIGKILL of serve takes its mosquitto along; a new serve binds the same port and works."""
    state, port = tmp_path / "lab", free_port("127.0.0.1")
    first = _serve(state, port)
    try:
        assert f"mqtt broker: tcp://127.0.0.1:{port}" in _banner(first)
        broker_pid = int((state / "mosquitto" / "mosquitto.pid").read_text())
        assert not _gone(broker_pid)
        first.kill()
        first.wait(timeout=10)
        wait_until(lambda: _gone(broker_pid), timeout_s=10)
    finally:
        _finish(first)
    second = _serve(state, port)
    try:
        assert f"mqtt broker: tcp://127.0.0.1:{port}" in _banner(second)
        admin = (state / "mosquitto" / "admin-password").read_text().strip()
        assert _connack(port, ADMIN_USER, admin) == 0
    finally:
        _finish(second)
    assert second.returncode == 0


def test_stale_broker_of_ours_is_replaced(tmp_path: Path) -> None:
    """A mosquitto left running with our config (pid file) is stopped and replaced at start."""
    port = free_port("127.0.0.1")
    with lab_server(tmp_path, mqtt_port=port) as server:
        assert server.mqtt is not None
        conf = server.mqtt.directory / "mosquitto.conf"
    stale = subprocess.Popen([MOSQUITTO or "mosquitto", "-c", str(conf)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: _listening(port), timeout_s=10)
        (conf.parent / "mosquitto.pid").write_text(f"{stale.pid}\n")
        with lab_server(tmp_path, mqtt_port=port) as server:
            assert stale.poll() is not None  # terminated by the new server
            assert server.mqtt is not None and server.mqtt.pid != stale.pid
            body = mapping(server, tmp_path, "aa:00:00:00:05:01")
            thing = body["things"][0]  # type: ignore[index]
            assert server.mqtt.wait_applied(10)
            assert _connack(port, thing["id"], thing["key"]) == 0
    finally:
        if stale.poll() is None:
            stale.kill()
        stale.wait(timeout=10)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


def test_port_held_by_another_program_is_an_error_naming_it(tmp_path: Path) -> None:
    """serve --mqtt on a port someone listens on: exit non-zero, the port named, no banner."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    proc = _serve(tmp_path / "lab", port)
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        holder.close()
    assert proc.returncode not in (0, None)
    assert f"mqtt port {port}" in err
    assert "mqtt broker:" not in out and "listening on" not in out


# ------------------------------------------------------------------------ row 12


def test_delete_thing_removes_it_from_platform_and_broker_and_closes_its_session(
        tmp_path: Path) -> None:
    """DELETE /things/{id}: 204, its session is closed, it cannot log in, its gateway is gone."""
    with lab_server(tmp_path) as server:
        broker = server.mqtt
        assert broker is not None
        external_id = "aa:00:00:00:12:01"
        body = mapping(server, tmp_path, external_id, "gw-key")
        thing = body["things"][0]  # type: ignore[index]
        assert broker.wait_applied(10)
        client = _Client(broker.port, thing["id"], thing["key"], "gw-12-01")
        try:
            client.client.reconnect_delay_set(60, 60)  # a reconnect would hide the drop
            resp = requests.delete(f"{server.url}/things/{thing['id']}", timeout=TIMEOUT,
                                   headers=_operator(server, tmp_path))
            assert resp.status_code == 204 and resp.content == b""
            assert broker.wait_applied(10)
            assert client.dropped.wait(TIMEOUT)
        finally:
            client.close()
        assert _connack(broker.port, thing["id"], thing["key"]) == BAD_CREDENTIALS
        boot = requests.get(f"{server.url}/things/bootstrap/{external_id}", timeout=TIMEOUT,
                            headers={"Authorization": "Thing gw-key"})
        assert boot.status_code == 404
        listed = requests.get(f"{server.url}/things?limit=100", timeout=TIMEOUT,
                              headers=_operator(server, tmp_path)).json()
        assert thing["id"] not in [t["id"] for t in listed["things"]]
        again = mapping(server, tmp_path, external_id, "gw-key")  # provisioned anew
        assert again["things"][0]["id"] != thing["id"]  # type: ignore[index]


def _csr_cert(server: RunningLabServer, tmp_path: Path, thing: dict[str, str],
              name: str) -> tuple[Path, Path, Path]:
    """A CSR-issued certificate for ``thing``: (CA, cert, key) files."""
    key = pki.generate_key()
    resp = requests.post(f"{server.url}/certs/csr", timeout=TIMEOUT,
                         json={"thing_id": thing["id"], "csr": pki.make_csr(key, "x")},
                         headers={"Authorization": f"Thing {thing['key']}"})
    assert resp.status_code == 201, resp.text
    folder = tmp_path / name
    folder.mkdir()
    (folder / "ca.crt").write_text(resp.json()["ca_cert"])
    (folder / "c.crt").write_text(resp.json()["client_cert"])
    (folder / "c.key").write_text(pki.key_to_pem(key))
    return folder / "ca.crt", folder / "c.crt", folder / "c.key"


def test_certificate_is_the_identity_on_the_tls_listener(tmp_path: Path) -> None:
    """With A's certificate and B's id and key, the session is A's: B's channel stays closed."""
    with lab_server(tmp_path, mqtt_tls_port=0, mqtt_require_cert=True) as server:
        broker = server.mqtt
        assert broker is not None and broker.tls_port is not None
        first = mapping(server, tmp_path, "aa:00:00:00:12:02")
        second = mapping(server, tmp_path, "aa:00:00:00:12:03")
        a, b = first["things"][0], second["things"][0]  # type: ignore[index]
        files = _csr_cert(server, tmp_path, a, "a")
        assert broker.wait_applied(10)
        admin = Subscriber(broker.port, ADMIN_USER, broker.admin_password, "channels/#")
        client = _Client(broker.tls_port, b["id"], b["key"], "mixed", tls=files)
        try:
            client.publish(f"channels/{channel_of(second, 'data')}/messages", b"as-b")
            client.publish(f"channels/{channel_of(first, 'data')}/messages", b"as-a")
            wait_until(lambda: any(p == b"as-a" for _, p in admin.received()), timeout_s=5)
            assert all(p != b"as-b" for _, p in admin.received())
        finally:
            client.close()
            admin.close()


def test_revoking_a_certificate_closes_the_tls_session(tmp_path: Path) -> None:
    """DELETE /certs/{thing}: the open TLS session is closed and the certificate refused."""
    with lab_server(tmp_path, mqtt_tls_port=0, mqtt_require_cert=True) as server:
        broker = server.mqtt
        assert broker is not None and broker.tls_port is not None
        body = mapping(server, tmp_path, "aa:00:00:00:12:04")
        thing = body["things"][0]  # type: ignore[index]
        files = _csr_cert(server, tmp_path, thing, "t")
        assert broker.wait_applied(10)
        client = _Client(broker.tls_port, thing["id"], thing["key"], "gw-tls", tls=files)
        try:
            client.client.reconnect_delay_set(60, 60)
            resp = requests.delete(f"{server.url}/certs/{thing['id']}", timeout=TIMEOUT,
                                   headers=_operator(server, tmp_path))
            assert resp.status_code == 200 and resp.json()["revoked"]
            assert broker.wait_applied(10)
            assert client.dropped.wait(TIMEOUT)
        finally:
            client.close()
        context = ssl.create_default_context(cafile=str(files[0]))
        context.load_cert_chain(files[1], files[2])
        from edge_provision.lab.mosquitto._probe import connect_once

        with pytest.raises((OSError, ssl.SSLError)):
            connect_once("127.0.0.1", broker.tls_port, client_id="again", username=thing["id"],
                         password=thing["key"], tls=context, timeout_s=5)


# ------------------------------------------------------------- the backend side


def test_embedded_delete_keeps_revocations_and_the_mapping_consistent(tmp_path: Path) -> None:
    """A sensor's delete keeps the mapping (minus it); the gateway's frees the external_id;
    revoked serials outlive their thing; a schema-1 database is upgraded with them."""
    layout = load_layout((DATA / "valid_multi.toml").read_text(), "valid_multi.toml")
    layout = dataclasses.replace(layout, bootstrap=dataclasses.replace(
        layout.bootstrap, x509_provision=False))
    ca = pki.LocalCA.create()
    db = tmp_path / "lab.db"
    with EmbeddedBackend(db) as backend:
        run = plan(layout, "gw-x", "key-x")
        made = asyncio.run(backend.provision(run, owner="admin"))
        sensor, gateway = made.things[0], made.things[1]
        certs = {}
        for thing in (sensor, gateway):
            certs[thing.id] = ca.sign_csr(pki.make_csr(pki.generate_key(), "x"),
                                          common_name=thing.id, ttl_s=3600)
            asyncio.run(backend.record_certificate(thing.id, certs[thing.id]))
        deleted = backend.delete_thing(sensor.id)
        assert deleted is not None and deleted.revoked == (certs[sensor.id].serial,)
        assert deleted.external_id is None
        repeat = asyncio.run(backend.provision(run, owner="admin"))
        assert sensor.id not in [t.id for t in repeat.things] and not repeat.created
        assert asyncio.run(backend.bootstrap("gw-x", "key-x")) is not None
        snapshot = backend.broker_snapshot()
        assert sensor.id not in [a.thing_id for a in snapshot.accounts]
        assert snapshot.revoked == (certs[sensor.id].serial,)
        gone = backend.delete_thing(gateway.id)
        assert gone is not None and gone.external_id == "gw-x"
        assert asyncio.run(backend.bootstrap("gw-x", "key-x")) is None
        assert asyncio.run(backend.provision(run, owner="admin")).created  # anew
        assert backend.delete_thing(gateway.id) is None
        assert set(backend.broker_snapshot().revoked) == {c.serial for c in certs.values()}
        kept = backend.counts()  # moved by each delete's cascade, no query
    conn = sqlite3.connect(db)
    counted = {table: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
               for table in kept}
    conn.close()
    assert kept == counted and kept["certificates"] == 0
    conn = sqlite3.connect(db)
    conn.execute("DROP TABLE revoked_certificates")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    with EmbeddedBackend(db) as backend:  # only rows still in certificates can come back
        assert backend.broker_snapshot().revoked == ()
        thing = backend.list_things(0, 1).items[0]
        cert = ca.sign_csr(pki.make_csr(pki.generate_key(), "x"), common_name=thing.id,
                           ttl_s=3600)
        asyncio.run(backend.record_certificate(thing.id, cert))
        backend.revoke_certificates(thing.id)
    conn = sqlite3.connect(db)
    conn.execute("DROP TABLE revoked_certificates")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    with EmbeddedBackend(db) as backend:
        assert backend.broker_snapshot().revoked == (cert.serial,)
