"""The platform state behind :class:`edge_provision.testing.mainflux.FakeMainflux`.

Private to :mod:`edge_provision.testing`. Holds users, login tokens and API keys,
things, channels, connections and bootstrap configs, and the two header/status
dialects (Mainflux 0.12.1 and 0.13+). Every method runs under the caller's lock
(the API module serialises requests), so nothing here locks by itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

__all__ = [
    "BOOTSTRAP_KEY_WIDTH",
    "DIALECTS",
    "Channel",
    "Config",
    "Dialect",
    "PlatformState",
    "Thing",
    "contains",
    "is_uuid",
    "pad_key",
]

BOOTSTRAP_KEY_WIDTH = 36
"""Bootstrap stores a thing key as CHAR(36): shorter keys come back space-padded."""


@dataclass(frozen=True)
class Dialect:
    """How one Mainflux generation spells its headers, statuses and error texts."""

    name: str
    bearer_prefix: bool  # user tokens must come as "Bearer <token>"
    thing_prefix: bool  # device keys must come as "Thing <key>"
    things_auth: tuple[int, str]  # invalid/missing user token on Things
    bootstrap_auth: tuple[int, str]  # ... on Bootstrap's management API
    device_missing: tuple[int, str]  # device endpoint without a usable header
    device_wrong_key_status: int
    login_refused: tuple[int, str]
    atomic_bulk: bool


DIALECTS: dict[str, Dialect] = {
    # Facts: recorded against a genuine 0.12.1 stack (07_platform_api, 00_setup, 02_bootstrap).
    "0.12": Dialect(
        name="0.12",
        bearer_prefix=False,
        thing_prefix=False,
        things_auth=(401, "missing or invalid credentials provided"),
        bootstrap_auth=(403, "missing or invalid credentials provided"),
        device_missing=(403, "missing or invalid credentials provided"),
        device_wrong_key_status=404,
        login_refused=(403, "missing or invalid credentials provided"),
        atomic_bulk=True,
    ),
    # Facts: the wire contract (0.13.0 sources), sections 0, 2.3, 3 and 4.1.
    "0.13": Dialect(
        name="0.13",
        bearer_prefix=True,
        thing_prefix=True,
        things_auth=(401, "missing or invalid bearer user token"),
        bootstrap_auth=(401, "missing or invalid bearer user token"),
        device_missing=(401, "missing or invalid bearer entity key"),
        device_wrong_key_status=403,
        login_refused=(401, "failed to perform authentication over the entity"),
        atomic_bulk=False,
    ),
}


def _entity_view(entity_id: str, name: str, key: str | None,
                 metadata: dict[str, object]) -> dict[str, object]:
    out: dict[str, object] = {"id": entity_id}
    if name:
        out["name"] = name
    if key is not None:
        out["key"] = key
    if metadata:
        out["metadata"] = metadata
    return out


@dataclass
class Thing:
    """A thing row."""

    id: str
    owner: str
    name: str
    key: str
    metadata: dict[str, object]

    def view(self) -> dict[str, object]:
        """The wire shape: name and metadata are left out when empty (Go omitempty)."""
        return _entity_view(self.id, self.name, self.key, self.metadata)


@dataclass
class Channel:
    """A channel row."""

    id: str
    owner: str
    name: str
    metadata: dict[str, object]

    def view(self) -> dict[str, object]:
        """The wire shape: name and metadata are left out when empty."""
        return _entity_view(self.id, self.name, None, self.metadata)


@dataclass
class Config:
    """A bootstrap config row; ``channels`` are Bootstrap's own copies (id, name, metadata)."""

    thing_id: str
    owner: str
    thing_key: str  # as stored: CHAR(36), padded
    external_id: str
    external_key: str
    name: str
    content: str
    channels: list[dict[str, object]]
    client_cert: str = ""
    client_key: str = ""
    ca_cert: str = ""
    state: int = 0

    @property
    def channel_ids(self) -> list[str]:
        """Ids of the config's channels, in stored order."""
        return [str(c["id"]) for c in self.channels]

    def summary(self) -> dict[str, object]:
        """The list-item shape of ``GET /things/configs`` (no channels, no certificates)."""
        out: dict[str, object] = {
            "mainflux_id": self.thing_id,
            "mainflux_key": self.thing_key,
            "external_id": self.external_id,
            "external_key": self.external_key,
        }
        if self.content:
            out["content"] = self.content
        if self.name:
            out["name"] = self.name
        out["state"] = self.state
        return out

    def view(self) -> dict[str, object]:
        """The owner's view of one config: channels, but still no certificates."""
        out = self.summary()
        out["mainflux_channels"] = [dict(c) for c in self.channels]
        return out

    def device_view(self) -> dict[str, object]:
        """What a device gets: id, key, channels, content and certificates (omitempty)."""
        out: dict[str, object] = {
            "mainflux_id": self.thing_id,
            "mainflux_key": self.thing_key,
            "mainflux_channels": [dict(c) for c in self.channels],
        }
        for name in ("content", "client_cert", "client_key", "ca_cert"):
            value = getattr(self, name)
            if value:
                out[name] = value
        return out


