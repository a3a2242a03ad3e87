"""Routes and request handlers of the fake Mainflux services (Things, Bootstrap, Users).

Private to :mod:`edge_provision.testing`. :class:`MainfluxApi` takes one request
(a :class:`~edge_provision.testing.RecordedRequest`) for one service and answers a
:class:`~edge_provision.testing.Reply`, under one lock, so the fake behaves like
one serialisable database. Handlers follow the upstream Go order: content type,
decoding, validation, then authentication, then the service logic.
"""

from __future__ import annotations

import hmac
import json
import re
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Callable
from urllib.parse import parse_qs, unquote

from edge_provision.crypto import bootstrap_cipher
from edge_provision.errors import ProtocolError
from edge_provision.testing import RecordedRequest, Reply
from edge_provision.testing._mainflux_state import (
    BOOTSTRAP_KEY_WIDTH,
    Channel,
    Config,
    PlatformState,
    Thing,
    contains,
    is_uuid,
    pad_key,
)

__all__ = ["ENDPOINTS", "SERVICES", "ApiError", "Call", "MainfluxApi", "Route"]

SERVICES = ("things", "bootstrap", "users")

_JSON = {"Content-Type": "application/json"}
_NOT_FOUND_PAGE = b"404 page not found\n"
_DEFAULT_LIMIT = 10
_MAX_LIMIT = 100

MALFORMED = "malformed entity specification"
NOT_FOUND = "non-existent entity"
CONFLICT = "entity already exists"
BAD_QUERY = "invalid query parameters"
ADD_CONFIG_FAILED = "failed to add bootstrap configuration"
CHANNELS_CHECK_FAILED = "failed to check channels connections"
THINGS_UNREACHABLE = "failed to receive response from Things service"
UNKNOWN_EXTERNAL_ID = "failed to read bootstrap configuration"
WRONG_EXTERNAL_KEY = "failed to get bootstrap configuration for given external key"
WRONG_ENCRYPTED_KEY = "failed to get bootstrap configuration for given encrypted external key"


class ApiError(Exception):
    """An error answer: ``status`` with ``{"error": text}`` (``text`` None: empty body)."""

    def __init__(self, status: int, text: str | None) -> None:
        super().__init__(f"{status} {text}")
        self.status = status
        self.text = text


@dataclass(frozen=True)
class Call:
    """One request with its path parameters."""

    request: RecordedRequest
    params: dict[str, str]

    def header(self, name: str) -> str | None:
        """A request header (case-insensitive), or None."""
        return self.request.headers.get(name)

    def query(self) -> dict[str, str]:
        """The query string, last value wins."""
        parsed = parse_qs(self.request.query, keep_blank_values=True)
        return {k: v[-1] for k, v in parsed.items()}


Handler = Callable[["MainfluxApi", Call], Reply]


@dataclass(frozen=True)
class Route:
    """``method`` + path pattern of one service, its counting label and its handler."""

    service: str
    method: str
    pattern: re.Pattern[str]
    endpoint: str
    handler: Handler


def _json_reply(status: int, body: object) -> Reply:
    return Reply(status=status, json=body, headers=_JSON)


def _empty(status: int, **headers: str) -> Reply:
    return Reply(status=status, body=b"", headers={**_JSON, **headers})


def _error_reply(error: ApiError) -> Reply:
    if error.text is None:
        return _empty(error.status)
    return _json_reply(error.status, {"error": error.text})


