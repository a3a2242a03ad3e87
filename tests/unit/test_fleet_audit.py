"""The audit's checks over the operator listings (pure: listings built here)."""

from __future__ import annotations

import dataclasses

import pytest

from edge_provision.fleet.audit import AuditReport, Finding, FindingKind, check_listings
from edge_provision.fleet.gateways import RunPrefix, SimGateway, make_gateways
from edge_provision.fleet.journey import GatewayResult
from edge_provision.fleet.listings import ListedConfig, Listings
from edge_provision.platform import PlatformChannel, PlatformThing

PREFIX = RunPrefix(0xABCDEF)
GATEWAYS = make_gateways(3, PREFIX)


def _result(gw: SimGateway, ok: bool = True) -> GatewayResult:
    return GatewayResult(index=gw.index, external_id=gw.external_id, ok=ok, attempts=1,
                         arrival_s=0.0, started_s=0.0, ended_s=1.0, created_mapping=ok,
                         gateway_thing_id=f"t{gw.index}" if ok else None,
                         thing_ids=(f"t{gw.index}",) if ok else (),
                         channel_ids=(f"c{gw.index}a", f"c{gw.index}b") if ok else ())


def _clean() -> Listings:
    things = [PlatformThing(f"t{g.index}", g.name, f"k{g.index}",
                            {"external_id": g.external_id}) for g in GATEWAYS]
    channels = [PlatformChannel(f"c{g.index}{s}", "ch", {}) for g in GATEWAYS for s in "ab"]
    configs = [ListedConfig(g.external_id, f"t{g.index}", f"k{g.index}",
                            (f"c{g.index}a", f"c{g.index}b")) for g in GATEWAYS]
    foreign = PlatformThing("x1", "someone-else", "kx", {"external_id": "aa:bb:cc:dd:ee:ff"})
    return Listings((*things, foreign), tuple(channels), tuple(configs))


RESULTS = tuple(_result(g) for g in GATEWAYS)


def kinds(findings: tuple[Finding, ...]) -> dict[FindingKind, set[int | None]]:
    out: dict[FindingKind, set[int | None]] = {}
    for f in findings:
        out.setdefault(f.kind, set()).add(f.gateway)
    return out


def test_a_clean_platform_has_no_finding() -> None:
    """One thing-set per gateway, nothing shared, foreign entities ignored: no finding."""
    assert check_listings(GATEWAYS, RESULTS, PREFIX, _clean()) == ()


def test_second_mapping_under_another_mac_spelling_is_a_duplicate() -> None:
    """A second config and thing for gateway 1 (upper-case dashed MAC) is a duplicate."""
    listings = _clean()
    upper = GATEWAYS[1].external_id.upper().replace(":", "-")
    listings = dataclasses.replace(
        listings,
        things=(*listings.things, PlatformThing("t9", "gateway", "k9", {"external_id": upper})),
        configs=(*listings.configs, ListedConfig(upper, "t9", "k9", ("c1a",))),
    )
    found = kinds(check_listings(GATEWAYS, RESULTS, PREFIX, listings))
    # the second config names another thing (mismatch); its channel c1a is gateway 1's own
    assert found == {FindingKind.DUPLICATE: {1}, FindingKind.MISMATCH: {1}}
    report = AuditReport(check_listings(GATEWAYS, RESULTS, PREFIX, listings), 3, 4, 6, 4, 3)
    assert report.duplicates == 1 and not report.ok


def test_leftover_thing_by_name_is_a_duplicate() -> None:
    """A thing named after gateway 2 outside its enrolled set is a leftover (duplicate)."""
    listings = _clean()
    stray = PlatformThing("t7", f"{GATEWAYS[2].name}-sensor", "k7", {})
    listings = dataclasses.replace(listings, things=(*listings.things, stray))
    assert kinds(check_listings(GATEWAYS, RESULTS, PREFIX, listings)) == {
        FindingKind.DUPLICATE: {2}}


def test_shared_thing_and_key() -> None:
    """Two gateways' configs naming one thing, or two things with one key, are shared."""
    listings = _clean()
    configs = list(listings.configs)
    configs[2] = ListedConfig(GATEWAYS[2].external_id, "t0", "k0", ("c2a", "c2b"))
    found = kinds(check_listings(GATEWAYS, RESULTS, PREFIX,
                                 dataclasses.replace(listings, configs=tuple(configs))))
    assert found[FindingKind.SHARED] == {0}
    assert FindingKind.MISMATCH in found  # gateway 2 enrolled as t2
    things = list(listings.things)
    things[1] = dataclasses.replace(things[1], key="k0")
    found = kinds(check_listings(GATEWAYS, RESULTS, PREFIX,
                                 dataclasses.replace(listings, things=tuple(things))))
    assert found[FindingKind.SHARED] == {0}
    assert found[FindingKind.MISMATCH] == {1}  # its config holds k1, the thing has k0


def test_missing_config_thing_and_channel() -> None:
    """An enrolled gateway without a config, a config whose thing or channel is gone."""
    listings = _clean()
    listings = dataclasses.replace(
        listings,
        things=tuple(t for t in listings.things if t.id != "t1"),
        channels=tuple(c for c in listings.channels if c.id != "c2b"),
        configs=tuple(c for c in listings.configs if c.thing_id != "t0"),
    )
    found = check_listings(GATEWAYS, RESULTS, PREFIX, listings)
    assert kinds(found) == {FindingKind.MISSING: {0, 1, 2}}
    assert any("no bootstrap config" in f.message for f in found if f.gateway == 0)


def test_a_failed_gateway_may_have_no_set_but_not_two() -> None:
    """A gateway that gave up owes nothing; two configs for it are still a duplicate."""
    results = (RESULTS[0], _result(GATEWAYS[1], ok=False), RESULTS[2])
    listings = _clean()
    assert check_listings(GATEWAYS, results, PREFIX, dataclasses.replace(
        listings, configs=tuple(c for c in listings.configs if c.thing_id != "t1"),
        things=tuple(t for t in listings.things if t.id != "t1"))) == ()
    doubled = dataclasses.replace(listings, configs=(*listings.configs, ListedConfig(
        GATEWAYS[1].external_id.upper(), "t1", "k1", ("c1a", "c1b"))))
    assert FindingKind.DUPLICATE in kinds(check_listings(GATEWAYS, results, PREFIX, doubled))


@pytest.mark.parametrize("index", [3, 0xFFFF])
def test_entities_of_the_run_beyond_the_fleet_are_stray(index: int) -> None:
    """A config naming gateway index >= fleet size carries the prefix but no gateway."""
    mac = f"02:ab:cd:ef:{index >> 8:02x}:{index & 0xFF:02x}"
    listings = _clean()
    listings = dataclasses.replace(listings, configs=(*listings.configs,
                                                      ListedConfig(mac, "t8", "k8", ())))
    found = check_listings(GATEWAYS, RESULTS, PREFIX, listings)
    assert [f.kind for f in found] == [FindingKind.STRAY]


def test_report_document_counts_and_never_shows_keys() -> None:
    """The --json part counts findings by kind; no thing key appears in it."""
    listings = _clean()
    things = list(listings.things)
    things[1] = dataclasses.replace(things[1], key="k0")
    findings = check_listings(GATEWAYS, RESULTS, PREFIX,
                              dataclasses.replace(listings, things=tuple(things)))
    doc = AuditReport(findings, 3, 3, 6, 3, 3).to_dict()
    assert doc["ok"] is False
    assert doc["findings"] == {"mismatch": 1, "shared": 1}
    assert "k0" not in str(doc["problems"]) and "k1" not in str(doc["problems"])
