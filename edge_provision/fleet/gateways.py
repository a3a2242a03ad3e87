"""Simulated gateways: ids derived like real MACs, each with its own random external key.

A simulated gateway's ``external_id`` is a MAC address written colon-lower, as the agent
writes a real one by default::

    02 : 5a:1b:c3 : 00:07
    |    |          +-- the gateway's index in the run (16 bits: at most 65,536 gateways)
    |    +------------- the run prefix (24 random bits, or derived from --seed)
    +------------------ first octet 0x02: locally administered, unicast -- no vendor's
                        OUI (and so no real gateway) can have it

The thing name sent with ``/mapping`` is ``sim-<prefix>-<index>`` (``sim-5a1bc3-00007``),
so that the run's things can be found with the platform's name filter. External keys
are 192 random bits (``secrets``, as the agent makes them); with a seed they come from
the seeded generator instead, so that a seeded run can be replayed exactly (the same
seed against the same server is the same fleet booting again).
"""

from __future__ import annotations

import base64
import random
import re
import secrets
from dataclasses import dataclass, field

__all__ = [
    "MAX_GATEWAYS",
    "RunPrefix",
    "SimGateway",
    "mac_digits",
    "make_gateways",
]

MAX_GATEWAYS = 1 << 16
_FIRST_OCTET = 0x02
_KEY_BYTES = 24
_MAC_TEXT = re.compile(r"[0-9a-f]{12}")
_MAC_SEPARATORS = re.compile(r"[:.\-]")


@dataclass(frozen=True)
class RunPrefix:
    """The 24-bit prefix shared by every gateway of one run."""

    value: int

    def __post_init__(self) -> None:
        if not 0 <= self.value < 1 << 24:
            raise ValueError(f"run prefix must be a 24-bit number, got {self.value}")

    @classmethod
    def draw(cls, rng: random.Random | None = None) -> RunPrefix:
        """A random prefix (from ``rng`` when given, else from ``secrets``)."""
        return cls(rng.getrandbits(24) if rng is not None else secrets.randbits(24))

    @property
    def hex(self) -> str:
        """Six lower-case hex digits (``5a1bc3``)."""
        return f"{self.value:06x}"

    @property
    def name(self) -> str:
        """The run's name, the prefix of every thing name (``sim-5a1bc3``)."""
        return f"sim-{self.hex}"

    @property
    def mac_head(self) -> str:
        """The first 8 hex digits every gateway MAC of the run starts with."""
        return f"{_FIRST_OCTET:02x}{self.hex}"

    def index_of(self, external_id: str) -> int | None:
        """The gateway index an ``external_id`` stands for (any MAC spelling), else None."""
        digits = mac_digits(external_id)
        if digits is None or not digits.startswith(self.mac_head):
            return None
        return int(digits[8:], 16)

    def index_of_name(self, name: str) -> int | None:
        """The gateway index of a thing named ``sim-<prefix>-<index>[-<thing>]``, else None."""
        head = self.name + "-"
        if not name.startswith(head):
            return None
        digits = name[len(head):].split("-", 1)[0]
        return int(digits) if digits.isdigit() else None


@dataclass(frozen=True)
class SimGateway:
    """One simulated gateway."""

    index: int
    external_id: str
    external_key: str = field(repr=False)
    name: str


def mac_digits(external_id: str) -> str | None:
    """The 12 lower-case hex digits of a MAC in any usual spelling, or None if not a MAC.

    ``02:5A:1B:C3:00:07``, ``02-5a-1b-c3-00-07``, ``025a.1bc3.0007`` and
    ``025a1bc30007`` are all the same gateway to the audit.
    """
    digits = _MAC_SEPARATORS.sub("", external_id.strip().lower())
    return digits if _MAC_TEXT.fullmatch(digits) else None


def _mac(prefix: RunPrefix, index: int) -> str:
    digits = f"{prefix.mac_head}{index:04x}"
    return ":".join(digits[i:i + 2] for i in range(0, 12, 2))


def _key(rng: random.Random | None) -> str:
    raw = rng.getrandbits(8 * _KEY_BYTES).to_bytes(_KEY_BYTES, "big") if rng is not None \
        else secrets.token_bytes(_KEY_BYTES)
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def make_gateways(count: int, prefix: RunPrefix, rng: random.Random | None = None
                  ) -> tuple[SimGateway, ...]:  # fmt: skip
    """``count`` gateways of run ``prefix``; keys from ``rng`` if given, else ``secrets``."""
    if not 1 <= count <= MAX_GATEWAYS:
        raise ValueError(f"the number of gateways must be 1 to {MAX_GATEWAYS}, got {count}")
    return tuple(
        SimGateway(index=i, external_id=_mac(prefix, i), external_key=_key(rng),
                   name=f"{prefix.name}-{i:05d}")
        for i in range(count)
    )
