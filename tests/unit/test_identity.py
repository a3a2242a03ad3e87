"""Tests for edge_provision.agent.identity: interface choice, MAC formats, persistence."""

from __future__ import annotations

import json
import logging
import re
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_provision.agent.identity import (
    IDENTITY_FILE,
    Identity,
    InterfaceInfo,
    MacFormat,
    format_mac,
    identity_for,
    is_usable_mac,
    is_virtual,
    load_identity,
    parse_mac,
    pick_interface,
    resolve_identity,
)
from edge_provision.errors import ConfigError, IdentityError
from edge_provision.settings import load_agent_settings

ETH0 = InterfaceInfo(name="eth0", mac="00:1a:2b:3c:4d:5e", index=2, is_up=True)
ETH1 = InterfaceInfo(name="eth1", mac="00:1a:2b:3c:4d:5f", index=3, is_up=True)
WLAN0 = InterfaceInfo(name="wlan0", mac="3c:22:fb:00:00:01", index=4, is_up=False)
LO = InterfaceInfo(name="lo", mac="00:00:00:00:00:00", index=1, is_up=True)
DOCKER0 = InterfaceInfo(name="docker0", mac="02:42:ac:11:00:01", index=5, is_up=True)
MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


def _iface(name: str, mac: str, index: int, *, virtual: bool = False) -> InterfaceInfo:
    return InterfaceInfo(name=name, mac=mac, index=index, is_up=True, virtual=virtual)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --------------------------------------------------------------------------- selection


def test_configured_interface_wins_over_lower_index() -> None:
    """A configured interface is chosen even when another has a lower ifindex."""
    assert pick_interface([ETH0, ETH1, WLAN0], configured="wlan0") == WLAN0


def test_configured_virtual_interface_is_allowed() -> None:
    """A configured interface is used even if its name looks virtual, if its MAC is usable."""
    bond = _iface("bond0", "00:1a:2b:3c:4d:60", 9, virtual=True)
    assert pick_interface([ETH0, bond], configured="bond0") == bond


def test_lowest_ifindex_wins_regardless_of_list_order() -> None:
    """Without configuration the usable interface with the lowest ifindex is chosen."""
    assert pick_interface([WLAN0, ETH1, ETH0]) == ETH0
    assert pick_interface([WLAN0, ETH1]) == ETH1


def test_unknown_ifindex_sorts_last() -> None:
    """An interface whose ifindex is unknown (0) only wins when nothing else is usable."""
    unknown = _iface("eth9", "00:1a:2b:3c:4d:61", 0)
    assert pick_interface([unknown, WLAN0]) == WLAN0
    assert pick_interface([unknown]) == unknown


def test_skips_loopback_and_virtual_names() -> None:
    """Loopback and virtual-named interfaces are skipped even with good MACs and low indexes."""
    fake_lo = _iface("lo", "00:1a:2b:00:00:01", 1)
    veth = _iface("veth12ab", "00:1a:2b:00:00:02", 2)
    docker = _iface("docker0", "00:1a:2b:00:00:03", 3)
    assert pick_interface([fake_lo, veth, docker, WLAN0]) == WLAN0


def test_skips_interfaces_flagged_virtual_by_sysfs() -> None:
    """An interface flagged virtual (bridge, bond) is skipped despite a physical-looking name."""
    br0 = _iface("br0", "00:1a:2b:00:00:04", 1, virtual=True)
    assert pick_interface([br0, ETH1]) == ETH1


@pytest.mark.parametrize(
    "mac",
    [
        "02:42:ac:11:00:02",  # locally administered (docker, veth)
        "01:00:5e:00:00:fb",  # multicast
        "03:00:00:00:00:01",  # multicast and local
        "ff:ff:ff:ff:ff:ff",  # broadcast
        "00:00:00:00:00:00",  # all-zero
        "",  # no link address
    ],
)
def test_skips_unusable_macs(mac: str) -> None:
    """Interfaces whose MAC is not globally administered unicast are skipped."""
    assert pick_interface([_iface("eth0", mac, 1), ETH1]) == ETH1


