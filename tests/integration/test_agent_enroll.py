"""Enrollment against the real lab server (in-process agent, recording proxy in between)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from _agent_lab import agent_settings as _agent_settings
from _agent_lab import lab_total, start_lab
from _agent_proxy import GatedProxy

from edge_provision.agent import wiring
from edge_provision.agent.enroll import EnrollResult
from edge_provision.agent.store import Store
from edge_provision.crypto import pki
from edge_provision.errors import AlreadyProvisioned
from edge_provision.lab.server import RunningLabServer
from edge_provision.settings import AgentSettings

EXT_ID = "02:42:ac:11:00:17"
EXT_KEY = "integration-external-key-17"
MULTI_LAYOUT = """
[bootstrap]
  provision = true
  autowhite_list = true
  [bootstrap.content.agent.heartbeat]
    interval = "30s"

[[things]]
  name = "gateway"
  [things.metadata]
    external_id = "placeholder"

[[things]]
  name = "sensor"
  [things.metadata]
    model = "th-100"

[[channels]]
  name = "data-channel"
  [channels.metadata]
    type = "data"

[[channels]]
  name = "control-channel"
  [channels.metadata]
    type = "control"
"""


@pytest.fixture
def proxy(lab: RunningLabServer) -> Iterator[GatedProxy]:
    """A recording proxy in front of the lab server."""
    gated = GatedProxy(lab.url)
    yield gated
    gated.stop()


def agent_settings(tmp_path: Path, url: str, **flags: object) -> AgentSettings:
    """Agent settings against ``url`` with a fixed identity."""
    return _agent_settings(tmp_path, url, (EXT_ID, EXT_KEY), **flags)


def platform_count(lab: RunningLabServer, tmp_path: Path, what: str = "things") -> int:
    """How many ``what`` the lab server holds (operator listing)."""
    return lab_total(lab.url, tmp_path / "lab", what)


def enroll(settings: AgentSettings, force: bool = False) -> EnrollResult:
    """One enrollment through the composition root."""
    return wiring.run_enroll(settings, force=force)


def test_first_enrollment_uses_a_csr_and_keeps_the_key(tmp_path: Path, lab: RunningLabServer,
                                                       proxy: GatedProxy) -> None:
    """CSR path: key generated here (0600), never sent; certificate chains to the lab CA."""
    result = enroll(agent_settings(tmp_path, proxy.url))
    assert result.created_mapping and result.generation == 1
    gen = Store(tmp_path / "agent").current_generation()
    assert gen is not None and gen.certificates == (result.thing_id,)
    pem = gen.read_certificate(result.thing_id)
    assert pem is not None
    cert_pem, key_pem = pem
    assert pki.cert_matches_key(cert_pem, key_pem)
    assert pki.parse_certificate(cert_pem).common_name == result.thing_id
    pki.verify_chain(cert_pem, (tmp_path / "lab" / "ca" / "ca.crt").read_text())
    key_path = gen.key_path(result.thing_id)
    assert key_path is not None and key_path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "agent").stat().st_mode & 0o777 == 0o700
    assert gen.path.stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "agent" / "identity.json").stat().st_mode & 0o777 == 0o600
    for name in ("credentials.json", "things.json", "state.json"):
        path = gen.path / name if name != "state.json" else tmp_path / "agent" / name
        assert path.stat().st_mode & 0o777 == 0o600
    bodies = proxy.all_bodies()
    key_body = key_pem.split("-----")[2].strip().splitlines()[0].encode()
    assert b"PRIVATE KEY" not in bodies and key_body not in bodies
    assert len(proxy.requests_to("POST", "/certs/csr")) == 1
    assert platform_count(lab, tmp_path) == 1


def test_repeat_is_a_no_op(tmp_path: Path, lab: RunningLabServer, proxy: GatedProxy) -> None:
    """The second enroll sends no request at all and keeps generation 1."""
    settings = agent_settings(tmp_path, proxy.url)
    enroll(settings)
    sent = len(proxy.forwarded)
    result = enroll(settings)
    assert not result.changed and result.generation == 1
    assert len(proxy.forwarded) == sent
    assert len(proxy.requests_to("POST", "/mapping")) == 1


def test_force_reissues_certificates_for_the_same_things(tmp_path: Path, lab: RunningLabServer,
                                                         proxy: GatedProxy) -> None:
    """--force: generation 2, same thing, new certificate, no second /mapping."""
    settings = agent_settings(tmp_path, proxy.url)
    first = enroll(settings)
    second = enroll(settings, force=True)
    assert second.generation == 2 and second.thing_id == first.thing_id
    assert second.credentials.certificates[0].serial != first.credentials.certificates[0].serial
    assert len(proxy.requests_to("POST", "/mapping")) == 1
    assert platform_count(lab, tmp_path) == 1


def test_reset_then_enroll_gets_the_same_things(tmp_path: Path, lab: RunningLabServer,
                                                proxy: GatedProxy) -> None:
    """After forget_current the lookup returns the same thing; old generations pruned later."""
    settings = agent_settings(tmp_path, proxy.url, keep_generations=1)
    first = enroll(settings)
    store = Store(tmp_path / "agent")
    with store.lock():
        store.forget_current()
    assert store.list_generations() == (1,)
    again = enroll(settings)
    assert again.thing_id == first.thing_id and not again.created_mapping
    assert again.generation == 2 and store.list_generations() == (2,)
    assert len(proxy.requests_to("POST", "/mapping")) == 1
    assert platform_count(lab, tmp_path) == 1


def test_multi_thing_layout_stores_every_thing(tmp_path: Path) -> None:
    """Gateway plus sensor: both things (keys), both certificates, control channel first."""
    lab = start_lab(tmp_path, MULTI_LAYOUT)
    try:
        result = enroll(agent_settings(tmp_path, lab.url))
        gen = Store(tmp_path / "agent").current_generation()
        assert gen is not None and len(gen.things) == 2
        assert gen.gateway_thing.name == "gateway"
        assert set(gen.certificates) == {t.id for t in gen.things}
        assert [c.metadata.get("type") for c in gen.channels] == ["control", "data"]
        assert json.loads(gen.bootstrap_content)["agent"]["heartbeat"]["interval"] == "30s"
        assert platform_count(lab, tmp_path) == 2
        assert {t.id for t in result.credentials.things} == {t.id for t in gen.things}
        store = Store(tmp_path / "agent")
        with store.lock():
            store.forget_current()
        again = enroll(agent_settings(tmp_path, lab.url))  # lookup path: extra_things kept
        assert {t.id for t in again.credentials.things} == {t.id for t in gen.things}
        assert platform_count(lab, tmp_path) == 2
    finally:
        lab.stop()


def test_wrong_external_key_is_a_clear_permanent_error(tmp_path: Path, lab: RunningLabServer
                                                       ) -> None:
    """Another gateway already holds the external_id: AlreadyProvisioned, what to do."""
    enroll(agent_settings(tmp_path, lab.url))
    other = agent_settings(tmp_path, lab.url, state_dir=tmp_path / "other",
                           external_key="a-different-key-123")
    with pytest.raises(AlreadyProvisioned) as info:
        enroll(other)
    assert "original external_key" in str(info.value)
    assert "a-different-key-123" not in str(info.value)
    assert platform_count(lab, tmp_path) == 1
    state = Store(tmp_path / "other").load_state()
    assert state.phase.value == "failed-permanent" and not state.mapping_in_flight


def test_hand_off_writes_the_agent_files_after_enrollment(tmp_path: Path,
                                                          lab: RunningLabServer) -> None:
    """The Agent config and env file point at the current link with the real ids."""
    settings = agent_settings(tmp_path, lab.url, agent_config=tmp_path / "agent.toml",
                              agent_env=tmp_path / "agent.env")
    result = enroll(settings)
    assert result.handoff is not None and result.handoff.ok
    env = (tmp_path / "agent.env").read_text()
    assert f'MF_AGENT_MQTT_USERNAME="{result.thing_id}"' in env
    control = next(c.id for c in result.credentials.channels if c.type == "control")
    assert f'MF_AGENT_CONTROL_CHANNEL="{control}"' in env
    assert str(tmp_path / "agent" / "current" / f"{result.thing_id}.key") in env
