"""Simulated gateway identities: MAC-like ids with a run prefix, own keys, any MAC spelling."""

from __future__ import annotations

import random

import pytest

from edge_provision.fleet.gateways import MAX_GATEWAYS, RunPrefix, mac_digits, make_gateways


def test_ids_are_locally_administered_macs_with_prefix_and_index() -> None:
    """02:<24-bit run prefix>:<16-bit index>, colon-lower, as the agent writes a MAC."""
    gateways = make_gateways(300, RunPrefix(0x5A1BC3))
    assert gateways[0].external_id == "02:5a:1b:c3:00:00"
    assert gateways[299].external_id == "02:5a:1b:c3:01:2b"
    assert gateways[7].name == "sim-5a1bc3-00007"
    first_octet = int(gateways[0].external_id[:2], 16)
    assert first_octet & 0b10 and not first_octet & 0b01  # locally administered, unicast
    assert [g.index for g in gateways] == list(range(300))


def test_every_gateway_has_its_own_key_never_in_repr() -> None:
    """Keys are distinct, 192 random bits (32 URL-safe characters) and hidden from repr."""
    gateways = make_gateways(500, RunPrefix.draw())
    keys = {g.external_key for g in gateways}
    assert len(keys) == 500
    assert all(len(k) == 32 for k in keys)
    assert gateways[0].external_key not in repr(gateways[0])


def test_a_seed_replays_the_fleet_and_no_seed_does_not() -> None:
    """The same seed gives the same prefix and keys; without one, keys differ between runs."""
    one = make_gateways(20, RunPrefix.draw(random.Random(7)), random.Random(8))
    two = make_gateways(20, RunPrefix.draw(random.Random(7)), random.Random(8))
    assert [(g.external_id, g.external_key) for g in one] == [
        (g.external_id, g.external_key) for g in two]
    fresh = make_gateways(20, RunPrefix(1))
    again = make_gateways(20, RunPrefix(1))
    assert {g.external_key for g in fresh}.isdisjoint(g.external_key for g in again)


@pytest.mark.parametrize("spelling", ["02:5a:1b:c3:00:07", "02-5A-1B-C3-00-07",
                                      "025a.1bc3.0007", "025A1BC30007", " 02:5A:1b:c3:00:07 "])
def test_any_mac_spelling_is_the_same_gateway(spelling: str) -> None:
    """The audit finds gateway 7 of the run whatever way its MAC is written."""
    prefix = RunPrefix(0x5A1BC3)
    assert mac_digits(spelling) == "025a1bc30007"
    assert prefix.index_of(spelling) == 7


@pytest.mark.parametrize("text", ["gw-7", "02:5a:1b:c3:00", "zz:5a:1b:c3:00:07", ""])
def test_non_macs_belong_to_no_gateway(text: str) -> None:
    """Anything that is not a 12-digit MAC is not a gateway of the run."""
    assert mac_digits(text) is None
    assert RunPrefix(0x5A1BC3).index_of(text) is None


def test_other_runs_and_names() -> None:
    """Another prefix is another run; thing names map back to the gateway index."""
    prefix = RunPrefix(0x5A1BC3)
    assert prefix.index_of("02:5a:1b:c4:00:07") is None
    assert prefix.index_of_name("sim-5a1bc3-00042") == 42
    assert prefix.index_of_name("sim-5a1bc3-00042-sensor") == 42
    assert prefix.index_of_name("sim-5a1bc4-00042") is None
    assert prefix.index_of_name("sim-5a1bc3-x") is None


@pytest.mark.parametrize("count", [0, MAX_GATEWAYS + 1])
def test_fleet_size_is_bounded(count: int) -> None:
    """1 to 65,536 gateways (the index has 16 bits)."""
    with pytest.raises(ValueError, match="1 to 65536"):
        make_gateways(count, RunPrefix(1))


def test_prefix_is_24_bits() -> None:
    """A prefix outside 24 bits is refused."""
    with pytest.raises(ValueError, match="24-bit"):
        RunPrefix(1 << 24)