@pytest.mark.parametrize(
    ("mac", "usable"),
    [
        ("00:1a:2b:3c:4d:5e", True),
        ("3C-22-FB-00-00-01", True),
        ("fc:aa:14:00:00:01", True),  # 0xfc: bits 0 and 1 clear
        ("02:00:00:00:00:01", False),
        ("01:00:00:00:00:00", False),
        ("00:00:00:00:00:00", False),
        ("not-a-mac", False),
        ("", False),
    ],
)
def test_is_usable_mac(mac: str, usable: bool) -> None:
    """is_usable_mac accepts only well-formed, unicast, globally administered, non-zero MACs."""
    assert is_usable_mac(mac) is usable


@pytest.mark.parametrize(
    "name",
    [
        "lo",
        "lo0",
        "docker0",
        "veth1a2b",
        "br-3f2a",
        "virbr0",
        "vnet3",
        "tun0",
        "tap1",
        "wg0",
        "dummy0",
        "zt7nnig26",
        "tailscale0",
        "vmnet8",
        "vboxnet0",
        "cni0",
        "flannel.1",
        "cali12ab",
        "kube-ipvs0",
        "lxcbr0",
        "lxdbr0",
        "ip6tnl0",
        "sit0",
        "gre0",
        "gretap0",
        "ifb0",
    ],
)
def test_is_virtual_names(name: str) -> None:
    """Loopback and well-known virtual interface names are recognised."""
    assert is_virtual(name)


@pytest.mark.parametrize(
    "name", ["eth0", "enp3s0", "eno1", "ens33", "wlan0", "wlp2s0", "wwan0", "usb0", "em1", "br0"]
)
def test_physical_names_are_not_virtual(name: str) -> None:
    """Names of physical NICs (and plain br0, which needs the /sys check) are not virtual."""
    assert not is_virtual(name)


def test_configured_missing_interface_lists_existing_ones() -> None:
    """A configured interface that does not exist is an error naming the ones that do."""
    with pytest.raises(IdentityError) as info:
        pick_interface([LO, ETH0, DOCKER0], configured="eth7")
    text = str(info.value)
    assert "'eth7' does not exist" in text
    assert "lo, eth0, docker0" in text
    assert "--external-id" in text
    assert info.value.exit_code == 2


def test_configured_interface_without_usable_mac_is_an_error() -> None:
    """A configured interface with a locally administered MAC is refused with the reason."""
    with pytest.raises(IdentityError) as info:
        pick_interface([ETH0, DOCKER0], configured="docker0")
    text = str(info.value)
    assert "'docker0' has no usable MAC" in text
    assert "locally administered MAC 02:42:ac:11:00:01" in text
    assert "EDGE_PROVISION_EXTERNAL_ID" in text


def test_no_usable_interface_error_says_how_to_fix() -> None:
    """No usable interface gives an error listing what was seen and how to set the id."""
    with pytest.raises(IdentityError) as info:
        pick_interface([LO, DOCKER0, _iface("eth0", "00:00:00:00:00:00", 4)])
    text = str(info.value)
    assert text.startswith(
        "no network interface with a globally administered MAC address found (seen: lo"
    )
    assert "docker0 (virtual)" in text
    assert "eth0 (all-zero MAC)" in text
    assert (
        "set the id with --external-id or EDGE_PROVISION_EXTERNAL_ID, or pick an interface "
        "with --interface / EDGE_PROVISION_INTERFACE"
    ) in text
    assert isinstance(info.value, ConfigError)


def test_locally_administered_mac_is_the_last_resort(caplog: pytest.LogCaptureFixture) -> None:
    """With no global MAC, the lowest-ifindex physical local MAC is used, with a warning."""
    vm_nic = _iface("eth0", "02:fc:00:00:00:01", 4)
    second = _iface("eth1", "06:fc:00:00:00:02", 5)
    assert pick_interface([LO, DOCKER0, second, vm_nic]) == vm_nic
    assert "no globally administered MAC found" in caplog.text
    global_nic = _iface("eth2", "00:1b:21:0a:0b:0c", 9)
    assert pick_interface([vm_nic, global_nic]) == global_nic


