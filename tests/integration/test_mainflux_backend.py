"""The mainflux lab backend against the fake Mainflux: calls, idempotency, failures, races."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from edge_provision.crypto.pki import IssuedCert, LocalCA
from edge_provision.errors import (
    AlreadyProvisioned,
    ConfigError,
    EdgeProvisionError,
    Rejected,
    ServiceUnavailable,
)
from edge_provision.http import HttpClient
from edge_provision.lab.backends.mainflux import LEFTOVERS, MainfluxBackend, MainfluxTarget
from edge_provision.lab.models import MappingRecord, ThingRecord
from edge_provision.layout import (
    Layout,
    PlannedCertificate,
    default_layout,
    load_layout,
    plan,
)
from edge_provision.metrics import render
from edge_provision.platform.things import NewThing, ThingsClient
from edge_provision.platform.users import ApiKey
from edge_provision.testing.mainflux import ADMIN_EMAIL, ADMIN_PASSWORD, FakeMainflux

EXT_ID = "02:42:ac:11:00:07"
EXT_KEY = "gateway-external-key-0007"
MARKERS = ("edge_provision_mapping", "edge_provision_request", "edge_provision_index")

MULTI_LAYOUT = Path(__file__).resolve().parents[1] / "data" / "layouts" / "valid_multi.toml"

# the calls of a new mapping with the built-in layout, in order
CREATE_STEPS = [
    ("things", "GET /things"),
    ("things", "POST /things/bulk"),
    ("things", "POST /channels/bulk"),
    ("bootstrap", "POST /things/configs"),
    ("bootstrap", "PUT /things/state/{id}"),
]


@pytest.fixture(params=["0.12", "0.13"])
def fake(request: pytest.FixtureRequest) -> Iterator[FakeMainflux]:
    """A started fake of each generation."""
    with FakeMainflux(generation=request.param) as f:
        yield f


def _backend(fake: FakeMainflux) -> MainfluxBackend:
    return MainfluxBackend(MainfluxTarget(fake.things_url, fake.bootstrap_url + "/things",
                                          api_key=fake.api_key(), read_timeout_s=10.0))


@pytest.fixture
def backend(fake: FakeMainflux) -> Iterator[MainfluxBackend]:
    """A backend with an API key and the AUTO header form, warmed up so that the form is known."""
    with _backend(fake) as b:
        b.provision_sync(plan(default_layout(), "warm-up", "k"), owner="admin")
        yield b


def _mapping(backend: MainfluxBackend, key: str = EXT_KEY, ext: str = EXT_ID,
             layout: Layout | None = None) -> MappingRecord:
    return backend.provision_sync(plan(layout or default_layout(), ext, key), owner="admin")


def _empty(fake: FakeMainflux) -> bool:
    """Nothing on the platform but the warm-up mapping (1 thing, 2 channels, 1 config, 2 links)."""
    counts = fake.counts()
    return (counts["things"], counts["channels"], counts["bootstrap_configs"],
            counts["connections"]) == (1, 2, 1, 2)


def test_new_mapping_in_five_calls_repeat_in_two(backend: MainfluxBackend,
                                                 fake: FakeMainflux) -> None:
    """Built-in layout: 5 outbound calls for a new mapping, 2 for a repeat (counted by the fake)."""
    fake.reset_calls()
    first = _mapping(backend)
    assert first.created
    assert [(s, e) for (s, e, _st) in fake.call_counts()] == CREATE_STEPS
    assert sum(fake.call_counts().values()) == 5
    fake.reset_calls()
    again = _mapping(backend)
    assert sum(fake.call_counts().values()) == 2
    assert not again.created
    assert (again.things, again.channels, again.whitelisted) == (
        first.things, first.channels, first.whitelisted)


def test_record_matches_the_platform(backend: MainfluxBackend, fake: FakeMainflux) -> None:
    """Ids and keys are the platform's; the gateway is whitelisted through Bootstrap (state 1)."""
    record = _mapping(backend)
    (gateway,) = record.things
    assert gateway.metadata == {"external_id": EXT_ID}  # markers are not shown
    on_platform = next(t for t in fake.things() if t["id"] == gateway.id)
    assert on_platform["key"] == gateway.key
    assert all(on_platform["metadata"].get(m) is not None for m in MARKERS)  # type: ignore[attr-defined]
    assert [c.name for c in record.channels] == ["control-channel", "data-channel"]
    assert record.whitelisted == (gateway.id,)
    config = next(c for c in fake.configs() if c["mainflux_id"] == gateway.id)
    assert (config["external_id"], config["external_key"], config["state"]) == (EXT_ID, EXT_KEY, 1)
    assert sorted((ch, th) for ch, th in fake.connections() if th == gateway.id) == sorted(
        (c.id, gateway.id) for c in record.channels)


