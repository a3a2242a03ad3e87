"""A contract-faithful fake Mainflux: Things, Bootstrap and Users on real loopback HTTP servers.

Built from the recorded exchanges with a genuine Mainflux 0.12.1 stack and the
0.13 wire contract, and checked against our own compact fixture of those facts
(``tests/data/mainflux_contract.json``) so that it cannot drift. What it does,
in short:

* **Things** (``things_url``): ``POST /things/bulk`` and ``/channels/bulk`` (atomic
  in 0.12: one duplicate key is a 409 and nothing is created; one by one in 0.13),
  ``POST /connect`` (every pair in one transaction, 200 with an empty body; a pair
  already connected is a 409; one unknown id a 404 and nothing connected),
  ``GET /things?metadata=<json>&name=<substring>`` (JSONB containment, case-insensitive
  substring), views, deletes (204 even for unknown ids; they drop connections and, as
  Bootstrap's event handler, the thing's config), connected lists and the single
  disconnect ``DELETE /channels/{chan}/things/{thing}``.
* **Bootstrap** (``bootstrap_url``): the configs API (``POST /things/configs`` is 201
  with an empty body and the id only in ``Location``; view, list, update, certs,
  connections, state, delete) with upstream's quirks: keys under 36 characters come
  back space-padded, a longer key makes creation fail with 500, whitelisting
  connects channel by channel and answers 503 if one is already connected, and a
  disconnect of a config's pair resets EVERY config to state 0. The device endpoints
  ``GET /things/bootstrap/{external_id}`` and ``.../secure/{external_id}``.
* **Users** (``users_url``): ``POST /tokens``; login tokens expire after
  ``token_ttl_s`` of the fake clock (:meth:`FakeMainflux.advance`).
* **Generations**: ``"0.12"`` takes bare tokens and keys and refuses ``Bearer``;
  ``"0.13"`` wants ``Bearer <token>`` / ``Thing <key>`` (and its own status codes).
* **Faults**: :meth:`FakeMainflux.fail` makes chosen calls answer an error status, or
  drop the connection before or after the platform applied them.
* **Counting**: every request is counted per (service, endpoint, status).

Entities belong to the user whose token created them. Everything is thread-safe;
requests are applied one at a time, like a serialisable database.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal

from edge_provision.crypto import bootstrap_cipher
from edge_provision.testing import FakeServer, Headers, RecordedRequest, Reply
from edge_provision.testing._mainflux_api import ENDPOINTS, SERVICES, MainfluxApi
from edge_provision.testing._mainflux_state import DIALECTS, PlatformState

__all__ = [
    "ADMIN_EMAIL",
    "ADMIN_PASSWORD",
    "ENDPOINTS",
    "GENERATIONS",
    "SERVICES",
    "FakeMainflux",
    "Fault",
]

ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "fake-admin-password"  # noqa: S105 - a throwaway test credential
GENERATIONS = tuple(DIALECTS)

Drop = Literal["before", "after"]
_HOLD_MAX_S = 30.0


@dataclass
class Fault:
    """Make matching calls fail, or hold their answers back.

    ``status``: answer it (with ``{"error": ...}``) without applying the call.
    ``drop="before"`` resets the connection without applying the call;
    ``drop="after"`` applies it, then resets the connection (the reply is lost).
    ``hold``: apply the call, then answer only once the event is set (at most
    30 s), so that a test can order concurrent clients deterministically.
    ``service``/``endpoint`` (e.g. ``"POST /things/bulk"``) of None match any call.
    The first ``skip`` matching calls pass; the next ``times`` are affected.
    ``hits`` counts the calls this fault took.
    """

    service: str | None = None
    endpoint: str | None = None
    status: int | None = None
    drop: Drop | None = None
    hold: threading.Event | None = None
    skip: int = 0
    times: int = 1
    hits: int = field(default=0, init=False)


class _ServiceServer(FakeServer):
    """One service's HTTP server: answers are computed by the platform, not scripted."""

    def __init__(self, platform: FakeMainflux, service: str) -> None:
        super().__init__()
        self._platform = platform
        self._service = service
        # Linux hands TCP_NODELAY on to accepted sockets: without it the reply's
        # header and body writes meet the client's delayed ACK (~40 ms per call).
        with contextlib.suppress(OSError):
            self._server.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _record_and_pick(self, request: RecordedRequest) -> Reply:
        return self._platform.handle(self._service, request)