class MainfluxApi:
    """The three services' HTTP APIs over one :class:`PlatformState`."""

    def __init__(self, state: PlatformState, encrypt_key: bytes) -> None:
        self.state = state
        self.lock = threading.RLock()
        self._encrypt_key = encrypt_key

    @property
    def dialect_name(self) -> str:
        """``0.12`` or ``0.13``."""
        return self.state.dialect.name

    # ------------------------------------------------------------------ routing

    @staticmethod
    def route(service: str, method: str, path: str) -> tuple[Route | None, dict[str, str], bool]:
        """The route for a request, its path parameters, and whether the path is known at all."""
        known_path = False
        for route in _ROUTES:
            if route.service != service:
                continue
            match = route.pattern.fullmatch(path)
            if match is None:
                continue
            known_path = True
            if route.method == method:
                return route, {k: unquote(v) for k, v in match.groupdict().items()}, True
        return None, {}, known_path

    def handle(self, route: Route | None, params: dict[str, str], known_path: bool,
               request: RecordedRequest) -> Reply:
        """Answer one request (under the lock)."""
        if route is None:
            if known_path:
                return _empty(405)
            return Reply(status=404, body=_NOT_FOUND_PAGE,
                         headers={"Content-Type": "text/plain; charset=utf-8"})
        with self.lock:
            try:
                return route.handler(self, Call(request, params))
            except ApiError as exc:
                return _error_reply(exc)

    # --------------------------------------------------------------- decoding

    @staticmethod
    def _content_json(call: Call) -> object:
        """The JSON body; 415 without a JSON content type, 400 if it does not parse."""
        content_type = call.header("Content-Type") or ""
        if "application/json" not in content_type:
            raise ApiError(415, "unsupported content type")
        try:
            return json.loads(call.request.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise ApiError(400, MALFORMED) from None

    def _json_object(self, call: Call) -> dict[str, object]:
        body = self._content_json(call)
        if not isinstance(body, dict):
            raise ApiError(400, MALFORMED)
        return body

    @staticmethod
    def _page(call: Call) -> tuple[int, int, str, dict[str, object] | None]:
        """offset, limit, name filter and metadata filter of a list request."""
        query = call.query()
        try:
            offset = int(query.get("offset", "0") or "0")
            limit = int(query.get("limit", str(_DEFAULT_LIMIT)) or str(_DEFAULT_LIMIT))
        except ValueError:
            raise ApiError(400, BAD_QUERY) from None
        if offset < 0 or not 0 < limit <= _MAX_LIMIT:
            raise ApiError(400, BAD_QUERY)
        metadata: dict[str, object] | None = None
        if "metadata" in query:
            try:
                parsed = json.loads(query["metadata"])
            except ValueError:
                raise ApiError(400, BAD_QUERY) from None
            if not isinstance(parsed, dict):
                raise ApiError(400, BAD_QUERY)
            metadata = parsed
        return offset, limit, query.get("name", ""), metadata

    # ------------------------------------------------------------------- auth

    def _owner(self, call: Call, service: str) -> str:
        """The user behind the Authorization header, in this generation's form."""
        dialect = self.state.dialect
        header = call.header("Authorization")
        token = header
        if header is not None and dialect.bearer_prefix:
            token = header[len("Bearer "):] if header.startswith("Bearer ") else None
        email = self.state.identify(token) if token else None
        if email is None:
            status, text = dialect.things_auth if service == "things" else dialect.bootstrap_auth
            raise ApiError(status, text)
        return email

    # ================================================================= Things

    @staticmethod
    def _entity_specs(body: object, *, with_key: bool) -> list[tuple[str, str, dict[str, object]]]:
        """(name, key, metadata) of each bulk item; a supplied ``id`` is ignored."""
        if not isinstance(body, list) or not body:
            raise ApiError(400, MALFORMED)
        specs = []
        for item in body:
            if not isinstance(item, dict):
                raise ApiError(400, MALFORMED)
            name = item.get("name", "")
            key = item.get("key", "") if with_key else ""
            metadata = item.get("metadata") or {}
            if not isinstance(name, str) or not isinstance(key, str) or not isinstance(
                metadata, dict
            ):
                raise ApiError(400, MALFORMED)
            specs.append((name, key, metadata))
        return specs

    def things_bulk(self, call: Call) -> Reply:
        """POST /things/bulk: atomic in 0.12 (one transaction), one by one in 0.13."""
        specs = self._entity_specs(self._content_json(call), with_key=True)
        owner = self._owner(call, "things")
        state = self.state
        created: list[Thing] = []
        taken: set[str] = set()
        for name, key, metadata in specs:
            key = key or str(uuid.uuid4())
            if key in taken or state.key_in_use(key):
                if state.dialect.atomic_bulk:
                    for thing in created:
                        state.things.pop(thing.id, None)
                raise ApiError(409, CONFLICT)
            taken.add(key)
            thing = Thing(str(uuid.uuid4()), owner, name, key, metadata)
            state.things[thing.id] = thing
            created.append(thing)
        return _json_reply(201, {"things": [t.view() for t in created]})

    def channels_bulk(self, call: Call) -> Reply:
        """POST /channels/bulk."""
        specs = self._entity_specs(self._content_json(call), with_key=False)
        owner = self._owner(call, "things")
        created = [Channel(str(uuid.uuid4()), owner, name, metadata)
                   for name, _key, metadata in specs]  # fmt: skip
        for channel in created:
            self.state.channels[channel.id] = channel
        return _json_reply(201, {"channels": [c.view() for c in created]})

    @staticmethod
    def _listing(kind: str, items: Sequence[Thing | Channel], offset: int,
                 limit: int) -> Reply:
        return _json_reply(200, {
            "total": len(items), "offset": offset, "limit": limit, "order": "",
            "direction": "", kind: [i.view() for i in items[offset:offset + limit]],
        })  # fmt: skip

    def _search(self, call: Call, kind: str, rows: Iterable[Thing | Channel]) -> Reply:
        """A filtered page: ``name`` a case-insensitive substring, ``metadata`` containment."""
        offset, limit, name, metadata = self._page(call)
        owner = self._owner(call, "things")
        found = [r for r in rows if r.owner == owner and name.lower() in r.name.lower()
                 and (metadata is None or contains(r.metadata, metadata))]  # fmt: skip
        return self._listing(kind, found, offset, limit)

    def list_things(self, call: Call) -> Reply:
        """GET /things?name=&metadata=&offset=&limit=."""
        return self._search(call, "things", self.state.things.values())

    def list_channels(self, call: Call) -> Reply:
        """GET /channels (the same filters)."""
        return self._search(call, "channels", self.state.channels.values())

    def _view(self, call: Call, rows: Mapping[str, Thing] | Mapping[str, Channel]) -> Reply:
        """One row by id: 404 for unknown, foreign and malformed ids alike."""
        owner = self._owner(call, "things")
        row = rows.get(call.params["id"])
        if row is None or row.owner != owner:
            raise ApiError(404, NOT_FOUND)
        return _json_reply(200, row.view())

    def view_thing(self, call: Call) -> Reply:
        """GET /things/{id}."""
        return self._view(call, self.state.things)

    def view_channel(self, call: Call) -> Reply:
        """GET /channels/{id}."""
        return self._view(call, self.state.channels)

    def _delete(self, call: Call, rows: Mapping[str, Thing] | Mapping[str, Channel],
                remove: Callable[[str], None]) -> Reply:
        """204 also for unknown (and foreign) ids, 400 for malformed ones."""
        owner = self._owner(call, "things")
        row_id = call.params["id"]
        if not is_uuid(row_id):
            raise ApiError(400, "remove entity failed")
        row = rows.get(row_id)
        if row is not None and row.owner == owner:
            remove(row_id)
        return _empty(204)

    def delete_thing(self, call: Call) -> Reply:
        """DELETE /things/{id}: connections and (Bootstrap's event handler) its config go too."""
        return self._delete(call, self.state.things, self.state.remove_thing)

    def delete_channel(self, call: Call) -> Reply:
        """DELETE /channels/{id}: connections go too; configs drop the channel."""
        return self._delete(call, self.state.channels, self.state.remove_channel)

    def thing_channels(self, call: Call) -> Reply:
        """GET /things/{id}/channels: the channels the thing is connected to."""
        offset, limit, _name, _meta = self._page(call)
        owner = self._owner(call, "things")
        thing_id = call.params["id"]
        ids = [ch for ch, th in self.state.connections if th == thing_id]
        found = [c for c in (self.state.owned_channel(owner, i) for i in ids) if c is not None]
        return self._listing("channels", found, offset, limit)

    def channel_things(self, call: Call) -> Reply:
        """GET /channels/{id}/things: the things connected to the channel."""
        offset, limit, _name, _meta = self._page(call)
        owner = self._owner(call, "things")
        channel_id = call.params["id"]
        ids = [th for ch, th in self.state.connections if ch == channel_id]
        found = [t for t in (self.state.owned_thing(owner, i) for i in ids) if t is not None]
        return self._listing("things", found, offset, limit)

    @staticmethod
    def _id_list(body: dict[str, object], name: str) -> list[str]:
        value = body.get(name)
        if not isinstance(value, list) or not value or not all(
            isinstance(v, str) and v for v in value
        ):
            raise ApiError(400, MALFORMED)
        return [str(v) for v in value]

    def connect(self, call: Call) -> Reply:
        """POST /connect: every channel x thing pair in one transaction; 200, empty body."""
        body = self._json_object(call)
        channel_ids = self._id_list(body, "channel_ids")
        thing_ids = self._id_list(body, "thing_ids")
        owner = self._owner(call, "things")
        state = self.state
        if not all(is_uuid(i) for i in (*channel_ids, *thing_ids)):
            raise ApiError(400, "add connection failed")
        if any(state.owned_channel(owner, c) is None for c in channel_ids) or any(
            state.owned_thing(owner, t) is None for t in thing_ids
        ):
            raise ApiError(404, NOT_FOUND)
        pairs = [(c, t) for c in channel_ids for t in thing_ids]
        if len(set(pairs)) != len(pairs) or any(state.connected(c, t) for c, t in pairs):
            raise ApiError(409, CONFLICT)
        state.connections.extend(pairs)
        return _empty(200)

    def disconnect_one(self, call: Call) -> Reply:
        """DELETE /channels/{chan}/things/{thing}: 204 (Bootstrap's event handler runs)."""
        owner = self._owner(call, "things")
        channel_id, thing_id = call.params["chan"], call.params["thing"]
        state = self.state
        if (state.owned_channel(owner, channel_id) is None
                or state.owned_thing(owner, thing_id) is None
                or not state.connected(channel_id, thing_id)):  # fmt: skip
            raise ApiError(404, NOT_FOUND)
        state.disconnect(channel_id, thing_id)
        return _empty(204)

    # ============================================================== Bootstrap

    def _channel_copies(self, owner: str, body: dict[str, object]) -> list[dict[str, object]]:
        """Bootstrap's copies of the named channels; 400 if one is unknown."""
        raw = body.get("channels") or []
        if not isinstance(raw, list) or not all(isinstance(c, str) for c in raw):
            raise ApiError(400, MALFORMED)
        copies = []
        for channel_id in raw:
            channel = self.state.owned_channel(owner, str(channel_id))
            if channel is None:
                raise ApiError(400, CHANNELS_CHECK_FAILED)
            copies.append(channel.view())
        return copies

    @staticmethod
    def _text(body: dict[str, object], name: str) -> str:
        value = body.get(name, "")
        if value is None:
            return ""
        if not isinstance(value, str):
            raise ApiError(400, MALFORMED)
        return value

    def add_config(self, call: Call) -> Reply:
        """POST /things/configs: 201, empty body, the id only in ``Location``."""
        body = self._json_object(call)
        external_id = self._text(body, "external_id")
        external_key = self._text(body, "external_key")
        if not external_id:
            raise ApiError(400, "missing entity id")
        if not external_key:
            raise ApiError(401, "missing or invalid bearer entity key")
        owner = self._owner(call, "bootstrap")
        state = self.state
        thing_id = self._text(body, "thing_id")
        made: Thing | None = None
        if thing_id:
            thing = state.owned_thing(owner, thing_id)
            if thing is None:
                raise ApiError(404, ADD_CONFIG_FAILED)
        else:  # Bootstrap creates a nameless thing itself
            made = thing = Thing(str(uuid.uuid4()), owner, "", str(uuid.uuid4()), {})
            state.things[thing.id] = thing
        try:
            channels = self._channel_copies(owner, body)
            if len(thing.key) > BOOTSTRAP_KEY_WIDTH:
                raise ApiError(500, ADD_CONFIG_FAILED)  # value too long for CHAR(36)
            if thing.id in state.configs or any(
                c.external_id == external_id for c in state.configs.values()
            ):
                raise ApiError(409, ADD_CONFIG_FAILED)
        except ApiError:
            if made is not None:
                state.remove_thing(made.id)
            raise
        state.configs[thing.id] = Config(
            thing_id=thing.id, owner=owner, thing_key=pad_key(thing.key),
            external_id=external_id, external_key=external_key,
            name=self._text(body, "name"), content=self._text(body, "content"),
            channels=channels, client_cert=self._text(body, "client_cert"),
            client_key=self._text(body, "client_key"), ca_cert=self._text(body, "ca_cert"),
        )  # fmt: skip
        return _empty(201, Location=f"/things/configs/{thing.id}")

    def _config(self, call: Call) -> Config:
        owner = self._owner(call, "bootstrap")
        config = self.state.owned_config(owner, call.params["id"])
        if config is None:
            raise ApiError(404, NOT_FOUND)
        return config

    def view_config(self, call: Call) -> Reply:
        """GET /things/configs/{id}: the owner's view (no certificates)."""
        return _json_reply(200, self._config(call).view())

    def list_configs(self, call: Call) -> Reply:
        """GET /things/configs: filters external_id, mainflux_id, mainflux_key, state, name."""
        offset, limit, name, _meta = self._page(call)
        query = call.query()
        state_filter = query.get("state")
        if state_filter not in (None, "0", "1"):
            raise ApiError(400, BAD_QUERY)
        owner = self._owner(call, "bootstrap")
        exact = {k: query[k] for k in ("external_id", "mainflux_id", "mainflux_key") if k in query}
        found = [
            c for c in self.state.configs.values()
            if c.owner == owner and name.lower() in c.name.lower()
            and (state_filter is None or c.state == int(state_filter))
            and all(c.summary()[k] == v for k, v in exact.items())
        ]  # fmt: skip
        return _json_reply(200, {"total": len(found), "offset": offset, "limit": limit,
                                 "configs": [c.summary() for c in found[offset:offset + limit]]})

    def update_config(self, call: Call) -> Reply:
        """PUT /things/configs/{id}: replaces name and content."""
        body = self._json_object(call)
        config = self._config(call)
        config.name, config.content = self._text(body, "name"), self._text(body, "content")
        return _empty(200)

    def update_certs(self, call: Call) -> Reply:
        """PATCH /things/configs/certs/{id}: stored; only the device endpoint shows them."""
        body = self._json_object(call)
        config = self._config(call)
        config.client_cert = self._text(body, "client_cert")
        config.client_key = self._text(body, "client_key")
        config.ca_cert = self._text(body, "ca_cert")
        return _empty(200)

    def _connect_each(self, config: Config, channel_ids: Sequence[str]) -> None:
        """Bootstrap's connect loop: one /connect per channel; a refusal is a 503."""
        state = self.state
        for channel_id in channel_ids:
            if (state.owned_channel(config.owner, channel_id) is None
                    or config.thing_id not in state.things
                    or state.connected(channel_id, config.thing_id)):  # fmt: skip
                raise ApiError(503, THINGS_UNREACHABLE)
            state.connections.append((channel_id, config.thing_id))

    def update_connections(self, call: Call) -> Reply:
        """PUT /things/configs/connections/{id}: while active, connect/disconnect the difference."""
        body = self._json_object(call)
        config = self._config(call)
        copies = self._channel_copies(config.owner, body)
        wanted = [str(c["id"]) for c in copies]
        if config.state == 1:
            self._connect_each(config, [c for c in wanted if c not in config.channel_ids])
            for gone in [c for c in config.channel_ids if c not in wanted]:
                if self.state.connected(gone, config.thing_id):
                    self.state.disconnect(gone, config.thing_id)  # the state-0 bug fires here
        config.channels = copies
        return _empty(200)

    def change_state(self, call: Call) -> Reply:
        """PUT /things/state/{id}: 1 connects every channel, 0 disconnects; same state: no-op."""
        body = self._json_object(call)
        wanted = body.get("state")
        if isinstance(wanted, bool) or wanted not in (0, 1):
            raise ApiError(400, "invalid bootstrap state")
        config = self._config(call)
        if config.state == wanted:
            return _empty(200)
        if wanted == 1:
            self._connect_each(config, config.channel_ids)
            config.state = 1
        else:
            for channel_id in config.channel_ids:
                if self.state.connected(channel_id, config.thing_id):
                    self.state.disconnect(channel_id, config.thing_id)
            config.state = 0
        return _empty(200)

    def delete_config(self, call: Call) -> Reply:
        """DELETE /things/configs/{id}: 204 even for unknown ids; the thing stays."""
        owner = self._owner(call, "bootstrap")
        if self.state.owned_config(owner, call.params["id"]) is not None:
            del self.state.configs[call.params["id"]]
        return _empty(204)

    def _device_key(self, call: Call) -> str:
        dialect = self.state.dialect
        header = call.header("Authorization")
        key = header
        if header is not None and dialect.thing_prefix:
            key = header[len("Thing "):] if header.startswith("Thing ") else None
        if not key:
            raise ApiError(*dialect.device_missing)
        return key

    def _device_config(self, call: Call) -> Config:
        external_id = call.params["external_id"]
        config = next((c for c in self.state.configs.values() if c.external_id == external_id),
                      None)
        if config is None:
            raise ApiError(404, UNKNOWN_EXTERNAL_ID)
        return config

    def _check_external_key(self, config: Config, key: str) -> None:
        if not hmac.compare_digest(key.encode(), config.external_key.encode()):
            raise ApiError(self.state.dialect.device_wrong_key_status, WRONG_EXTERNAL_KEY)

    def device_bootstrap(self, call: Call) -> Reply:
        """GET /things/bootstrap/{external_id} with the external key."""
        key = self._device_key(call)
        config = self._device_config(call)
        self._check_external_key(config, key)
        return _json_reply(200, config.device_view())

    def device_bootstrap_secure(self, call: Call) -> Reply:
        """GET /things/bootstrap/secure/{external_id}: encrypted key in, encrypted body out."""
        token = self._device_key(call)
        config = self._device_config(call)
        try:
            key = bootstrap_cipher.decrypt_external_key_header(self._encrypt_key, token)
        except ProtocolError:
            raise ApiError(self.state.dialect.device_wrong_key_status,
                           WRONG_ENCRYPTED_KEY) from None
        self._check_external_key(config, key)
        plain = json.dumps(config.device_view(), separators=(",", ":")).encode("utf-8")
        return Reply(status=200, body=bootstrap_cipher.encrypt(self._encrypt_key, plain),
                     headers=_JSON)

    # ================================================================== Users

    def login(self, call: Call) -> Reply:
        """POST /tokens: 201 ``{"token"}``; wrong email or password refused."""
        body = self._json_object(call)
        email, password = body.get("email"), body.get("password")
        if not isinstance(email, str) or not isinstance(password, str) or not email:
            raise ApiError(400, MALFORMED)
        token = self.state.login(email, password)
        if token is None:
            raise ApiError(*self.state.dialect.login_refused)
        return _json_reply(201, {"token": token})


def _r(service: str, method: str, template: str, handler: Handler) -> Route:
    regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template)
    return Route(service, method, re.compile(regex), f"{method} {template}", handler)


