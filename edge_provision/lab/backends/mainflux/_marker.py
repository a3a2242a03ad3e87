"""How the mainflux backend marks what it creates, and finds and reads it back.

Private to :mod:`edge_provision.lab.backends.mainflux`. Every thing and channel
one ``/mapping`` run creates carries flat metadata keys next to the layout's:

==============================  ===============================================
``edge_provision_mapping``      the external_id (the idempotency lookup key)
``edge_provision_request``      a random id per run (finds what a run made)
``edge_provision_index``        the plan index (the order of the answer)
``edge_provision_things``       gateway only: how many things the mapping has
``edge_provision_channels``     gateway only: how many channels
``edge_provision_certs``        gateway only: true if its config holds certificates
==============================  ===============================================

Flat keys, because ``GET /things?metadata=`` containment was recorded working on
flat objects (0.12.1). Records handed to the lab have these keys removed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from edge_provision.errors import ConfigError, Problem
from edge_provision.lab.models import ChannelRecord, ThingRecord
from edge_provision.platform.models import PlatformChannel, PlatformThing

__all__ = [
    "CERTS",
    "CHANNELS",
    "INDEX",
    "MAPPING",
    "REQUEST",
    "THINGS",
    "MappingSet",
    "channel_record",
    "check_reserved",
    "group",
    "index_of",
    "strip",
    "thing_record",
]

MAPPING = "edge_provision_mapping"
REQUEST = "edge_provision_request"
INDEX = "edge_provision_index"
THINGS = "edge_provision_things"
CHANNELS = "edge_provision_channels"
CERTS = "edge_provision_certs"
_RESERVED = (MAPPING, REQUEST, INDEX, THINGS, CHANNELS, CERTS)


def check_reserved(kind: str, name: str, metadata: Mapping[str, object]) -> None:
    """ConfigError if layout metadata uses one of our reserved keys."""
    clash = sorted(k for k in metadata if k in _RESERVED)
    if clash:
        raise ConfigError(Problem(
            f"metadata key(s) {', '.join(clash)} are reserved by the mainflux backend "
            "(it marks what it creates with them); rename them in the layout",
            path=f"{kind} {name!r}.metadata",
        ))


def strip(metadata: Mapping[str, object]) -> dict[str, object]:
    """``metadata`` without our marker keys."""
    return {k: v for k, v in metadata.items() if k not in _RESERVED}


def index_of(metadata: Mapping[str, object]) -> int | None:
    """The plan index a marked entity carries, or None."""
    value = metadata.get(INDEX)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _count(metadata: Mapping[str, object], key: str) -> int | None:
    value = metadata.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def thing_record(thing: PlatformThing, owner: str) -> ThingRecord:
    """The lab's record of a platform thing (markers removed)."""
    return ThingRecord(thing.id, thing.name, thing.key, strip(thing.metadata), owner)


def channel_record(channel: PlatformChannel, owner: str) -> ChannelRecord:
    """The lab's record of a platform channel (markers removed)."""
    return ChannelRecord(channel.id, channel.name, strip(channel.metadata), owner)


@dataclass(frozen=True)
class MappingSet:
    """The things one run created for an external_id, in plan order, and its gateway."""

    request: str
    things: tuple[PlatformThing, ...]
    gateway: PlatformThing | None

    @property
    def expected_things(self) -> int | None:
        """How many things the gateway says the mapping has."""
        return None if self.gateway is None else _count(self.gateway.metadata, THINGS)

    @property
    def expected_channels(self) -> int | None:
        """How many channels the gateway says the mapping has."""
        return None if self.gateway is None else _count(self.gateway.metadata, CHANNELS)

    @property
    def has_certs(self) -> bool:
        """Whether the gateway's bootstrap config was given certificates."""
        return self.gateway is not None and self.gateway.metadata.get(CERTS) is True


def group(things: Sequence[PlatformThing], external_id: str) -> list[MappingSet]:
    """Split marked things of ``external_id`` into one set per run (in first-seen order)."""
    runs: dict[str, list[PlatformThing]] = {}
    for thing in things:
        request = thing.metadata.get(REQUEST)
        if thing.metadata.get(MAPPING) != external_id or not isinstance(request, str):
            continue
        if index_of(thing.metadata) is None:
            continue
        runs.setdefault(request, []).append(thing)
    sets = []
    for request, members in runs.items():
        ordered = tuple(sorted(members, key=lambda t: index_of(t.metadata) or 0))
        gateway = next((t for t in ordered if _count(t.metadata, THINGS) is not None), None)
        sets.append(MappingSet(request, ordered, gateway))
    return sets
