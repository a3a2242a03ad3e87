"""Operator-side client of the Things service: bulk creation, connections, lookups, deletes.

Wire contract section 3 and the recorded 0.12.1 exchanges: ``POST /things/bulk``
and ``/channels/bulk`` answer 201 with every created entity (0.12.1 creates the
whole batch in one transaction, 0.13 one by one); ``POST /connect`` connects every
channel x thing pair at once and answers 200 with an empty body (409 if a pair
exists, 404 if an id is unknown: nothing is connected then); ``GET /things``
filters by ``metadata`` (JSON containment) and ``name`` (substring); deletes
answer 204 even for unknown ids and take the entity's connections with them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Callable, TypeVar

from edge_provision.errors import ProtocolError
from edge_provision.platform._operator import (
    OperatorClient,
    Page,
    page_of,
    query,
    seg,
)
from edge_provision.platform.models import (
    PlatformChannel,
    PlatformThing,
    parse_channel,
    parse_thing,
)

__all__ = ["NewChannel", "NewThing", "Page", "ThingsClient"]

logger = logging.getLogger(__name__)

SERVICE = "things"
T = TypeVar("T")
_MAX_LIMIT = 100


@dataclass(frozen=True)
class NewThing:
    """A thing to create; ``key`` None lets the platform generate one (a UUID)."""

    name: str
    metadata: Mapping[str, object] = field(default_factory=dict)
    key: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class NewChannel:
    """A channel to create."""

    name: str
    metadata: Mapping[str, object] = field(default_factory=dict)


def _check_limit(offset: int, limit: int) -> None:
    if not 1 <= limit <= _MAX_LIMIT or offset < 0:
        raise ValueError(f"limit must be 1..{_MAX_LIMIT} and offset >= 0, got {limit}, {offset}")


class ThingsClient(OperatorClient):
    """The Things service as an operator (user token or API key) uses it."""

    SERVICE = SERVICE

    # ------------------------------------------------------------------ create

    def create_things(self, things: Sequence[NewThing]) -> tuple[PlatformThing, ...]:
        """Create ``things`` with one ``POST /things/bulk``; returned in request order."""
        if not things:
            raise ValueError("create_things needs at least one thing")
        body: list[dict[str, object]] = []
        for thing in things:
            item: dict[str, object] = {"name": thing.name, "metadata": dict(thing.metadata)}
            if thing.key is not None:
                item["key"] = thing.key
            body.append(item)
        response = self._calls.call("POST", "/things/bulk", "POST /things/bulk",
                                    json_body=body, expected=(201, 200))
        created = self._created(response.json_object(), "things", len(things), response.url)
        return tuple(parse_thing(t, f"{response.url} reply.things[{n}]")
                     for n, t in enumerate(created))  # fmt: skip

    def create_channels(self, channels: Sequence[NewChannel]) -> tuple[PlatformChannel, ...]:
        """Create ``channels`` with one ``POST /channels/bulk``; returned in request order."""
        if not channels:
            raise ValueError("create_channels needs at least one channel")
        body = [{"name": c.name, "metadata": dict(c.metadata)} for c in channels]
        response = self._calls.call("POST", "/channels/bulk", "POST /channels/bulk",
                                    json_body=body, expected=(201, 200))
        created = self._created(response.json_object(), "channels", len(channels), response.url)
        return tuple(parse_channel(c, f"{response.url} reply.channels[{n}]")
                     for n, c in enumerate(created))  # fmt: skip

    @staticmethod
    def _created(data: dict[str, object], name: str, count: int, url: str) -> list[object]:
        items = data.get(name)
        if not isinstance(items, list) or len(items) != count:
            got = len(items) if isinstance(items, list) else type(items).__name__
            raise ProtocolError(f"{url} reply: expected {count} {name}, got {got}")
        return items

    # ------------------------------------------------------------- connections

    def connect(self, channel_ids: Sequence[str], thing_ids: Sequence[str]) -> None:
        """Connect every channel to every thing in one ``POST /connect`` (all or nothing).

        ``AlreadyProvisioned`` (409) if a pair is connected already, ``Rejected``
        (404) if an id is unknown.
        """
        if not channel_ids or not thing_ids:
            raise ValueError("connect needs at least one channel id and one thing id")
        self._calls.call("POST", "/connect", "POST /connect", expected=(200, 201),
                         json_body={"channel_ids": list(channel_ids),
                                    "thing_ids": list(thing_ids)})  # fmt: skip

    def disconnect(self, channel_id: str, thing_id: str) -> None:
        """Disconnect one pair (``DELETE /channels/{chan}/things/{thing}``).

        Beware: on Mainflux 0.12/0.13 Bootstrap then sets EVERY bootstrap config
        to state 0 if the pair belongs to a config (upstream bug).
        """
        self._calls.call("DELETE", f"/channels/{seg(channel_id)}/things/{seg(thing_id)}",
                         "DELETE /channels/{chan}/things/{thing}", expected=(204, 200))

    def channels_of(self, thing_id: str, *, offset: int = 0,
                    limit: int = _MAX_LIMIT) -> Page[PlatformChannel]:
        """The channels ``thing_id`` is connected to."""
        _check_limit(offset, limit)
        response = self._calls.call(
            "GET", f"/things/{seg(thing_id)}/channels{query({'offset': offset, 'limit': limit})}",
            "GET /things/{id}/channels")
        return page_of(response, "channels", parse_channel)

    # ------------------------------------------------------------------- reads

    def thing(self, thing_id: str) -> PlatformThing | None:
        """One thing, or None if unknown (or not the caller's)."""
        response = self._calls.call("GET", f"/things/{seg(thing_id)}", "GET /things/{id}",
                                    expected=(200, 404))
        if response.status == 404:
            return None
        return parse_thing(response.json(), f"{response.url} reply")

    def channel(self, channel_id: str) -> PlatformChannel | None:
        """One channel, or None if unknown (or not the caller's)."""
        response = self._calls.call("GET", f"/channels/{seg(channel_id)}", "GET /channels/{id}",
                                    expected=(200, 404))
        if response.status == 404:
            return None
        return parse_channel(response.json(), f"{response.url} reply")

    def things(self, *, metadata: Mapping[str, object] | None = None, name: str | None = None,
               offset: int = 0, limit: int = _MAX_LIMIT) -> Page[PlatformThing]:
        """Things whose metadata contains ``metadata`` and whose name contains ``name``."""
        return self._search("things", parse_thing, metadata, name, offset, limit)

    def channels(self, *, metadata: Mapping[str, object] | None = None, name: str | None = None,
                 offset: int = 0, limit: int = _MAX_LIMIT) -> Page[PlatformChannel]:
        """Channels whose metadata contains ``metadata`` and whose name contains ``name``."""
        return self._search("channels", parse_channel, metadata, name, offset, limit)

    def _search(self, kind: str, parse: Callable[[object, str], T],
                metadata: Mapping[str, object] | None, name: str | None, offset: int,
                limit: int) -> Page[T]:
        _check_limit(offset, limit)
        params = {"offset": offset, "limit": limit, "name": name or None,
                  "metadata": dict(metadata) if metadata is not None else None}
        response = self._calls.call("GET", f"/{kind}{query(params)}", f"GET /{kind}")
        return page_of(response, kind, parse)

    # ----------------------------------------------------------------- deletes

    def delete_thing(self, thing_id: str) -> None:
        """Delete a thing (its connections go with it; Bootstrap drops its config)."""
        self._calls.call("DELETE", f"/things/{seg(thing_id)}", "DELETE /things/{id}",
                         expected=(204, 200))

    def delete_channel(self, channel_id: str) -> None:
        """Delete a channel (its connections go with it)."""
        self._calls.call("DELETE", f"/channels/{seg(channel_id)}", "DELETE /channels/{id}",
                         expected=(204, 200))
