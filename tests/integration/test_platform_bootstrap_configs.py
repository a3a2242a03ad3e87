"""BootstrapConfigsClient against the fake Mainflux: the configs API and its quirks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from edge_provision.errors import AlreadyProvisioned, Rejected, ServiceUnavailable
from edge_provision.http import HttpClient
from edge_provision.platform.bootstrap_configs import (
    BootstrapConfigsClient,
    ConfigState,
    NewConfig,
    bootstrap_root,
)
from edge_provision.platform.things import NewChannel, NewThing, ThingsClient
from edge_provision.platform.users import ApiKey
from edge_provision.testing.mainflux import FakeMainflux


@pytest.fixture(params=["0.12", "0.13"])
def fake(request: pytest.FixtureRequest) -> Iterator[FakeMainflux]:
    """A started fake of each generation."""
    with FakeMainflux(generation=request.param) as f:
        yield f


@pytest.fixture
def things(fake: FakeMainflux) -> Iterator[ThingsClient]:
    """A Things client."""
    with HttpClient(fake.things_url) as http:
        yield ThingsClient(http, ApiKey(fake.api_key()))


@pytest.fixture
def configs(fake: FakeMainflux) -> Iterator[BootstrapConfigsClient]:
    """A Bootstrap configs client, built from an upstream-style URL ending in /things."""
    with HttpClient(bootstrap_root(fake.bootstrap_url + "/things/")) as http:
        yield BootstrapConfigsClient(http, ApiKey(fake.api_key()))


def _setup(things: ThingsClient, key: str | None = None) -> tuple[str, str, str, str]:
    (gw,) = things.create_things([NewThing("gw", key=key)])
    ctrl, data = things.create_channels([NewChannel("control", {"type": "control"}),
                                         NewChannel("data", {"type": "data"})])
    return gw.id, gw.key, ctrl.id, data.id


def test_create_view_update_delete(things: ThingsClient, configs: BootstrapConfigsClient,
                                   fake: FakeMainflux) -> None:
    """The id comes from Location; views show channels, not certificates; the thing outlives it."""
    gw, gw_key, ctrl, data = _setup(things)
    config_id = configs.create(NewConfig("ext-1", "extkey-1", gw, (ctrl, data), name="gw-cfg",
                                         content='{"agent":{}}'))
    assert config_id == gw
    view = configs.view(gw)
    assert view is not None
    assert (view.thing_key, view.external_id, view.external_key, view.name, view.content,
            view.state) == (gw_key, "ext-1", "extkey-1", "gw-cfg", '{"agent":{}}', 0)
    assert [c.type for c in view.channels] == ["control", "data"]
    configs.update(gw, name="renamed", content="{}")
    configs.update_certs(gw, client_cert="C", client_key="K", ca_cert="A")
    listed = configs.configs(external_id="ext-1")
    assert listed.total == 1 and listed.items[0].name == "renamed"
    assert listed.items[0].channels == ()  # the list carries no channels
    assert fake.configs()[0]["client_key"] == "K"
    configs.delete(gw)
    configs.delete(gw)
    assert configs.view(gw) is None and fake.counts()["things"] == 1


def test_whitelisting_connects_and_refuses_existing_pairs(
    things: ThingsClient, configs: BootstrapConfigsClient, fake: FakeMainflux
) -> None:
    """ACTIVE connects every channel; if one pair exists already it is a 503 (state stays 0)."""
    gw, _key, ctrl, data = _setup(things)
    configs.create(NewConfig("ext-1", "k", gw, (ctrl, data)))
    configs.set_state(gw, ConfigState.ACTIVE)
    assert sorted(fake.connections()) == sorted([(ctrl, gw), (data, gw)])
    assert configs.configs(state=ConfigState.ACTIVE).total == 1
    (dev,) = things.create_things([NewThing("dev")])
    things.connect([ctrl], [dev.id])
    configs.create(NewConfig("ext-2", "k", dev.id, (ctrl, data)))
    with pytest.raises(ServiceUnavailable):
        configs.set_state(dev.id, ConfigState.ACTIVE)
    view = configs.view(dev.id)
    assert view is not None and view.state == 0


def test_a_disconnect_resets_every_state(things: ThingsClient, configs: BootstrapConfigsClient,
                                         fake: FakeMainflux) -> None:
    """Dropping a channel from an active config resets EVERY config to 0 (upstream bug)."""
    gw, _key, ctrl, data = _setup(things)
    (other,) = things.create_things([NewThing("other")])
    configs.create(NewConfig("ext-1", "k", gw, (ctrl, data)))
    configs.create(NewConfig("ext-2", "k", other.id, (ctrl,)))
    configs.set_state(gw, ConfigState.ACTIVE)
    configs.set_state(other.id, ConfigState.ACTIVE)
    configs.update_connections(gw, [ctrl])
    assert configs.configs(state=ConfigState.ACTIVE).total == 0
    assert (ctrl, other.id) in fake.connections()  # connections stay


def test_conflicts_and_refusals(things: ThingsClient, configs: BootstrapConfigsClient,
                                fake: FakeMainflux) -> None:
    """Duplicate external_id is AlreadyProvisioned; unknown thing or channel Rejected."""
    gw, _key, ctrl, _data = _setup(things)
    (dev,) = things.create_things([NewThing("dev")])
    configs.create(NewConfig("ext-1", "k", gw, (ctrl,)))
    with pytest.raises(AlreadyProvisioned):
        configs.create(NewConfig("ext-1", "k", dev.id, (ctrl,)))
    with pytest.raises(Rejected):
        configs.create(NewConfig("ext-3", "k", "0b9e8a41-5c3d-4f6e-9a21-7d0c4e5f6a11", (ctrl,)))
    with pytest.raises(Rejected):
        configs.create(NewConfig("ext-4", "k", dev.id, ("0b9e8a41-5c3d-4f6e-9a21-7d0c4e5f6a11",)))
    assert fake.counts()["bootstrap_configs"] == 1


def test_short_keys_are_unpadded_and_long_ones_fail(things: ThingsClient,
                                                    configs: BootstrapConfigsClient) -> None:
    """A 9-character key reads back without Bootstrap's padding; a 40-character one is a 500."""
    gw, gw_key, ctrl, _data = _setup(things, key="short-key")
    configs.create(NewConfig("ext-1", "k", gw, (ctrl,)))
    view = configs.view(gw)
    assert view is not None and view.thing_key == gw_key == "short-key"
    (long,) = things.create_things([NewThing("long", key="x" * 40)])
    with pytest.raises(ServiceUnavailable):
        configs.create(NewConfig("ext-2", "k", long.id, (ctrl,)))


def test_bootstrap_root() -> None:
    """Upstream's MF_PROVISION_BS_SVC_URL ends in /things; the client wants the root."""
    assert bootstrap_root("http://bs:8202/things") == "http://bs:8202"
    assert bootstrap_root("http://bs:8202/things/") == "http://bs:8202"
    assert bootstrap_root("http://bs:8202") == "http://bs:8202"
    assert bootstrap_root("http://gw/bootstrap/things") == "http://gw/bootstrap"
