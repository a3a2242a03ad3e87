"""The operator listings the audit reads: ``GET /things``, ``/channels``, ``/things/configs``.

Each is paginated with ``offset`` and ``limit`` (100, the largest page Mainflux allows)
until ``total`` is reached, with the operator token (``Authorization: Bearer <token>``,
or bare for Mainflux 0.12 under ``auto``). Things are asked for with ``name=<run
name>``: Mainflux filters by a case-insensitive substring of the name, so only the
run's things come back (the simulator names every gateway's things ``sim-<prefix>-...``);
the lab server ignores the filter and lists everything, and the audit picks the run's
entities itself either way. Channels keep their layout names and bootstrap configs get
no name from Provision, so those two are listed in full.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode

from edge_provision.errors import ProtocolError
from edge_provision.http import AuthScheme, Credential, HttpClient
from edge_provision.platform.models import (
    PlatformChannel,
    PlatformThing,
    parse_channel,
    parse_thing,
)

__all__ = ["PAGE_LIMIT", "ListedConfig", "Listings", "fetch_listings", "list_all"]

PAGE_LIMIT = 100
_MAX_PAGES = 100_000  # 10 million entities: far past any lab, a guard against a bad total


@dataclass(frozen=True)
class ListedConfig:
    """A bootstrap config as the operator listing shows it (no external key kept)."""

    external_id: str
    thing_id: str
    thing_key: str = field(repr=False)
    channel_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Listings:
    """Everything the audit looks at."""

    things: tuple[PlatformThing, ...]
    channels: tuple[PlatformChannel, ...]
    configs: tuple[ListedConfig, ...]


def list_all(http: HttpClient, path: str, key: str, token: str, *,
             scheme: AuthScheme = AuthScheme.AUTO,
             params: Mapping[str, str] | None = None) -> Iterator[object]:  # fmt: skip
    """Every item of the listing at ``path`` (items under ``key``), page by page."""
    offset = 0
    for _ in range(_MAX_PAGES):
        query = urlencode({"offset": offset, "limit": PAGE_LIMIT, **(params or {})})
        response = http.request("GET", f"{path}?{query}", auth=Credential("user", token),
                                auth_scheme=scheme)  # fmt: skip
        data = response.json_object()
        items, total = data.get(key), data.get("total")
        if items is None:
            items = []
        if not isinstance(items, list) or not isinstance(total, int) or total < 0:
            raise ProtocolError(
                f"{response.url}: expected {{'total': <number>, '{key}': [...]}}; is this "
                "the operator listing of a Mainflux-compatible service?"
            )
        yield from items
        offset += len(items)
        if not items or offset >= total:
            return
    raise ProtocolError(f"{http.url_for(path)}: more than {_MAX_PAGES} pages; giving up")


def _config(value: object, where: str) -> ListedConfig:
    if not isinstance(value, dict):
        raise ProtocolError(f"{where}: expected an object, got {type(value).__name__}")
    thing_id = value.get("mainflux_id") or value.get("thing_id")
    thing_key = value.get("mainflux_key") or value.get("thing_key") or ""
    external_id = value.get("external_id")
    channels = value.get("mainflux_channels")
    if channels is None:
        channels = value.get("channels") or []
    if not isinstance(thing_id, str) or not isinstance(external_id, str):
        raise ProtocolError(f"{where}: 'mainflux_id' and 'external_id' must be strings")
    if not isinstance(thing_key, str) or not isinstance(channels, list):
        raise ProtocolError(f"{where}: 'mainflux_key' must be a string, channels a list")
    ids = tuple(parse_channel(c, f"{where}.channels[{i}]").id for i, c in enumerate(channels))
    return ListedConfig(external_id, thing_id, thing_key, ids)


def fetch_listings(things_http: HttpClient, configs_http: HttpClient, token: str, *,
                   run_name: str, scheme: AuthScheme = AuthScheme.AUTO) -> Listings:  # fmt: skip
    """Read the three listings (things filtered by ``run_name`` where the server can)."""
    things = tuple(
        parse_thing(t, f"things[{i}]")
        for i, t in enumerate(list_all(things_http, "/things", "things", token, scheme=scheme,
                                       params={"name": run_name}))
    )  # fmt: skip
    channels = tuple(
        parse_channel(c, f"channels[{i}]")
        for i, c in enumerate(list_all(things_http, "/channels", "channels", token,
                                       scheme=scheme))
    )  # fmt: skip
    configs = tuple(
        _config(c, f"configs[{i}]")
        for i, c in enumerate(list_all(configs_http, "/things/configs", "configs", token,
                                       scheme=scheme))
    )  # fmt: skip
    return Listings(things, channels, configs)
