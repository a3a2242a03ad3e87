"""Operator-side client of Bootstrap's configs API (wire contract 2.2, recorded 0.12.1 facts).

A config binds a thing to its external id/key pair, channels, content and
certificates. Facts a caller must know (all recorded against 0.12.1):

* ``POST /things/configs`` answers 201 with an EMPTY body; the id (the thing id)
  is only in ``Location``. ``external_id`` is unique across all users (409), so is
  the thing (409); an unknown thing is a 404, an unknown channel a 400, and a
  thing key longer than 36 characters a 500 (Bootstrap stores ``CHAR(36)``).
* A new config is state 0 and connects nothing. State 1 ("whitelisting") makes
  Bootstrap connect the thing to each config channel, one ``/connect`` at a time:
  if a pair is connected already, the answer is 503 and the state stays 0.
* The owner's views never show certificates; the list shows no channels.
* Keys shorter than 36 characters come back space-padded: :class:`ConfigView`
  strips the padding.
* Any disconnect on Things of a pair that belongs to a config resets EVERY config
  to state 0 while the connections stay (upstream bug): do not trust ``state``.

The Bootstrap URL here is the service root. Upstream's ``MF_PROVISION_BS_SVC_URL``
names it with ``/things`` appended: :func:`bootstrap_root` removes that.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from edge_provision.errors import ProtocolError
from edge_provision.platform._operator import (
    OperatorClient,
    Page,
    page_of,
    query,
    seg,
)
from edge_provision.platform.models import PlatformChannel, parse_channel

__all__ = [
    "BootstrapConfigsClient",
    "ConfigState",
    "ConfigView",
    "NewConfig",
    "bootstrap_root",
]

logger = logging.getLogger(__name__)

SERVICE = "bootstrap"
_MAX_LIMIT = 100
_LOCATION_PREFIX = "/things/configs/"


class ConfigState(enum.IntEnum):
    """A config's state: 0 inactive (nothing connected by Bootstrap), 1 active (whitelisted)."""

    INACTIVE = 0
    ACTIVE = 1


@dataclass(frozen=True)
class NewConfig:
    """A bootstrap config to create (``thing_id`` None: Bootstrap creates a nameless thing)."""

    external_id: str
    external_key: str = field(repr=False)
    thing_id: str | None = None
    channel_ids: tuple[str, ...] = ()
    name: str = ""
    content: str = field(default="", repr=False)
    client_cert: str = ""
    client_key: str = field(default="", repr=False)
    ca_cert: str = ""


@dataclass(frozen=True)
class ConfigView:
    """A config as its owner sees it (``channels`` is empty for list items)."""

    thing_id: str
    thing_key: str = field(repr=False)
    external_id: str = ""
    external_key: str = field(default="", repr=False)
    name: str = ""
    content: str = field(default="", repr=False)
    state: int = 0
    channels: tuple[PlatformChannel, ...] = ()


def bootstrap_root(url: str) -> str:
    """The Bootstrap service root of ``url``, which may end in ``/things`` as upstream's does."""
    trimmed = url.rstrip("/")
    if trimmed.endswith("/things"):
        trimmed = trimmed[: -len("/things")]
    return trimmed


def _text(data: dict[str, object], name: str, where: str, *, required: bool = False) -> str:
    value = data.get(name)
    if value is None:
        if required:
            raise ProtocolError(f"{where}: missing {name!r}")
        return ""
    if not isinstance(value, str):
        raise ProtocolError(f"{where}: {name!r} must be a string")
    return value


def _parse_view(value: object, where: str) -> ConfigView:
    if not isinstance(value, dict):
        raise ProtocolError(f"{where}: expected an object, got {type(value).__name__}")
    state = value.get("state", 0)
    if not isinstance(state, int) or isinstance(state, bool):
        raise ProtocolError(f"{where}: 'state' must be an integer")
    raw_channels = value.get("mainflux_channels") or []
    if not isinstance(raw_channels, list):
        raise ProtocolError(f"{where}: 'mainflux_channels' is not a list")
    return ConfigView(
        thing_id=_text(value, "mainflux_id", where, required=True),
        # Bootstrap's CHAR(36) column pads shorter keys with spaces
        thing_key=_text(value, "mainflux_key", where, required=True).rstrip(" "),
        external_id=_text(value, "external_id", where),
        external_key=_text(value, "external_key", where),
        name=_text(value, "name", where),
        content=_text(value, "content", where),
        state=state,
        channels=tuple(parse_channel(c, f"{where}.mainflux_channels[{n}]")
                       for n, c in enumerate(raw_channels)),
    )


