"""ThingsClient against the fake Mainflux over HTTP, in both auth generations."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from edge_provision.errors import AlreadyProvisioned, Rejected, ServiceUnavailable, Unauthorized
from edge_provision.http import AuthScheme, HttpClient
from edge_provision.platform.things import NewChannel, NewThing, ThingsClient
from edge_provision.platform.users import ApiKey
from edge_provision.testing.mainflux import FakeMainflux

Seen = list[tuple[str, str, str]]
UNKNOWN = "0b9e8a41-5c3d-4f6e-9a21-7d0c4e5f6a11"


@pytest.fixture(params=["0.12", "0.13"])
def fake(request: pytest.FixtureRequest) -> Iterator[FakeMainflux]:
    """A started fake of each generation."""
    with FakeMainflux(generation=request.param) as f:
        yield f


@pytest.fixture
def seen() -> Seen:
    """What the observer was told."""
    return []


@pytest.fixture
def client(fake: FakeMainflux, seen: Seen) -> Iterator[ThingsClient]:
    """A ThingsClient with the admin's API key and the AUTO header form."""
    with HttpClient(fake.things_url, connect_timeout_s=2, read_timeout_s=5) as http:
        yield ThingsClient(http, ApiKey(fake.api_key()),
                           observer=lambda *a: seen.append(a))


def _two_channels(client: ThingsClient) -> tuple[str, str]:
    ctrl, data = client.create_channels([NewChannel("control", {"type": "control"}),
                                         NewChannel("data", {"type": "data"})])
    return ctrl.id, data.id


def test_bulk_creation_in_request_order(client: ThingsClient, fake: FakeMainflux) -> None:
    """One bulk call creates every thing; ids, keys and metadata come back in request order."""
    made = client.create_things([NewThing("gw", {"external_id": "e1"}), NewThing("sensor")])
    assert [t.name for t in made] == ["gw", "sensor"]
    assert made[0].metadata == {"external_id": "e1"} and made[1].metadata == {}
    assert {t["id"]: t["key"] for t in fake.things()} == {t.id: t.key for t in made}
    assert fake.calls("things", "POST /things/bulk", "201") == 1


def test_auto_scheme_learns_the_generation_once(client: ThingsClient, fake: FakeMainflux,
                                                seen: Seen) -> None:
    """AUTO tries Bearer first; on 0.12 it falls back to bare once and then stays bare."""
    for n in range(3):
        client.create_things([NewThing(f"t{n}")])
    refused = fake.calls("things", "POST /things/bulk", "401")
    assert refused == (1 if fake.generation == "0.12" else 0)
    assert fake.calls("things", "POST /things/bulk", "201") == 3
    assert seen == [("things", "POST /things/bulk", "201")] * 3  # one logical call each


def test_the_wrong_fixed_scheme_is_unauthorized(fake: FakeMainflux) -> None:
    """Forcing the other generation's header form gets Unauthorized, not a silent retry."""
    wrong = AuthScheme.MODERN if fake.generation == "0.12" else AuthScheme.BARE
    with HttpClient(fake.things_url) as http:
        client = ThingsClient(http, ApiKey(fake.api_key()), auth_scheme=wrong)
        with pytest.raises(Unauthorized):
            client.things()


def test_duplicate_key_creates_nothing_on_0_12(client: ThingsClient, fake: FakeMainflux) -> None:
    """A clashing caller-chosen key is AlreadyProvisioned; 0.12 rolls the whole batch back."""
    client.create_things([NewThing("a", key="fixed-key")])
    with pytest.raises(AlreadyProvisioned):
        client.create_things([NewThing("b"), NewThing("c", key="fixed-key")])
    expected = 1 if fake.generation == "0.12" else 2  # 0.13 saves one by one
    assert fake.counts()["things"] == expected


def test_connect_all_or_nothing(client: ThingsClient, fake: FakeMainflux) -> None:
    """connect makes every pair in one call; a repeat is 409, an unknown id 404 (nothing made)."""
    gw, dev = client.create_things([NewThing("gw"), NewThing("dev")])
    ctrl, data = _two_channels(client)
    client.connect([ctrl, data], [gw.id])
    assert sorted(fake.connections()) == sorted([(ctrl, gw.id), (data, gw.id)])
    with pytest.raises(AlreadyProvisioned):
        client.connect([ctrl], [gw.id])
    with pytest.raises(Rejected):
        client.connect([ctrl, UNKNOWN], [dev.id])
    assert len(fake.connections()) == 2
    assert {c.id for c in client.channels_of(gw.id).items} == {ctrl, data}
    client.disconnect(data, gw.id)
    assert fake.connections() == [(ctrl, gw.id)]


def test_search_by_metadata_and_name(client: ThingsClient) -> None:
    """metadata is containment, name a case-insensitive substring; pages carry the total."""
    client.create_things([NewThing("gw-a", {"m": {"ext": "a", "n": 1}}),
                          NewThing("gw-b", {"m": {"ext": "b"}}), NewThing("other")])
    found = client.things(metadata={"m": {"ext": "a"}})
    assert [t.name for t in found.items] == ["gw-a"] and found.total == 1
    assert client.things(name="GW-").total == 2
    page = client.things(offset=1, limit=1)
    assert (page.total, page.offset, page.limit, len(page.items)) == (3, 1, 1, 1)
    channel = client.create_channels([NewChannel("c", {"type": "data"})])[0]
    assert [c.id for c in client.channels(metadata={"type": "data"}).items] == [channel.id]
    with pytest.raises(ValueError, match="limit"):
        client.things(limit=101)


def test_views_and_deletes(client: ThingsClient, fake: FakeMainflux) -> None:
    """Unknown ids read as None and delete quietly; deletes take connections along."""
    (gw,) = client.create_things([NewThing("gw")])
    ctrl, data = _two_channels(client)
    client.connect([ctrl, data], [gw.id])
    got = client.thing(gw.id)
    assert got is not None and (got.id, got.key) == (gw.id, gw.key)
    channel = client.channel(ctrl)
    assert channel is not None and channel.type == "control"
    unknown = UNKNOWN
    assert client.thing(unknown) is None and client.channel(unknown) is None
    client.delete_channel(data)
    assert fake.connections() == [(ctrl, gw.id)]
    client.delete_thing(gw.id)
    client.delete_thing(gw.id)
    client.delete_channel(unknown)
    assert fake.counts() == {"users": 1, "things": 0, "channels": 1, "connections": 0,
                             "bootstrap_configs": 0}


def test_failures_are_translated_and_observed(client: ThingsClient, fake: FakeMainflux,
                                              seen: Seen) -> None:
    """5xx and dropped connections are ServiceUnavailable; the observer sees status or 'error'."""
    client.things()  # settle the header form first
    seen.clear()
    fake.fail("POST /things/bulk", status=500)
    with pytest.raises(ServiceUnavailable):
        client.create_things([NewThing("x")])
    fake.fail("POST /connect", drop="before")
    with pytest.raises(ServiceUnavailable):
        client.connect([UNKNOWN], [UNKNOWN])
    assert seen == [("things", "POST /things/bulk", "500"), ("things", "POST /connect", "error")]