def test_another_key_is_already_provisioned(backend: MainfluxBackend, fake: FakeMainflux) -> None:
    """The same external_id with a different key is refused, in 2 calls, creating nothing."""
    _mapping(backend)
    before = fake.counts()
    fake.reset_calls()
    with pytest.raises(AlreadyProvisioned, match="different external_key"):
        _mapping(backend, key="another-key")
    assert fake.counts() == before and sum(fake.call_counts().values()) == 2


def test_restart_sees_the_same_mapping(fake: FakeMainflux) -> None:
    """A new backend object (a restarted lab) repeats the mapping from the platform alone."""
    with _backend(fake) as first:
        made = _mapping(first)
    with _backend(fake) as second:
        again = _mapping(second)
        assert second.bootstrap_sync(EXT_ID, EXT_KEY) is not None
    assert not again.created and again.things == made.things and again.channels == made.channels
    assert fake.counts()["things"] == 1


@pytest.mark.parametrize("step", range(len(CREATE_STEPS)))
@pytest.mark.parametrize("how", ["status", "drop-before", "drop-after"])
def test_every_step_failing_leaves_nothing(backend: MainfluxBackend, fake: FakeMainflux,
                                           step: int, how: str) -> None:
    """Whichever call fails (an error, or a dropped connection before or after it was applied),
    the run deletes what it made; the next try then succeeds with one set."""
    service, endpoint = CREATE_STEPS[step]
    if how == "status":
        fault = fake.fail(endpoint, service=service, status=500)
    else:
        fault = fake.fail(endpoint, service=service,
                          drop="before" if how == "drop-before" else "after")
    with pytest.raises(ServiceUnavailable):
        _mapping(backend)
    assert fault.hits == 1
    assert _empty(fake), (fake.things(), fake.configs())
    assert backend.counters.samples(LEFTOVERS) == []
    record = _mapping(backend)
    assert record.created and fake.counts()["things"] == 2


def test_a_refused_config_is_undone_too(backend: MainfluxBackend, fake: FakeMainflux) -> None:
    """A 4xx from Bootstrap (Rejected) also removes the things and channels already made."""
    fake.fail("POST /things/configs", status=400)
    with pytest.raises(Rejected):
        _mapping(backend)
    assert _empty(fake)


def test_what_cannot_be_deleted_is_logged_and_counted(
    backend: MainfluxBackend, fake: FakeMainflux, caplog: pytest.LogCaptureFixture
) -> None:
    """When the rollback itself fails, the ids are logged (no secrets) and counted."""
    fake.fail("POST /things/configs", status=500)
    fake.fail("DELETE /things/{id}", status=500)
    with caplog.at_level(logging.INFO), pytest.raises(ServiceUnavailable):
        _mapping(backend)
    left = [t for t in fake.things() if t["metadata"].get("edge_provision_mapping") == EXT_ID]  # type: ignore[attr-defined]
    assert len(left) == 1 and fake.counts()["channels"] == 2  # the channels were deleted
    assert backend.counters.value(LEFTOVERS, kind="things") == 1
    assert left[0]["id"] in caplog.text and "leftovers" in caplog.text
    assert EXT_KEY not in caplog.text and str(left[0]["key"]) not in caplog.text
    assert "edge_provision_lab_upstream_leftovers_total{kind=\"things\"} 1" in render(
        backend.metrics())


def test_threads_with_one_external_id_make_one_set(backend: MainfluxBackend,
                                                   fake: FakeMainflux) -> None:
    """Concurrent requests for one external_id in one lab: one creates, all get the same answer."""
    results: list[MappingRecord] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(_mapping(backend))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and len(results) == 6
    assert sum(r.created for r in results) == 1
    assert all((r.things, r.channels) == (results[0].things, results[0].channels)
               for r in results)
    assert fake.counts()["things"] == 2 and fake.counts()["bootstrap_configs"] == 2


def test_two_labs_racing_end_with_the_winners_set(fake: FakeMainflux) -> None:
    """Two backends (two lab processes): the loser deletes its own set and returns the winner's."""
    gate = threading.Event()
    slow, fast = _backend(fake), _backend(fake)
    slow.counts()  # both settle the header form first
    fast.counts()
    looked_up = fake.calls("things", "GET /things", "200") + 1
    fake.fail("GET /things", hold=gate)  # the slow lab's lookup answers "nothing" late
    result: list[MappingRecord] = []
    loser = threading.Thread(target=lambda: result.append(_mapping(slow)))
    loser.start()
    try:
        for _ in range(1000):  # until the slow lookup was answered (and is held back)
            if fake.calls("things", "GET /things", "200") == looked_up:
                break
            threading.Event().wait(0.01)
        winner = _mapping(fast)
    finally:
        gate.set()
        loser.join(30)
    assert winner.created and result and not result[0].created
    assert (result[0].things, result[0].channels) == (winner.things, winner.channels)
    assert fake.calls("bootstrap", "POST /things/configs", "409") == 1
    assert fake.counts()["things"] == 1 and fake.counts()["channels"] == 2
    slow.close()
    fast.close()


