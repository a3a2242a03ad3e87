"""list_interfaces against this machine's real network interfaces (psutil, sysfs)."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import psutil

from edge_provision.agent.identity import InterfaceInfo, is_virtual, list_interfaces

MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


def test_list_interfaces_on_this_machine() -> None:
    """list_interfaces returns sane InterfaceInfo objects for the real interfaces here."""
    found = list_interfaces()
    assert found, "every Linux machine has at least lo"
    assert {i.name for i in found} == set(psutil.net_if_addrs()) | set(psutil.net_if_stats())
    assert len({i.name for i in found}) == len(found)
    for info in found:
        assert isinstance(info, InterfaceInfo)
        assert info.mac == "" or MAC_RE.fullmatch(info.mac), info
        assert info.index >= 0
        assert isinstance(info.is_up, bool)
        if is_virtual(info.name):
            assert info.virtual
    known = [i.index for i in found if i.index > 0]
    assert known == sorted(known)
    kernel = dict((name, index) for index, name in socket.if_nameindex())
    for info in found:
        if info.name in kernel:
            assert info.index == kernel[info.name]
    if "lo" in kernel:
        assert next(i for i in found if i.name == "lo").virtual


def test_list_interfaces_reads_sysfs(tmp_path: Path) -> None:
    """ifindex and the virtual flag come from the given sysfs tree (bridge, devices/virtual)."""
    names = sorted({i.name for i in list_interfaces()})
    net = tmp_path / "class" / "net"
    net.mkdir(parents=True)
    for n, name in enumerate(names):
        parent = "virtual" if n == 0 else f"pci0000:00/0000:00:0{n}.0"
        device = tmp_path / "devices" / parent / "net" / name
        device.mkdir(parents=True)
        (device / "ifindex").write_text(f"{100 - n}\n")
        if n == 1:
            (device / "bridge").mkdir()
        (net / name).symlink_to(os.path.relpath(device, net))
    found = {i.name: i for i in list_interfaces(sys_class_net=net)}
    assert set(found) == set(names)
    for n, name in enumerate(names):
        assert found[name].index == 100 - n
        assert found[name].virtual is (n in (0, 1) or is_virtual(name))
    assert [i.name for i in list_interfaces(sys_class_net=net)] == list(reversed(names))


def test_list_interfaces_falls_back_to_if_nameindex(tmp_path: Path) -> None:
    """Without sysfs entries the ifindex comes from socket.if_nameindex()."""
    kernel = {name: index for index, name in socket.if_nameindex()}
    found = list_interfaces(sys_class_net=tmp_path / "missing")
    for info in found:
        assert info.index == kernel.get(info.name, 0)
        assert info.virtual is is_virtual(info.name)
