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


def _kinds(status: object) -> list[str]:
    return [d["kind"] for d in status.to_dict()["damage"]]  # type: ignore[attr-defined]


def test_a_corrupt_identity_file_is_named_and_status_still_works(tmp_path: Path) -> None:
    """identity.json not JSON: status answers, with the damage naming the file and the fix."""
    settings, store, _ = provisioned(tmp_path)
    (settings.state_dir / "identity.json").write_text("{not json")
    status = gateway_status(settings, store)
    assert status.phase is Phase.PROVISIONED and status.external_id is None
    assert _kinds(status) == ["identity-unreadable"]
    (damage,) = status.damage
    assert "identity.json: not valid JSON" in damage.message and "restore it" in damage.message
    assert any(line.startswith("PROBLEM      identity-unreadable: ") for line in
               render_text(status))


def test_an_edited_identity_is_a_mismatch_with_the_generation(tmp_path: Path) -> None:
    """identity.json edited to another id: status shows both ids and that enroll refuses."""
    base, store, _ = provisioned(tmp_path)
    settings = load_agent_settings({"state_dir": base.state_dir}, env={})  # no id setting
    path = settings.state_dir / "identity.json"
    path.write_text(path.read_text().replace(EXT_ID, "02:42:ac:11:00:56"))
    status = gateway_status(settings, store)
    assert status.external_id == "02:42:ac:11:00:56" and _kinds(status) == ["identity-mismatch"]
    message = status.damage[0].message
    assert f"'02:42:ac:11:00:56' is not '{EXT_ID}'" in message and "--force" in message


def test_the_only_generation_damaged_is_said_as_it_is(tmp_path: Path) -> None:
    """A damaged only generation: state `damaged`, next action enroll, the reason named."""
    settings, store, _ = provisioned(tmp_path)
    (settings.state_dir / "generations" / "1" / "things.json").write_text("[]")
    status = gateway_status(settings, store)
    doc = status.to_dict()
    assert (doc["state"], doc["current_generation"]) == ("damaged", None)
    assert (doc["next_action"], doc["next_action_at"]) == ("enroll", None)
    (damage,) = status.damage
    assert damage.kind == "generation-damaged"
    assert "things.json does not match its sha256" in damage.message
    text = render_text(status)
    assert "state        damaged" in text and "next         enroll now" in text


def test_a_loosened_key_file_is_reported(tmp_path: Path) -> None:
    """A private key chmod 0644: status names it; nothing is changed by reading."""
    settings, store, _ = provisioned(tmp_path)
    key = settings.state_dir / "generations" / "1" / f"{GW.id}.key"
    key.chmod(0o644)
    (settings.state_dir / "identity.json").chmod(0o640)
    status = gateway_status(settings, store)
    assert _kinds(status) == ["file-mode", "file-mode"]
    messages = " ".join(d.message for d in status.damage)
    assert f"{key} is 0644, expected 0600" in messages and "identity.json is 0640" in messages
    assert key.stat().st_mode & 0o777 == 0o644


def test_a_certificate_named_after_its_thing_key_never_shows_the_key(tmp_path: Path) -> None:
    """Upstream Certs puts the thing key in the CN: status shows `CN=<thing key>` instead."""
    settings = load_agent_settings({"state_dir": tmp_path / "agent", "external_id": EXT_ID,
                                    "external_key": EXT_KEY}, env={})
    resolve_identity(settings.state_dir, external_id=EXT_ID, external_key=EXT_KEY)
    ca = ThrowawayCA(tmp_path / "ca")
    store = Store(settings.state_dir)
    with store.lock():
        store.switch_current(store.write_generation(GenerationData(
            things=(GW,), channels=CHANNELS, gateway_thing_id=GW.id, bootstrap_content="{}",
            source="mapping", external_id=EXT_ID,
            certificates={GW.id: ca.issue_client(GW.key)}, ca_pem=ca.cert_pem)))
    status = gateway_status(settings, store)
    (cert,) = status.to_dict()["certificates"]  # type: ignore[misc]
    assert cert["subject"] == "CN=<thing key>"
    rendered = json.dumps(status.to_dict(verbose=True)) + "\n".join(render_text(status))
    assert GW.key not in rendered and "CN=<thing key>" in rendered


def test_recorded_certificate_facts_need_no_crypto_library(tmp_path: Path) -> None:
    """A store given a describer records what each certificate says; status reads it back
    (the same summary as parsing the files) without parsing a certificate."""
    from edge_provision.agent.certificates import describe

    settings, _, ca = provisioned(tmp_path / "parsed")
    store = Store(settings.state_dir, describe_certificate=describe)
    with store.lock():
        old = store.current_generation()
        assert old is not None and old.cert_facts == {}
        store.switch_current(store.write_generation(GenerationData(
            things=old.things, channels=old.channels, gateway_thing_id=old.gateway_thing_id,
            bootstrap_content="{}", source="renewal", external_id=EXT_ID,
            certificates={t: old.read_certificate(t) for t in old.certificates},  # type: ignore[misc]
            ca_pem=ca.cert_pem)))
    new = store.current_generation()
    assert new is not None and sorted(new.cert_facts) == sorted(
        [f"{GW.id}.crt", f"{SENSOR.id}.crt", "ca.crt"])
    now = datetime.now(timezone.utc)
    assert summarize(new, now) == summarize(dataclasses.replace(new, cert_facts={}), now)