def test_a_foreign_config_is_already_provisioned(backend: MainfluxBackend,
                                                 fake: FakeMainflux) -> None:
    """A config for the external_id that this lab did not make: 409 and nothing left behind."""
    with HttpClient(fake.bootstrap_url) as http:
        from edge_provision.platform.bootstrap_configs import BootstrapConfigsClient, NewConfig

        BootstrapConfigsClient(http, ApiKey(fake.api_key())).create(NewConfig(EXT_ID, "other"))
    with pytest.raises(AlreadyProvisioned, match="did not make"):
        _mapping(backend)
    counts = fake.counts()
    assert (counts["things"], counts["channels"]) == (2, 2)  # warm-up + Bootstrap's own thing


def test_an_orphan_set_does_not_block_a_mapping(backend: MainfluxBackend,
                                                fake: FakeMainflux) -> None:
    """Things a crashed run left (marked, no config) are skipped; repeats then take 3 calls."""
    with HttpClient(fake.things_url) as http:
        ThingsClient(http, ApiKey(fake.api_key())).create_things([NewThing("thing", {
            "edge_provision_mapping": EXT_ID, "edge_provision_request": "crashed",
            "edge_provision_index": 0, "edge_provision_things": 1,
            "edge_provision_channels": 2})])
    made = _mapping(backend)
    fake.reset_calls()
    again = _mapping(backend)
    assert made.created and not again.created and again.things == made.things
    assert sum(fake.call_counts().values()) == 3


def test_an_incomplete_mapping_is_reported(backend: MainfluxBackend, fake: FakeMainflux) -> None:
    """If someone deleted a channel of a mapping, a repeat says so instead of half an answer."""
    made = _mapping(backend)
    with HttpClient(fake.things_url) as http:
        ThingsClient(http, ApiKey(fake.api_key())).delete_channel(made.channels[1].id)
    with pytest.raises(Rejected, match="incomplete"):
        _mapping(backend)


def test_multi_thing_layout_with_certificates(backend: MainfluxBackend, fake: FakeMainflux,
                                              tmp_path: Path) -> None:
    """Three things, four channels, certificates: one extra /connect; the gateway's
    certificate goes into its config and comes back on a repeat."""
    ca = LocalCA.load_or_create(tmp_path / "ca", common_name="test CA")

    def issue(things: Sequence[ThingRecord], wanted: Sequence[PlannedCertificate]
              ) -> dict[str, tuple[IssuedCert, str]]:  # EC keys: quick to make
        return {things[w.thing_index].id: ca.issue(common_name=things[w.thing_index].id,
                                                   key_type="ec", key_bits=256, ttl_s=w.ttl_s)
                for w in wanted}

    layout = load_layout(MULTI_LAYOUT.read_text(encoding="utf-8"), str(MULTI_LAYOUT))
    fake.reset_calls()
    made = backend.provision_sync(plan(layout, EXT_ID, EXT_KEY), owner="admin", issue_certs=issue)
    assert sum(fake.call_counts().values()) == 6
    assert fake.calls("things", "POST /connect", "200") == 1
    gateway = made.things[1]
    assert [t.name for t in made.things] == ["sensor-a", "gateway", "sensor-b"]
    assert len(made.client_certs) == 3 and made.ca_cert == ca.cert_pem
    assert len([c for c in fake.connections() if c[1] in {t.id for t in made.things}]) == 12
    config = next(c for c in fake.configs() if c["mainflux_id"] == gateway.id)
    assert config["client_cert"] == made.client_certs[gateway.id]
    assert [c["name"] for c in config["mainflux_channels"]] == [  # type: ignore[union-attr]
        "control-channel", "data-channel", "export-channel", "events"]
    fake.reset_calls()
    again = backend.provision_sync(plan(layout, EXT_ID, EXT_KEY), owner="admin", issue_certs=issue)
    assert sum(fake.call_counts().values()) == 3  # + the device endpoint for the certificate
    assert again.things == made.things and again.channels == made.channels
    assert again.client_certs == {gateway.id: made.client_certs[gateway.id]}
    records = backend.list_certificates()  # kept by the lab, once, for the new mapping only
    assert records.total == 3 and {r.thing_id for r in records.items} == set(made.client_certs)
    assert all(r.cert_pem == made.client_certs[r.thing_id] for r in records.items)
    boot = backend.bootstrap_sync(EXT_ID, EXT_KEY)
    assert boot is not None and boot.client_key == made.client_keys[gateway.id]
    assert [t.name for t in boot.extra_things] == ["sensor-a", "sensor-b"]