_M = MainfluxApi
_ROUTES: tuple[Route, ...] = (
    _r("things", "POST", "/things/bulk", _M.things_bulk),
    _r("things", "GET", "/things", _M.list_things),
    _r("things", "GET", "/things/{id}", _M.view_thing),
    _r("things", "DELETE", "/things/{id}", _M.delete_thing),
    _r("things", "GET", "/things/{id}/channels", _M.thing_channels),
    _r("things", "POST", "/channels/bulk", _M.channels_bulk),
    _r("things", "GET", "/channels", _M.list_channels),
    _r("things", "GET", "/channels/{id}", _M.view_channel),
    _r("things", "DELETE", "/channels/{id}", _M.delete_channel),
    _r("things", "GET", "/channels/{id}/things", _M.channel_things),
    _r("things", "POST", "/connect", _M.connect),
    _r("things", "DELETE", "/channels/{chan}/things/{thing}", _M.disconnect_one),
    _r("bootstrap", "POST", "/things/configs", _M.add_config),
    _r("bootstrap", "GET", "/things/configs", _M.list_configs),
    _r("bootstrap", "GET", "/things/configs/{id}", _M.view_config),
    _r("bootstrap", "PUT", "/things/configs/{id}", _M.update_config),
    _r("bootstrap", "DELETE", "/things/configs/{id}", _M.delete_config),
    _r("bootstrap", "PATCH", "/things/configs/certs/{id}", _M.update_certs),
    _r("bootstrap", "PUT", "/things/configs/connections/{id}", _M.update_connections),
    _r("bootstrap", "PUT", "/things/state/{id}", _M.change_state),
    _r("bootstrap", "GET", "/things/bootstrap/secure/{external_id}", _M.device_bootstrap_secure),
    _r("bootstrap", "GET", "/things/bootstrap/{external_id}", _M.device_bootstrap),
    _r("users", "POST", "/tokens", _M.login),
)

ENDPOINTS: tuple[tuple[str, str], ...] = tuple((r.service, r.endpoint) for r in _ROUTES)
"""Every (service, endpoint) the fake implements."""
