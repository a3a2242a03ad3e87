"""renew against a real lab server and a real mosquitto: schedule, force, bad certs, repair."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from _mqtt_lab import (
    Subscriber,
    agent_settings,
    lab_server,
    needs_mosquitto,
    token,
    wait_until,
)

from edge_provision.agent import mqtt
from edge_provision.agent.renew.renewal import renew
from edge_provision.agent.store import Store
from edge_provision.agent.wiring import (
    build_clients,
    build_store,
    build_verifier,
    mqtt_target,
    run_enroll,
    run_renew,
)
from edge_provision.crypto import pki
from edge_provision.errors import CertificateError, Reason, ServiceUnavailable
from edge_provision.lab.mosquitto import ADMIN_USER
from edge_provision.testing import FakeServer, Reply, ThrowawayCA

pytestmark = needs_mosquitto


def _serial(store: Store) -> str:
    gen = store.current_generation()
    assert gen is not None
    pem = gen.read_certificate(gen.gateway_thing_id)
    assert pem is not None
    return pki.parse_certificate(pem[0]).serial


def test_short_certificate_renewed_before_expiry_and_mqtt_keeps_working(tmp_path: Path) -> None:
    """8 s certificates: `renew` (not forced) renews once due, before expiry; MQTT still works."""
    with lab_server(tmp_path, cert_ttl_s=8) as server:
        settings = agent_settings(tmp_path, server, env={"EDGE_PROVISION_RENEW_BEFORE": "5",
                                                         "EDGE_PROVISION_METRICS_TEXTFILE":
                                                         str(tmp_path / "edge.prom")})
        enrolled = run_enroll(settings)
        store = build_store(settings)
        old_serial = _serial(store)
        old = pki.parse_certificate(store.current_generation().read_certificate(  # type: ignore[union-attr]
            enrolled.thing_id)[0])  # type: ignore[index]
        deadline = time.monotonic() + 8
        result = None
        while time.monotonic() < deadline:
            result = run_renew(settings)
            if result.renewed:
                break
            assert result.reason.startswith("not due") and "verified" in result.reason
            time.sleep(0.2)
        assert result is not None and result.renewed, result
        assert result.serial != old_serial
        assert time.time() < old.not_after.timestamp()  # renewed before the old one expired
        gen = store.current_generation()
        assert gen is not None and gen.number == enrolled.generation + 1
        assert gen.source == "renewal"
        build_verifier(settings)(gen)  # type: ignore[misc]  # MQTT with the new generation
        state = store.load_state()
        assert state.next_action == "renew" and state.last_error is None
        prom = (tmp_path / "edge.prom").read_text()
        assert "edge_provision_renewals_total 1" in prom


def test_renew_force_json_makes_a_new_serial(tmp_path: Path) -> None:
    """`edge-provision renew --force --json` prints the documented document with a new serial."""
    with lab_server(tmp_path) as server:
        settings = agent_settings(tmp_path, server)
        run_enroll(settings)
        before = _serial(build_store(settings))
        env = dict(os.environ, CONFIGURATION_DIRECTORY=str(tmp_path / "etc"),
                   EDGE_PROVISION_MQTT_URL=server.mqtt.urls[0],  # type: ignore[union-attr]
                   EDGE_PROVISION_MQTT_VERIFY="always",
                   EDGE_PROVISION_PROVISION_URL=server.url,
                   EDGE_PROVISION_EXTERNAL_ID="02:42:ac:11:00:07",
                   EDGE_PROVISION_EXTERNAL_KEY="gw-key",
                   EDGE_PROVISION_TOKEN=token(server, tmp_path))
        out = subprocess.run([sys.executable, "-m", "edge_provision", "--state-dir",
                              str(tmp_path / "gw"), "renew", "--force", "--json"],
                             capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 0, out.stderr
        doc = json.loads(out.stdout)
        assert {"ok", "renewed", "generation", "serial", "not_after", "next_renewal_at",
                "reason"} <= set(doc)
        assert doc["ok"] is True and doc["renewed"] is True and doc["reason"] == "forced"
        assert doc["serial"] != before
        assert doc["serial"] == _serial(build_store(settings))


class _EvilSigner(BaseHTTPRequestHandler):
    """A CSR endpoint that signs with a CA the gateway does not trust."""

    ca = pki.LocalCA.create(common_name="evil CA")

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        self._send(200, {"status": "pass", "csr": True})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        issued = self.ca.sign_csr(body["csr"], common_name=body["thing_id"], ttl_s=3600)
        self._send(201, {"thing_id": body["thing_id"], "client_cert": issued.cert_pem,
                         "cert_serial": issued.serial, "ca_cert": issued.ca_pem,
                         "expiration": issued.not_after.strftime("%Y-%m-%dT%H:%M:%SZ")})

    def _send(self, status: int, doc: object) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_certificate_from_another_ca_is_rejected_old_stays_current(tmp_path: Path) -> None:
    """A matching certificate signed by a foreign CA is refused; generation and serial unchanged."""
    with lab_server(tmp_path) as server:
        settings = agent_settings(tmp_path, server)
        run_enroll(settings)
        store = build_store(settings)
        before_gen, before_serial = store.current_generation().number, _serial(store)  # type: ignore[union-attr]
        evil = ThreadingHTTPServer(("127.0.0.1", 0), _EvilSigner)
        thread = threading.Thread(target=evil.serve_forever, daemon=True)
        thread.start()
        try:
            bad = agent_settings(tmp_path, server,
                                 certs_url=f"http://127.0.0.1:{evil.server_address[1]}")
            with pytest.raises(CertificateError, match="does not chain to the CA this gateway"):
                run_renew(bad, force=True)
        finally:
            evil.shutdown()
            evil.server_close()
        assert store.current_generation().number == before_gen  # type: ignore[union-attr]
        assert _serial(store) == before_serial
        state = store.load_state()
        assert state.last_error is not None and state.last_error.kind == "CertificateError"
        assert state.next_action == "renew" and state.next_action_at is not None


def test_scripted_fake_certificate_for_another_key_is_rejected(tmp_path: Path) -> None:
    """FakeServer answers with a ThrowawayCA certificate for some other key: refused."""
    with lab_server(tmp_path) as server, FakeServer() as fake:
        settings = agent_settings(tmp_path, server)
        run_enroll(settings)
        cert_pem, _ = ThrowawayCA(tmp_path / "throwaway").issue_client("x")
        fake.add("GET", "/health", Reply(json={"status": "pass", "csr": True}))
        fake.add("POST", "/certs/csr", Reply(status=201, json={
            "client_cert": cert_pem, "cert_serial": "ab", "expiration": "2099-01-01T00:00:00Z"}))
        bad = agent_settings(tmp_path, server, certs_url=fake.url)
        with pytest.raises(CertificateError, match="does not match its private key"):
            run_renew(bad, force=True)
        assert build_store(settings).current_generation().number == 1  # type: ignore[union-attr]


def test_unreachable_cert_service_backs_off_and_keeps_current(tmp_path: Path) -> None:
    """A transient failure: exit 75 class, last_error recorded, next attempt scheduled soon."""
    with lab_server(tmp_path) as server:
        settings = agent_settings(tmp_path, server)
        run_enroll(settings)
        down = agent_settings(tmp_path, server, certs_url="http://127.0.0.1:9")
        with pytest.raises(ServiceUnavailable) as info:
            run_renew(down, force=True)
        assert info.value.exit_code == 75
        assert (info.value.step, info.value.reason) == ("renew", Reason.UNAVAILABLE)
        state = build_store(settings).load_state()
        assert state.last_error is not None and state.last_error.kind == "ServiceUnavailable"
        assert state.current_generation == 1
        assert state.counters.get("renew_attempt") == 1


def test_revoked_certificate_with_mtls_leads_to_reprovisioning(tmp_path: Path) -> None:
    """DELETE /certs/<thing>: the TLS listener refuses the cert; `renew` repairs itself."""
    with lab_server(tmp_path, mqtt_tls_port=0, mqtt_require_cert=True) as server:
        assert server.mqtt is not None
        settings = agent_settings(tmp_path, server, url_index=1,
                                  env={"EDGE_PROVISION_MQTT_MTLS": "true"})
        enrolled = run_enroll(settings)
        store = build_store(settings)
        old_serial = _serial(store)
        r = requests.delete(f"{server.url}/certs/{enrolled.thing_id}", timeout=10,
                            headers={"Authorization": f"Bearer {token(server, tmp_path)}"})
        assert r.status_code == 200 and old_serial in r.json()["revoked"]
        results = []

        def repaired() -> bool:
            result = run_renew(settings)
            results.append(result)
            return result.reprovisioned

        wait_until(repaired, timeout_s=15, interval_s=0.1)
        assert _serial(store) != old_serial
        gen = store.current_generation()
        assert gen is not None and gen.number == enrolled.generation + 1
        build_verifier(settings)(gen)  # type: ignore[misc]
        journal = [(e.step, e.status) for e in store.load_state().journal]
        assert ("reprovision", "started") in journal and ("reprovision", "done") in journal
        assert results[-1].reprovisioned and not any(r.reprovisioned for r in results[:-1])


def test_control_command_triggers_renewal(tmp_path: Path) -> None:
    """`renew` published on the control channel reaches the ControlListener, which renews."""
    with lab_server(tmp_path) as server:
        assert server.mqtt is not None
        settings = agent_settings(tmp_path, server)
        run_enroll(settings)
        store = build_store(settings)
        before = _serial(store)
        gen = store.current_generation()
        assert gen is not None
        target = mqtt_target(settings, gen)
        assert target is not None
        done = threading.Event()
        results = []

        def handler(command: mqtt.ControlCommand) -> str:
            def work() -> None:
                with build_clients(settings) as clients:
                    results.append(renew(settings, Store(settings.state_dir), clients,
                                         verifier=build_verifier(settings), force=True))
                done.set()

            threading.Thread(target=work, daemon=True).start()
            return "renewal started"

        listener = mqtt.ControlListener(target, mqtt.control_channel_id(gen) or "", handler)
        listener.start(timeout_s=5)
        try:
            admin = Subscriber(mqtt.parse_broker_url(target.url).port, ADMIN_USER,
                               server.mqtt.admin_password, "channels/+/messages/res")
            admin.publish(f"channels/{mqtt.control_channel_id(gen)}/messages/req",
                          b'[{"bn":"req-42:","n":"renew"}]')
            assert done.wait(15)
            admin.close()
        finally:
            listener.stop()
        assert results and results[0].renewed
        assert _serial(store) != before