def is_uuid(text: str) -> bool:
    """Whether PostgreSQL would accept ``text`` as a uuid."""
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def contains(doc: object, pattern: object) -> bool:
    """JSONB containment (``doc @> pattern``), as the ``?metadata=`` filter uses it."""
    if isinstance(pattern, dict):
        return isinstance(doc, dict) and all(
            k in doc and contains(doc[k], v) for k, v in pattern.items()
        )
    if isinstance(pattern, list):
        return isinstance(doc, list) and all(any(contains(d, p) for d in doc) for p in pattern)
    if isinstance(pattern, bool) or isinstance(doc, bool):
        return isinstance(pattern, bool) and isinstance(doc, bool) and doc == pattern
    return doc == pattern


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass
class _Token:
    email: str
    expires: float | None  # fake-clock seconds; None: never


@dataclass
class PlatformState:
    """Everything the fake platform stores (in insertion order)."""

    dialect: Dialect
    token_ttl_s: float
    users: dict[str, str] = field(default_factory=dict)  # email -> password
    things: dict[str, Thing] = field(default_factory=dict)
    channels: dict[str, Channel] = field(default_factory=dict)
    connections: list[tuple[str, str]] = field(default_factory=list)  # (channel_id, thing_id)
    configs: dict[str, Config] = field(default_factory=dict)  # by thing id
    clock_offset_s: float = 0.0
    wall: Callable[[], float] = time.time
    _tokens: dict[str, _Token] = field(default_factory=dict)
    _secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    # ------------------------------------------------------------------ tokens

    def now(self) -> float:
        """The fake clock: wall time plus what :meth:`advance` added."""
        return self.wall() + self.clock_offset_s

    def issue_token(self, email: str, *, api_key: bool = False) -> str:
        """A JWT-shaped token (HS256, ``exp`` unless an API key without duration)."""
        issued = int(self.now())
        claims: dict[str, object] = {
            "iat": issued,
            "iss": "mainflux.auth",
            "sub": email,
            "type": 2 if api_key else 0,
            "jti": uuid.uuid4().hex,
        }
        expires: float | None = None
        if not api_key:
            expires = issued + self.token_ttl_s
            claims["exp"] = int(expires)
        head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
        body = _b64(json.dumps(claims, separators=(",", ":")).encode())
        sig = _b64(hmac.new(self._secret, f"{head}.{body}".encode(), hashlib.sha256).digest())
        token = f"{head}.{body}.{sig}"
        self._tokens[token] = _Token(email, expires)
        return token

    def identify(self, token: str) -> str | None:
        """The email a token or API key belongs to; None if unknown or expired."""
        entry = self._tokens.get(token)
        if entry is None:
            return None
        if entry.expires is not None and self.now() >= entry.expires:
            return None
        return entry.email

    def login(self, email: str, password: str) -> str | None:
        """A fresh login token, or None for a wrong email or password."""
        known = self.users.get(email)
        if known is None or not hmac.compare_digest(known.encode(), password.encode()):
            return None
        return self.issue_token(email)

    # ----------------------------------------------------------------- entities

    def owned_thing(self, owner: str, thing_id: str) -> Thing | None:
        """The thing if it exists and belongs to ``owner``."""
        thing = self.things.get(thing_id)
        return thing if thing is not None and thing.owner == owner else None

    def owned_channel(self, owner: str, channel_id: str) -> Channel | None:
        """The channel if it exists and belongs to ``owner``."""
        channel = self.channels.get(channel_id)
        return channel if channel is not None and channel.owner == owner else None

    def owned_config(self, owner: str, thing_id: str) -> Config | None:
        """The bootstrap config if it exists and belongs to ``owner``."""
        config = self.configs.get(thing_id)
        return config if config is not None and config.owner == owner else None

    def key_in_use(self, key: str) -> bool:
        """Whether any thing (of any owner) has ``key``."""
        return any(t.key == key for t in self.things.values())

    def connected(self, channel_id: str, thing_id: str) -> bool:
        """Whether the pair is connected."""
        return (channel_id, thing_id) in self.connections

    def remove_thing(self, thing_id: str) -> None:
        """Delete a thing, its connections and (Bootstrap's event handler) its config."""
        self.things.pop(thing_id, None)
        self.connections = [c for c in self.connections if c[1] != thing_id]
        self.configs.pop(thing_id, None)

    def remove_channel(self, channel_id: str) -> None:
        """Delete a channel, its connections, and drop it from every config's channel list."""
        self.channels.pop(channel_id, None)
        self.connections = [c for c in self.connections if c[0] != channel_id]
        for config in self.configs.values():
            config.channels = [c for c in config.channels if c["id"] != channel_id]

    def disconnect(self, channel_id: str, thing_id: str) -> None:
        """Remove one connection and run Bootstrap's disconnect-event handler.

        The upstream handler's ``UPDATE configs SET state = 0 WHERE EXISTS (...)`` is
        not tied to the updated row: when the pair belongs to any config, EVERY
        config (of every owner) drops to state 0, and connections stay as they are.
        """
        self.connections = [c for c in self.connections if c != (channel_id, thing_id)]
        config = self.configs.get(thing_id)
        if config is not None and channel_id in config.channel_ids:
            for every in self.configs.values():
                every.state = 0

    def counts(self) -> dict[str, int]:
        """Number of users, things, channels, connections and bootstrap configs."""
        return {
            "users": len(self.users),
            "things": len(self.things),
            "channels": len(self.channels),
            "connections": len(self.connections),
            "bootstrap_configs": len(self.configs),
        }


def pad_key(key: str) -> str:
    """A thing key as Bootstrap's CHAR(36) column returns it."""
    return key.ljust(BOOTSTRAP_KEY_WIDTH)