class BootstrapConfigsClient(OperatorClient):
    """Bootstrap's management API as an operator (user token or API key) uses it."""

    SERVICE = SERVICE

    def create(self, config: NewConfig) -> str:
        """Create a config; return its id (the thing id) from ``Location``.

        ``AlreadyProvisioned`` (409) when the external_id or the thing already
        has a config; ``Rejected`` for an unknown thing (404) or channel (400).
        """
        if not config.external_id or not config.external_key:
            raise ValueError("a bootstrap config needs external_id and external_key")
        body: dict[str, object] = {
            "external_id": config.external_id,
            "external_key": config.external_key,
            "channels": list(config.channel_ids),
        }
        for name in ("thing_id", "name", "content", "client_cert", "client_key", "ca_cert"):
            value = getattr(config, name)
            if value:
                body[name] = value
        response = self._calls.call("POST", "/things/configs", "POST /things/configs",
                                    json_body=body, expected=(201, 200))
        location = response.header("Location") or ""
        config_id = location[len(_LOCATION_PREFIX):] if location.startswith(
            _LOCATION_PREFIX) else ""
        if not config_id:
            if config.thing_id:
                return config.thing_id
            raise ProtocolError(f"{response.url}: no config id in the Location header "
                                f"({location!r})")
        return config_id

    def view(self, thing_id: str) -> ConfigView | None:
        """One config (with channels, without certificates); None if unknown."""
        response = self._calls.call("GET", f"/things/configs/{seg(thing_id)}",
                                    "GET /things/configs/{id}", expected=(200, 404))
        if response.status == 404:
            return None
        return _parse_view(response.json(), f"{response.url} reply")

    def configs(self, *, external_id: str | None = None, name: str | None = None,
             state: ConfigState | None = None, offset: int = 0,
             limit: int = _MAX_LIMIT) -> Page[ConfigView]:
        """Configs (without channels), filtered by exact external_id, name substring, state."""
        if not 1 <= limit <= _MAX_LIMIT or offset < 0:
            raise ValueError(f"limit must be 1..{_MAX_LIMIT} and offset >= 0")
        params = {"offset": offset, "limit": limit, "external_id": external_id or None,
                  "name": name or None, "state": int(state) if state is not None else None}
        response = self._calls.call("GET", f"/things/configs{query(params)}",
                                    "GET /things/configs")
        return page_of(response, "configs", _parse_view)

    def update(self, thing_id: str, *, name: str, content: str) -> None:
        """Replace the config's name and content."""
        self._calls.call("PUT", f"/things/configs/{seg(thing_id)}", "PUT /things/configs/{id}",
                         json_body={"name": name, "content": content}, expected=(200, 204))

    def update_certs(self, thing_id: str, *, client_cert: str, client_key: str,
                     ca_cert: str) -> None:
        """Store certificates the device endpoint will hand out."""
        self._calls.call("PATCH", f"/things/configs/certs/{seg(thing_id)}",
                         "PATCH /things/configs/certs/{id}", expected=(200, 204),
                         json_body={"client_cert": client_cert, "client_key": client_key,
                                    "ca_cert": ca_cert})  # fmt: skip

    def update_connections(self, thing_id: str, channel_ids: Sequence[str]) -> None:
        """Replace the config's channels (an active config connects/disconnects the difference)."""
        self._calls.call("PUT", f"/things/configs/connections/{seg(thing_id)}",
                         "PUT /things/configs/connections/{id}", expected=(200, 204),
                         json_body={"channels": list(channel_ids)})

    def set_state(self, thing_id: str, state: ConfigState) -> None:
        """Whitelist (ACTIVE: connect every config channel) or not; ``ServiceUnavailable`` (503)
        if Things refused a connection (for instance because it existed already)."""
        self._calls.call("PUT", f"/things/state/{seg(thing_id)}", "PUT /things/state/{id}",
                         json_body={"state": int(state)}, expected=(200, 204))

    def delete(self, thing_id: str) -> None:
        """Delete a config (204 also for unknown ids); the thing and its connections stay."""
        self._calls.call("DELETE", f"/things/configs/{seg(thing_id)}",
                         "DELETE /things/configs/{id}", expected=(204, 200))
