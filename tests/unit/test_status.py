"""The status use case: one GatewayStatus, rendered as text, as JSON and as metrics."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

from edge_provision.agent.identity import resolve_identity
from edge_provision.agent.status import gateway_status, metrics_text, summarize
from edge_provision.agent.store import GenerationData, Phase, Store, StoredChannel, StoredThing
from edge_provision.cli.status import render_text
from edge_provision.settings import AgentSettings, load_agent_settings
from edge_provision.testing import ThrowawayCA

EXT_ID = "02:42:ac:11:00:55"
EXT_KEY = "external-key-0055-secret"
GW = StoredThing("thing-gw", "gw-55", "thing-key-gw-secret", {"external_id": EXT_ID})
SENSOR = StoredThing("thing-s1", "sensor-1", "thing-key-s1-secret", {})
CHANNELS = (StoredChannel("chan-c", "control-channel", {"type": "control"}),
            StoredChannel("chan-d", "data-channel", {"type": "data"}))
SECRETS = (EXT_KEY, GW.key, SENSOR.key)


def provisioned(tmp_path: Path) -> tuple[AgentSettings, Store, ThrowawayCA]:
    """A state directory with a stored identity and one current generation (two certs)."""
    settings = load_agent_settings({"state_dir": tmp_path / "agent", "external_id": EXT_ID,
                                    "external_key": EXT_KEY}, env={})
    resolve_identity(settings.state_dir, external_id=EXT_ID, external_key=EXT_KEY)
    ca = ThrowawayCA(tmp_path / "ca")
    certificates = {t.id: ca.issue_client(t.id, ttl_s=3600) for t in (GW, SENSOR)}
    store = Store(settings.state_dir)
    with store.lock():
        number = store.write_generation(GenerationData(
            things=(GW, SENSOR), channels=CHANNELS, gateway_thing_id=GW.id,
            bootstrap_content="{}", source="mapping", external_id=EXT_ID,
            certificates=certificates, ca_pem=ca.cert_pem))
        store.switch_current(number)
        store.save_state(dataclasses.replace(
            store.load_state().bump("renewals", 2).bump("failures:ServiceUnavailable"),
            phase=Phase.PROVISIONED, next_action="renew",
            next_action_at="2030-01-01T00:00:00+00:00"))
    return settings, store, ca


def test_text_and_json_come_from_one_status(tmp_path: Path) -> None:
    """Every thing, channel and certificate of the JSON document is in the text, no key."""
    settings, store, _ = provisioned(tmp_path)
    status = gateway_status(settings, store)
    doc = status.to_dict()
    text = "\n".join(render_text(status))
    assert doc["state"] == "provisioned" and doc["external_id"] == EXT_ID
    assert doc["current_generation"] == 1 and doc["generations"] == [1]
    assert [t["id"] for t in doc["things"]] == [GW.id, SENSOR.id]  # type: ignore[index]
    assert [t["gateway"] for t in doc["things"]] == [True, False]  # type: ignore[index]
    assert [c["type"] for c in doc["channels"]] == ["control", "data"]  # type: ignore[index]
    for row in (*doc["things"], *doc["channels"]):  # type: ignore[misc]
        assert row["id"] in text
    for cert in doc["certificates"]:  # type: ignore[attr-defined]
        assert cert["subject"] == f"CN={cert['thing_id']}" and not cert["expired"]
        assert f"certificate  {cert['subject']}  expires {cert['not_after']}" in text
    assert doc["ca"] is not None and "next         renew at 2030-01-01T00:00:00+00:00" in text
    rendered = json.dumps(doc) + text
    for secret in SECRETS:
        assert secret not in rendered


def test_verbose_adds_settings_and_journal_without_secrets(tmp_path: Path) -> None:
    """--verbose: every setting with its source (secrets as <set>), the recent journal."""
    settings, store, _ = provisioned(tmp_path)
    status = gateway_status(settings, store)
    doc = status.to_dict(verbose=True)
    rows = {row["name"]: row for row in doc["settings"]}  # type: ignore[attr-defined]
    assert rows["external_key"]["value"] == "<set>"
    assert isinstance(doc["journal"], list)
    text = "\n".join(render_text(status, verbose=True))
    assert "settings:" in text and EXT_KEY not in text + json.dumps(doc)
    assert "settings" not in status.to_dict()


def test_the_enroll_summary_is_the_status_summary(tmp_path: Path) -> None:
    """summarize(generation) is exactly what status shows as things/channels/certificates."""
    settings, store, _ = provisioned(tmp_path)
    now = datetime.now(timezone.utc)
    generation = store.current_generation()
    assert generation is not None
    assert summarize(generation, now) == gateway_status(settings, store, now=now).credentials


def test_an_unprovisioned_gateway_and_an_expired_certificate(tmp_path: Path) -> None:
    """No generation: empty lists; a certificate past not_after is EXPIRED in both views."""
    empty = load_agent_settings({"state_dir": tmp_path / "empty"}, env={})
    status = gateway_status(empty, Store(empty.state_dir))
    assert status.to_dict()["things"] == [] and status.current_generation is None
    assert "generation   none (run: edge-provision enroll)" in render_text(status)
    settings, store, _ = provisioned(tmp_path)
    later = gateway_status(settings, store, now=datetime.now(timezone.utc) + timedelta(days=2))
    certs = later.to_dict()["certificates"]
    assert all(c["expired"] and c["expires_in_s"] < 0 for c in certs)  # type: ignore[attr-defined]
    assert sum("EXPIRED" in line for line in render_text(later)) == 2


def test_metrics_are_one_more_view(tmp_path: Path) -> None:
    """The Prometheus textfile: expiry per thing, generation, renewals, failures by class."""
    settings, store, _ = provisioned(tmp_path)
    status = gateway_status(settings, store)
    text = metrics_text(status)
    for cert in status.credentials.certificates:
        assert f'thing_id="{cert.thing_id}"' in text
    assert "edge_provision_current_generation 1" in text
    assert "edge_provision_renewals_total 2" in text
    assert 'edge_provision_failures_total{class="ServiceUnavailable"} 1' in text
    for secret in SECRETS:
        assert secret not in text