def test_bootstrap_lookup(backend: MainfluxBackend) -> None:
    """The device-side lookup: the gateway's id, key, channels (control first) and content."""
    made = _mapping(backend)
    boot = backend.bootstrap_sync(EXT_ID, EXT_KEY)
    assert boot is not None
    assert (boot.thing_id, boot.thing_key) == (made.things[0].id, made.things[0].key)
    assert [c.name for c in boot.channels] == ["control-channel", "data-channel"]
    assert all(not any(m in c.metadata for m in MARKERS) for c in boot.channels)
    assert (boot.content, boot.state, boot.extra_things) == ("{}", 1, ())
    assert backend.bootstrap_sync(EXT_ID, "wrong-key") is None
    assert backend.bootstrap_sync("unknown-id", EXT_KEY) is None


def test_operator_views(backend: MainfluxBackend) -> None:
    """Things, channels, configs, connections, counts and thing authentication."""
    made = _mapping(backend)
    gateway = made.things[0]
    assert backend.authenticate_thing_sync(gateway.id, gateway.key) == gateway
    assert backend.authenticate_thing_sync(gateway.id, "nope") is None
    assert backend.counts() == {"things": 2, "channels": 4, "bootstrap_configs": 2,
                                "certificates": 0}
    assert {t.id for t in backend.list_things().items} >= {gateway.id}
    assert backend.list_channels(limit=1).total == 4
    configs = backend.list_bootstrap_configs()
    assert {c.external_id for c in configs.items} == {"warm-up", EXT_ID}
    assert set(backend.connections(gateway.id)) == {c.id for c in made.channels}


def test_login_credentials_are_renewed(fake: FakeMainflux) -> None:
    """With MF_PROVISION_USER/PASS the lab logs in at the Users service and renews on expiry."""
    target = MainfluxTarget(fake.things_url, fake.bootstrap_url, users_url=fake.users_url,
                            user=ADMIN_EMAIL, password=ADMIN_PASSWORD)
    with MainfluxBackend(target) as backend:
        assert _mapping(backend).created
        fake.expire_tokens()
        assert _mapping(backend, ext="second").created
    assert fake.calls("users", "POST /tokens", "201") == 2
    assert backend.counters.value("upstream_requests_total", service="users",
                                  endpoint="POST /tokens", status="201") == 2


def test_plans_it_cannot_make_are_refused_before_any_call(backend: MainfluxBackend,
                                                          fake: FakeMainflux) -> None:
    """No bootstrap config (nothing to find the mapping by) or reserved metadata: ConfigError."""
    no_gateway = load_layout('[bootstrap]\n  provision = false\n'
                             '[[things]]\n  name = "t"\n[[channels]]\n  name = "c"\n')
    reserved = load_layout('[[things]]\n  name = "t"\n  [things.metadata]\n'
                           '    external_id = ""\n    edge_provision_index = 3\n'
                           '[[channels]]\n  name = "c"\n')
    fake.reset_calls()
    for layout in (no_gateway, reserved):
        with pytest.raises(ConfigError):
            _mapping(backend, layout=layout)
    assert fake.call_counts() == {}


def test_targets_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bad URLs and missing credentials are reported together, naming upstream's variables."""
    with pytest.raises(ConfigError) as err:
        MainfluxTarget.from_env({"MF_PROVISION_THINGS_LOCATION": "things:8182",
                                 "MF_PROVISION_USER": "a@b.c", "MF_PROVISION_PASS": "p"})
    text = str(err.value)
    for name in ("MF_PROVISION_THINGS_LOCATION", "MF_PROVISION_BS_SVC_URL",
                 "MF_PROVISION_USERS_LOCATION"):
        assert name in text
    ok = MainfluxTarget.from_env({"MF_PROVISION_THINGS_LOCATION": "http://t:8182",
                                  "MF_PROVISION_BS_SVC_URL": "http://b:8202/things",
                                  "MF_PROVISION_API_KEY": "the-api-key",
                                  "MF_PROVISION_USER": "a@b.c"})
    assert not ok.uses_login and "the-api-key" not in repr(ok)


def test_unreachable_platform_is_service_unavailable() -> None:
    """Nothing listening: the lookup fails with a retryable error and nothing else is tried."""
    from edge_provision.net import free_port

    url = f"http://127.0.0.1:{free_port()}"
    target = MainfluxTarget(url, url, api_key="k", connect_timeout_s=1)
    with MainfluxBackend(target) as backend, pytest.raises(EdgeProvisionError) as err:
        _mapping(backend)
    assert err.value.retryable
    assert backend.counters.value("upstream_requests_total", service="things",
                                  endpoint="GET /things", status="error") == 1
