"""The fleet zone's import rules: shared core and the daemon's backoff only; only cli uses it."""

from __future__ import annotations

from test_architecture import MODULES, _imports, _project_imports, _top_module

FLEET = sorted(m for m in MODULES if m.startswith("edge_provision.fleet"))
ALLOWED_AGENT = {"edge_provision.agent.backoff", "edge_provision.agent.mqtt"}


def test_fleet_exists() -> None:
    """The checker sees the zone (so the tests below can fail)."""
    assert "edge_provision.fleet.runner" in FLEET
    assert "edge_provision.agent.backoff" in {_top_module(i) for m in FLEET
                                             for i in _project_imports(m)}


def test_fleet_imports_no_lab_and_only_backoff_and_mqtt_check_of_the_agent() -> None:
    """fleet/ never imports lab/; of agent/ only the backoff policy and the MQTT check."""
    for module in FLEET:
        deps = {_top_module(i) for i in _project_imports(module)}
        assert not any(d.startswith("edge_provision.lab") for d in deps), module
        agent = {d for d in deps if d.startswith("edge_provision.agent")}
        assert agent <= ALLOWED_AGENT, (module, agent)
        assert "edge_provision.cli" not in {d.rsplit(".", 1)[0] for d in deps}, module


def test_fleet_imports_no_third_party_library_directly() -> None:
    """paho, requests and cryptography stay in their own zones (mqtt, http, crypto)."""
    for module in FLEET:
        roots = {i.split(".")[0] for i in _imports(MODULES[module])}
        assert not roots & {"paho", "requests", "urllib3", "cryptography", "fastapi"}, module


def test_only_the_cli_imports_fleet() -> None:
    """Nothing but edge_provision.cli.* imports the fleet zone."""
    users = {name for name in MODULES if not name.startswith("edge_provision.fleet")
             and any(_top_module(i).startswith("edge_provision.fleet")
                     for i in _project_imports(name))}
    assert users == {"edge_provision.cli.simulate"}
