"""What the lab server says about its exposure, and the open files its unit allows (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_provision.lab.http.listener import FD_RESERVE, Limits
from edge_provision.lab.server import exposure_warning

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "edge-provision-lab.service"


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "10.0.0.1", "fe80::1%eth0",
                                  "lab.example"])
def test_configured_token_beyond_loopback_is_a_warning(host: str) -> None:
    """With a configured token, any address but loopback gets a loud warning with the fix."""
    warning = exposure_warning(host, 8190, header_required=False)
    assert warning is not None
    assert warning.startswith("WARNING: listening beyond loopback")
    assert f"({host} port 8190)" in warning
    for word in ("without an Authorization header", "127.0.0.1", "MF_PROVISION_API_KEY"):
        assert word in warning


@pytest.mark.parametrize(("host", "header_required"), [
    ("127.0.0.1", False), ("127.0.0.2", False), ("::1", False), ("0.0.0.0", True),
    ("192.168.1.5", True),
])
def test_loopback_or_a_required_token_is_quiet(host: str, header_required: bool) -> None:
    """Loopback, or a generated token every request must carry: nothing to warn about."""
    assert exposure_warning(host, 8190, header_required=header_required) is None


def test_unit_allows_the_default_connection_cap() -> None:
    """The lab unit's LimitNOFILE holds the default cap plus the files the server keeps open."""
    values = [line.split("=", 1)[1] for line in UNIT.read_text().splitlines()
              if line.startswith("LimitNOFILE=")]
    assert values and int(values[0]) >= Limits().max_connections + FD_RESERVE