class FakeMainflux:
    """Things, Bootstrap and Users of one fake platform (a context manager)."""

    def __init__(
        self,
        *,
        generation: str = "0.12",
        token_ttl_s: float = 36_000.0,
        encrypt_key_hex: str = bootstrap_cipher.DEFAULT_ENCRYPT_KEY_HEX,
        users: Mapping[str, str] | None = None,
    ) -> None:
        if generation not in DIALECTS:
            raise ValueError(f"generation must be one of {GENERATIONS}, not {generation!r}")
        self._state = PlatformState(DIALECTS[generation], token_ttl_s)
        self._state.users.update(users if users is not None else {ADMIN_EMAIL: ADMIN_PASSWORD})
        self.encrypt_key = bootstrap_cipher.parse_encrypt_key(encrypt_key_hex)
        self._api = MainfluxApi(self._state, self.encrypt_key)
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._calls: Counter[tuple[str, str, str]] = Counter()
        self._servers: dict[str, _ServiceServer] = {}

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> FakeMainflux:
        """Bind and start the three servers on 127.0.0.1 (idempotent).

        Not needed for :meth:`request`, which answers in-process.
        """
        with self._lock:
            if not self._servers:
                self._servers = {s: _ServiceServer(self, s) for s in SERVICES}
            servers = list(self._servers.values())
        for server in servers:
            server.start()
        return self

    def stop(self) -> None:
        """Stop the servers and drop open connections (the state is kept)."""
        with self._lock:
            servers, self._servers = list(self._servers.values()), {}
        for server in servers:
            server.stop()

    def __enter__(self) -> FakeMainflux:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def generation(self) -> str:
        """``"0.12"`` or ``"0.13"``."""
        return self._state.dialect.name

    def url(self, service: str) -> str:
        """Base URL of ``things``, ``bootstrap`` or ``users`` (after :meth:`start`)."""
        with self._lock:
            server = self._servers.get(service)
        if server is None:
            raise RuntimeError(f"no {service!r} server: start() the FakeMainflux first")
        return server.url

    @property
    def things_url(self) -> str:
        """The Things service (``MF_PROVISION_THINGS_LOCATION``)."""
        return self.url("things")

    @property
    def bootstrap_url(self) -> str:
        """The Bootstrap service root (``MF_PROVISION_BS_SVC_URL`` is this plus ``/things``)."""
        return self.url("bootstrap")

    @property
    def users_url(self) -> str:
        """The Users service (``MF_PROVISION_USERS_LOCATION``)."""
        return self.url("users")

    # ------------------------------------------------------------ users, tokens

    def add_user(self, email: str, password: str) -> None:
        """Register a user."""
        with self._api.lock:
            self._state.users[email] = password

    def login(self, email: str = ADMIN_EMAIL) -> str:
        """A login token for a registered user (not counted as a request)."""
        with self._api.lock:
            if email not in self._state.users:
                raise KeyError(f"no user {email!r}; add_user() first")
            return self._state.issue_token(email)

    def api_key(self, email: str = ADMIN_EMAIL) -> str:
        """An API key (type 2, no expiry) of a registered user."""
        with self._api.lock:
            if email not in self._state.users:
                raise KeyError(f"no user {email!r}; add_user() first")
            return self._state.issue_token(email, api_key=True)

    def advance(self, seconds: float) -> None:
        """Move the fake clock forward (login tokens expire by it)."""
        with self._api.lock:
            self._state.clock_offset_s += seconds

    def expire_tokens(self) -> None:
        """Move the clock past the lifetime of every login token issued so far."""
        self.advance(self._state.token_ttl_s + 1.0)

    # ------------------------------------------------------------------ faults

    def fail(self, endpoint: str | None = None, *, service: str | None = None,
             status: int | None = None, drop: Drop | None = None,
             hold: threading.Event | None = None, skip: int = 0, times: int = 1) -> Fault:
        """Add a :class:`Fault` (a 503 unless ``status``, ``drop`` or ``hold`` says otherwise).

        Returns it: its ``hits`` show that it fired.
        """
        if sum(x is not None for x in (status, drop, hold)) > 1:
            raise ValueError("give one of status, drop and hold")
        if status is None and drop is None and hold is None:
            status = 503
        if service is not None and service not in SERVICES:
            raise ValueError(f"service must be one of {SERVICES}, not {service!r}")
        known = {e for _s, e in ENDPOINTS}
        if endpoint is not None and endpoint not in known:
            raise ValueError(f"unknown endpoint {endpoint!r}; one of {sorted(known)}")
        if times < 1 or skip < 0:
            raise ValueError("times must be >= 1 and skip >= 0")
        fault = Fault(service, endpoint, status, drop, hold, skip, times)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        """Forget every fault not yet used up."""
        with self._lock:
            self._faults.clear()

    def _take_fault(self, service: str, endpoint: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.service not in (None, service) or fault.endpoint not in (None, endpoint):
                    continue
                if fault.skip > 0:
                    fault.skip -= 1
                    continue
                fault.hits += 1
                if fault.hits >= fault.times:
                    self._faults.remove(fault)
                return fault
        return None

    # ---------------------------------------------------------------- requests

    def handle(self, service: str, request: RecordedRequest) -> Reply:
        """Answer one request to ``service`` (what the servers call; usable in-process)."""
        route, params, known_path = self._api.route(service, request.method, request.path)
        endpoint = route.endpoint if route is not None else f"{request.method} <unknown>"
        fault = self._take_fault(service, endpoint) if route is not None else None
        if fault is not None and fault.status is not None:
            self._count(service, endpoint, str(fault.status))
            return Reply(status=fault.status, json={"error": "fault injected by the test"},
                         headers={"Content-Type": "application/json"})
        if fault is not None and fault.drop == "before":
            self._count(service, endpoint, "dropped")
            return Reply(close_without_reply=True)
        reply = self._api.handle(route, params, known_path, request)
        if fault is not None and fault.drop == "after":
            self._count(service, endpoint, "dropped")
            return Reply(close_without_reply=True)
        self._count(service, endpoint, str(reply.status))
        if fault is not None and fault.hold is not None:
            fault.hold.wait(_HOLD_MAX_S)
        return reply

    def request(self, service: str, method: str, target: str, *,
                headers: Mapping[str, str] | None = None, body: bytes = b"") -> Reply:
        """:meth:`handle` for a request given as parts (no socket involved)."""
        path, _, query = target.partition("?")
        items = tuple((headers or {}).items())
        return self.handle(service, RecordedRequest(method.upper(), path, Headers(items), body,
                                                    query, items))  # fmt: skip

    def _count(self, service: str, endpoint: str, status: str) -> None:
        with self._lock:
            self._calls[(service, endpoint, status)] += 1

    def calls(self, service: str | None = None, endpoint: str | None = None,
              status: str | None = None) -> int:
        """How many requests matched (None matches anything; ``status`` as text or "dropped")."""
        with self._lock:
            return sum(n for (s, e, st), n in self._calls.items()
                       if service in (None, s) and endpoint in (None, e)
                       and status in (None, st))  # fmt: skip

    def call_counts(self) -> dict[tuple[str, str, str], int]:
        """Requests per (service, endpoint, status) so far."""
        with self._lock:
            return dict(self._calls)

    def reset_calls(self) -> None:
        """Zero the request counters."""
        with self._lock:
            self._calls.clear()

    # ------------------------------------------------------------------- state

    def _copy(self, value: object) -> object:
        return json.loads(json.dumps(value))

    def things(self) -> list[dict[str, object]]:
        """Every thing (all owners): id, owner, name, key, metadata."""
        with self._api.lock:
            rows = [{"id": t.id, "owner": t.owner, "name": t.name, "key": t.key,
                     "metadata": t.metadata} for t in self._state.things.values()]  # fmt: skip
            return self._copy(rows)  # type: ignore[return-value]

    def channels(self) -> list[dict[str, object]]:
        """Every channel (all owners): id, owner, name, metadata."""
        with self._api.lock:
            rows = [{"id": c.id, "owner": c.owner, "name": c.name, "metadata": c.metadata}
                    for c in self._state.channels.values()]  # fmt: skip
            return self._copy(rows)  # type: ignore[return-value]

    def connections(self) -> list[tuple[str, str]]:
        """Every connection as (channel_id, thing_id)."""
        with self._api.lock:
            return list(self._state.connections)

    def configs(self) -> list[dict[str, object]]:
        """Every bootstrap config: the owner's view plus owner and certificates."""
        with self._api.lock:
            rows = []
            for c in self._state.configs.values():
                row = c.view()
                row.update(owner=c.owner, client_cert=c.client_cert, client_key=c.client_key,
                           ca_cert=c.ca_cert)
                rows.append(row)
            return self._copy(rows)  # type: ignore[return-value]

    def counts(self) -> dict[str, int]:
        """Number of users, things, channels, connections and bootstrap configs."""
        with self._api.lock:
            return self._state.counts()