def test_no_interfaces_at_all_error() -> None:
    """An empty interface list gives the same clear error, seen: none."""
    with pytest.raises(IdentityError, match=r"\(seen: none\)"):
        pick_interface([])


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize(
    ("fmt", "prefix", "expected"),
    [
        (MacFormat.COLON_LOWER, "", "00:1a:2b:3c:4d:5e"),
        (MacFormat.COLON_UPPER, "", "00:1A:2B:3C:4D:5E"),
        (MacFormat.PLAIN_LOWER, "", "001a2b3c4d5e"),
        (MacFormat.PLAIN_UPPER, "", "001A2B3C4D5E"),
        (MacFormat.DASH_UPPER, "", "00-1A-2B-3C-4D-5E"),
        (MacFormat.COLON_LOWER, "gw-", "gw-00:1a:2b:3c:4d:5e"),
        (MacFormat.PLAIN_UPPER, "site1.gw_", "site1.gw_001A2B3C4D5E"),
    ],
)
def test_format_table(fmt: MacFormat, prefix: str, expected: str) -> None:
    """Each MacFormat (with an optional prefix) writes the MAC as documented."""
    for given_mac in ("00:1a:2b:3c:4d:5e", "00-1A-2B-3C-4D-5E", "00:1A:2b:3C:4d:5E"):
        assert format_mac(given_mac, fmt, prefix) == expected


def test_format_default_and_string_format() -> None:
    """The default format is colon-lower; the enum's string value is accepted too."""
    assert format_mac("AA-BB-CC-DD-EE-FF") == "aa:bb:cc:dd:ee:ff"
    assert format_mac("aa:bb:cc:dd:ee:ff", MacFormat("dash-upper")) == "AA-BB-CC-DD-EE-FF"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "aa:bb:cc:dd:ee",
        "aa:bb:cc:dd:ee:ff:00",
        "aa:bb-cc:dd:ee:ff",
        "gg:bb:cc:dd:ee:ff",
        "a:b:c:d:e:f",
        "aabbccddeef",
        "aa bb cc dd ee ff",
        "aa:bb:cc:dd:ee:ff\nx",
    ],
)
def test_format_rejects_malformed_mac(bad: str) -> None:
    """Malformed MACs raise ValueError with the expected shape in the message."""
    with pytest.raises(ValueError, match="expected 6 octets"):
        format_mac(bad)


@pytest.mark.parametrize("prefix", ["gw/", "gw ", "gw?", "gw#", "gw\n", "gw%"])
def test_format_rejects_unsafe_prefix(prefix: str) -> None:
    """A prefix that would break the bootstrap URL path is refused."""
    with pytest.raises(ValueError, match="invalid external_id prefix"):
        format_mac("00:1a:2b:3c:4d:5e", prefix=prefix)


@given(
    octets=st.binary(min_size=6, max_size=6),
    fmt=st.sampled_from(list(MacFormat)),
    prefix=st.text(alphabet="abcXYZ019._~:-", max_size=8),
)
def test_format_round_trip(octets: bytes, fmt: MacFormat, prefix: str) -> None:
    """Formatting then normalising back (prefix removed) gives the same six octets."""
    colon = ":".join(f"{b:02x}" for b in octets)
    written = format_mac(colon, fmt, prefix)
    assert written.startswith(prefix)
    body = written[len(prefix) :]
    assert parse_mac(body) == octets
    assert format_mac(body) == colon


# --------------------------------------------------------------------------- persistence


def test_first_resolution_derives_and_persists(tmp_path: Path) -> None:
    """The first run derives the id from the interface and writes identity.json 0600 in 0700."""
    state = tmp_path / "state"
    ident = resolve_identity(
        state, interfaces=[WLAN0, ETH0], mac_format=MacFormat.DASH_UPPER, prefix="gw-"
    )
    assert ident.external_id == "gw-00-1A-2B-3C-4D-5E"
    assert ident.external_id_source == "interface eth0 (00:1a:2b:3c:4d:5e)"
    assert ident.interface == "eth0"
    assert ident.mac == "00:1a:2b:3c:4d:5e"
    assert ident.external_key_source == "generated"
    path = state / IDENTITY_FILE
    assert _mode(state) == 0o700
    assert _mode(path) == 0o600
    body = json.loads(path.read_text())
    assert body["version"] == 1
    assert body["external_id"] == "gw-00-1A-2B-3C-4D-5E"
    assert body["external_key"] == ident.external_key
    assert body["interface"] == "eth0"
    assert body["mac"] == "00:1a:2b:3c:4d:5e"
    assert body["created"].endswith("+00:00")


def test_generated_key_is_long_and_generated_once(tmp_path: Path) -> None:
    """The generated key has at least 128 bits and is reused by later runs."""
    first = resolve_identity(tmp_path, interfaces=[ETH0])
    assert re.fullmatch(r"[A-Za-z0-9_-]+", first.external_key)
    assert len(first.external_key) * 6 >= 128
    second = resolve_identity(tmp_path, interfaces=[ETH0])
    assert second.external_key == first.external_key
    assert second.external_key_source == f"stored {tmp_path / IDENTITY_FILE}"
    other = resolve_identity(tmp_path / "other", interfaces=[ETH0])
    assert other.external_key != first.external_key


def test_stored_id_survives_nic_change(tmp_path: Path) -> None:
    """A later run with a different interface list keeps the stored id."""
    first = resolve_identity(tmp_path, interfaces=[ETH0, ETH1])
    again = resolve_identity(tmp_path, interfaces=[ETH1, WLAN0])
    assert again.external_id == first.external_id == "00:1a:2b:3c:4d:5e"
    assert again.external_id_source == f"stored {tmp_path / IDENTITY_FILE}"
    assert again.interface == "eth0"
    nothing_left = resolve_identity(tmp_path, interfaces=[])
    assert nothing_left.external_id == first.external_id


def test_stored_id_kept_when_format_changes_with_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Changing the format after the first run keeps the stored id and warns about it."""
    resolve_identity(tmp_path, interfaces=[ETH0])
    with caplog.at_level(logging.WARNING, logger="edge_provision.agent.identity"):
        again = resolve_identity(tmp_path, interfaces=[ETH0], mac_format=MacFormat.PLAIN_UPPER)
    assert again.external_id == "00:1a:2b:3c:4d:5e"
    assert "settings_give=001A2B3C4D5E" in caplog.text


def test_override_wins_is_persisted_and_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An explicit external_id wins over the stored one, replaces it and logs both ids."""
    first = resolve_identity(tmp_path, interfaces=[ETH0])
    with caplog.at_level(logging.WARNING, logger="edge_provision.agent.identity"):
        forced = resolve_identity(tmp_path, external_id="gw-manual-1", interfaces=[ETH0])
    assert forced.external_id == "gw-manual-1"
    assert forced.external_id_source == "setting"
    assert forced.interface is None
    assert forced.external_key == first.external_key
    assert "external_id=gw-manual-1" in caplog.text
    assert "stored_external_id=00:1a:2b:3c:4d:5e" in caplog.text
    later = resolve_identity(tmp_path, interfaces=[ETH0])
    assert later.external_id == "gw-manual-1"
    assert later.external_id_source.startswith("stored ")


def test_override_on_fresh_state_needs_no_interface(tmp_path: Path) -> None:
    """With an explicit id nothing is derived, so a machine without NICs works."""
    ident = resolve_identity(tmp_path, external_id="gw-1", interfaces=[LO])
    assert ident.external_id == "gw-1"
    assert load_identity(tmp_path) == Identity(
        "gw-1",
        ident.external_key,
        f"stored {tmp_path / IDENTITY_FILE}",
        f"stored {tmp_path / IDENTITY_FILE}",
        None,
        None,
    )


def test_external_key_setting_is_used_and_stored(tmp_path: Path) -> None:
    """An explicit external_key is used and stored, so it survives removing the setting."""
    ident = resolve_identity(tmp_path, external_key="k3y-from-file", interfaces=[ETH0])
    assert ident.external_key == "k3y-from-file"
    assert ident.external_key_source == "setting"
    later = resolve_identity(tmp_path, interfaces=[ETH0])
    assert later.external_key == "k3y-from-file"


def test_empty_settings_count_as_unset(tmp_path: Path) -> None:
    """Empty strings (e.g. VAR= in an environment file) do not override anything."""
    ident = resolve_identity(
        tmp_path, external_id=" ", external_key="", interface="", interfaces=[ETH0]
    )
    assert ident.external_id == "00:1a:2b:3c:4d:5e"
    assert ident.external_key_source == "generated"


@pytest.mark.parametrize("bad", ["gw/1", "gw 1", "gw?x", "gw#1", "gw\t1"])
def test_unsafe_external_id_is_refused(tmp_path: Path, bad: str) -> None:
    """An external_id that cannot be used in the bootstrap URL path is refused."""
    with pytest.raises(IdentityError, match="invalid external_id"):
        resolve_identity(tmp_path, external_id=bad, interfaces=[ETH0])
    assert not (tmp_path / IDENTITY_FILE).exists()


def test_persist_false_writes_nothing(tmp_path: Path) -> None:
    """persist=False computes the id but creates no directory, file or key."""
    state = tmp_path / "state"
    ident = resolve_identity(state, interfaces=[ETH0], persist=False)
    assert ident.external_id == "00:1a:2b:3c:4d:5e"
    assert ident.external_key == ""
    assert ident.external_key_source == "not yet generated"
    assert not state.exists()
    assert load_identity(state) is None


def test_persist_false_reads_stored_without_writing(tmp_path: Path) -> None:
    """persist=False returns the stored identity and leaves the file untouched."""
    first = resolve_identity(tmp_path, interfaces=[ETH0])
    before = (tmp_path / IDENTITY_FILE).read_bytes()
    preview = resolve_identity(tmp_path, external_id="gw-x", interfaces=[ETH1], persist=False)
    assert preview.external_id == "gw-x"
    assert preview.external_key == first.external_key
    assert (tmp_path / IDENTITY_FILE).read_bytes() == before


def test_no_usable_interface_through_resolve(tmp_path: Path) -> None:
    """resolve_identity reports the no-interface error and writes nothing."""
    with pytest.raises(IdentityError, match="EDGE_PROVISION_EXTERNAL_ID"):
        resolve_identity(tmp_path / "s", interfaces=[LO, DOCKER0])
    assert not (tmp_path / "s" / IDENTITY_FILE).exists()


def test_configured_interface_used_on_first_run(tmp_path: Path) -> None:
    """The configured interface picks the MAC on the first run."""
    ident = resolve_identity(tmp_path, interface="wlan0", interfaces=[ETH0, WLAN0])
    assert ident.external_id == "3c:22:fb:00:00:01"
    assert ident.interface == "wlan0"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"version": 1, "external_id": 5, "external_key": "k"}', "'external_id' must be"),
        ('{"version": 1, "external_id": "a", "external_key": ""}', "'external_key' must be"),
        ('{"version": 2, "external_id": "a", "external_key": "k"}', "unsupported version"),
        ('{"version": 1, "external_id": "a", "external_key": "k", "mac": 7}', "'mac' must be"),
    ],
)
def test_corrupt_identity_file_is_an_error(tmp_path: Path, content: str, reason: str) -> None:
    """A corrupt identity.json names the file and how to fix it, and is left alone."""
    path = tmp_path / IDENTITY_FILE
    path.write_text(content)
    with pytest.raises(IdentityError) as info:
        resolve_identity(tmp_path, interfaces=[ETH0])
    text = str(info.value)
    assert text.startswith(f"{path}: ")
    assert reason in text
    assert "EDGE_PROVISION_EXTERNAL_ID" in text
    assert "delete the file only if you accept a new identity" in text
    assert path.read_text() == content
    with pytest.raises(IdentityError):
        load_identity(tmp_path)


def test_corrupt_file_replaced_when_id_is_set(tmp_path: Path) -> None:
    """With an explicit id a corrupt file is replaced after a copy of it is kept."""
    path = tmp_path / IDENTITY_FILE
    path.write_text("{broken")
    ident = resolve_identity(tmp_path, external_id="gw-7", interfaces=[])
    assert ident.external_id == "gw-7"
    assert json.loads(path.read_text())["external_id"] == "gw-7"
    copies = list(tmp_path.glob(f"{IDENTITY_FILE}.corrupt-*"))
    assert len(copies) == 1
    assert copies[0].read_text() == "{broken"
    assert _mode(copies[0]) == 0o600


def test_load_identity_missing_and_present(tmp_path: Path) -> None:
    """load_identity gives None without a file and the stored identity with one."""
    assert load_identity(tmp_path) is None
    made = resolve_identity(tmp_path, interfaces=[ETH1])
    loaded = load_identity(tmp_path)
    assert loaded is not None
    assert (loaded.external_id, loaded.external_key) == (made.external_id, made.external_key)
    assert loaded.interface == "eth1"
    assert loaded.mac == "00:1a:2b:3c:4d:5f"


def test_external_key_never_logged_or_shown_in_repr(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The key appears neither in any log record nor in the Identity repr."""
    with caplog.at_level(logging.DEBUG, logger="edge_provision.agent.identity"):
        ident = resolve_identity(tmp_path, interfaces=[ETH0])
        resolve_identity(
            tmp_path, external_id="gw-2", external_key="sekrit-key-1", interfaces=[ETH0]
        )
        resolve_identity(tmp_path, interfaces=[ETH0], mac_format=MacFormat.PLAIN_UPPER)
    assert caplog.records
    assert ident.external_key not in caplog.text
    assert "sekrit-key-1" not in caplog.text
    assert ident.external_key not in repr(ident)
    assert "external_id='00:1a:2b:3c:4d:5e'" in repr(ident)


# --------------------------------------------------------------------------- from settings


def test_identity_for_unpacks_the_identity_settings(tmp_path: Path) -> None:
    """identity_for(settings) uses interface, MAC format and prefix from the settings."""
    settings = load_agent_settings({"state_dir": tmp_path / "s", "interface": "eth1",
                                    "mac_format": "plain-upper", "id_prefix": "gw-"}, env={})
    ident = identity_for(settings, interfaces=[ETH0, ETH1])
    assert ident.external_id == "gw-001A2B3C4D5F" and ident.interface == "eth1"
    assert ident.external_key_source == "generated"
    stored = load_identity(tmp_path / "s")
    assert stored is not None and stored.mac == "00:1a:2b:3c:4d:5f"
    assert (stored.external_id, stored.external_key) == (ident.external_id, ident.external_key)


def test_identity_for_explicit_values_and_preview(tmp_path: Path) -> None:
    """Explicit external_id/key win; persist=False writes nothing (the `identity` preview)."""
    settings = load_agent_settings({"state_dir": tmp_path / "s", "external_id": "gw-9",
                                    "external_key": "key-9-secret"}, env={})
    preview = identity_for(settings, interfaces=[], persist=False)
    assert (preview.external_id, preview.external_key) == ("gw-9", "key-9-secret")
    assert preview.external_id_source == preview.external_key_source == "setting"
    assert not (tmp_path / "s" / IDENTITY_FILE).exists()
    assert identity_for(settings, interfaces=[]) == preview
    assert load_identity(tmp_path / "s") is not None
