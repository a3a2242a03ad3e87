"""The mainflux lab backend: ``/mapping`` provisions into a real Mainflux (0.12 or 0.13+).

The lab keeps nothing itself: every mapping lives on the platform, so a new
backend object (a restarted lab, a second lab in front of the same platform)
sees exactly what the last one made. The calls of one mapping with the built-in
layout (one gateway thing, a control and a data channel, auto-whitelist):

====  =======================================  ==========================================
#     call                                     why
====  =======================================  ==========================================
1     ``GET /things?metadata={mapping: id}``   idempotency lookup (finds an earlier run)
2     ``POST /things/bulk``                    every thing of the layout, in one call
3     ``POST /channels/bulk``                  every channel, in one call
4     ``POST /things/configs``                 the gateway's bootstrap config; its unique
                                               external_id decides concurrent runs
5     ``PUT /things/state/{gateway}``          whitelist: Bootstrap connects the gateway
====  =======================================  ==========================================

A repeated mapping is calls 1 and ``GET /things/configs/{gateway}`` (channels and
the external key to compare): 2 calls. Layouts with more things add one
``POST /connect`` per distinct channel set of the other things; certificates
issued at provisioning go into the config of call 4 (no extra call) and are read
back through the device endpoint on a repeat.

Idempotent: the same external_id and key return the same things and channels
(``created=False``); another key is ``AlreadyProvisioned``. Concurrency-safe: in
one process runs for one external_id are serialised; across processes Bootstrap's
unique external_id lets one run win, and the loser deletes what it made and
returns the winner's result. No leftovers: when a step fails, what the run made is
deleted before the error is raised (entities whose creation had no clear answer
are found again by the run's marker); what cannot be deleted is logged with its
ids and counted in ``edge_provision_lab_upstream_leftovers_total``. Every request
is counted in ``edge_provision_lab_upstream_requests_total{service,endpoint,status}``.

The platform's refusals are the lab operator's problem, not the client's: every
public method turns the platform refusing the lab's own credentials (401/403) and
answers it cannot read into :class:`ServiceUnavailable` (the lab answers 503 with
``Retry-After``) whose message names the setting to fix; the details go to the log.

Certificates are signed by the lab's own CA (the caller's ``issue_certs`` at
``/mapping``; ``POST /certs/csr`` in the service) and their records -- serial,
thing, validity, revoked -- are kept in a small SQLite file next to that CA
(``_certs``): Mainflux has nowhere to keep them. What it marks on the platform is
described in ``_marker``.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar, cast

from edge_provision.errors import (
    AlreadyProvisioned,
    CertificateError,
    ConfigError,
    EdgeProvisionError,
    Problem,
    ProtocolError,
    Reason,
    Rejected,
    ServiceUnavailable,
    StoreError,
    Unauthorized,
)
from edge_provision.http import HttpClient
from edge_provision.lab.backends.mainflux import _marker as mark
from edge_provision.lab.backends.mainflux._certs import CertStore
from edge_provision.lab.backends.mainflux._target import ENV_NAMES, MainfluxTarget
from edge_provision.lab.backends.mainflux._undo import Undo
from edge_provision.lab.models import (
    BootstrapRecord,
    BrokerSnapshot,
    CertIssuer,
    CertRecord,
    ChannelRecord,
    DeletedThing,
    MappingRecord,
    Page,
    ThingRecord,
)
from edge_provision.layout import Plan
from edge_provision.metrics import CounterSet, Metric
from edge_provision.platform.bootstrap import BootstrapClient, BootstrapConfig
from edge_provision.platform.bootstrap_configs import (
    BootstrapConfigsClient,
    ConfigState,
    ConfigView,
    NewConfig,
    bootstrap_root,
)
from edge_provision.platform.models import PlatformChannel, PlatformThing
from edge_provision.platform.things import NewChannel, NewThing, ThingsClient
from edge_provision.platform.users import ApiKey, LoginSession, UsersClient

if TYPE_CHECKING:
    from edge_provision.crypto.pki import IssuedCert

__all__ = [
    "ENV_NAMES", "LEFTOVERS", "UPSTREAM_REQUESTS", "CertStore", "MainfluxBackend",
    "MainfluxTarget",
]

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
_R = TypeVar("_R")

UPSTREAM_REQUESTS = "upstream_requests_total"
"""CounterSet name of the per-call counter (labels service, endpoint, status)."""
LEFTOVERS = "upstream_leftovers_total"
"""CounterSet name of entities a failed run could not delete (label kind)."""

_DEVICE_ENDPOINT = "GET /things/bootstrap/{external_id}"
_MAX_ENTITIES = 100  # lookups read one page
_REFUSED_RETRY_S = 30.0  # a human has to fix a setting: gateways need not knock every second
_UNREADABLE_RETRY_S = 30.0


@dataclass
class _Held:
    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0


class _KeyedLocks:
    """One lock per key, created on demand and dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, _Held] = {}

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._lock:
            entry = self._held.setdefault(key, _Held())
            entry.users += 1
        try:
            with entry.lock:
                yield
        finally:
            with self._lock:
                entry.users -= 1
                if entry.users == 0:
                    del self._held[key]


class _LostRace(Exception):
    """Bootstrap refused our config: another run has this external_id."""


def _platform_call(method: F) -> F:
    """Run ``method`` inside :meth:`MainfluxBackend._platform_errors`."""

    @functools.wraps(method)
    def guarded(self: MainfluxBackend, *args: object, **kwargs: object) -> object:
        with self._platform_errors():
            return method(self, *args, **kwargs)

    return cast(F, guarded)


async def _in_worker(fn: Callable[..., _R], *args: object) -> _R:
    """``fn(*args)`` in a worker thread of the running loop's default executor."""
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


class MainfluxBackend:
    """Provisioning into a Mainflux platform; safe to share between threads."""

    def __init__(self, target: MainfluxTarget, *, counters: CounterSet | None = None,
                 owner: str = "admin", certs_path: Path | None = None) -> None:
        """``certs_path``: the certificate records' file (None: kept in memory, for tests)."""
        target.check()
        self.target = target
        self.counters = counters if counters is not None else CounterSet()
        """Where ``upstream_requests_total`` and ``upstream_leftovers_total`` are counted."""
        self._owner = owner
        self.certs = CertStore(certs_path)
        """The records of the certificates the lab CA issued."""
        self._locks = _KeyedLocks()
        self._http: list[HttpClient] = []
        self._things_http = things_http = self._client(target.things_url)
        self._bootstrap_http = bootstrap_http = self._client(bootstrap_root(target.bootstrap_url))
        tokens: ApiKey | LoginSession
        if target.api_key:
            tokens = ApiKey(target.api_key)
        else:
            assert target.users_url and target.user and target.password  # target.check()
            users = UsersClient(self._client(target.users_url), observer=self._observe)
            tokens = LoginSession(users, target.user, target.password)
        scheme = target.auth_scheme
        self._things = ThingsClient(things_http, tokens, auth_scheme=scheme,
                                    observer=self._observe)
        self._configs = BootstrapConfigsClient(bootstrap_http, tokens, auth_scheme=scheme,
                                               observer=self._observe)
        self._devices = BootstrapClient(bootstrap_http, auth_scheme=scheme)
        logger.info("mainflux backend things=%s bootstrap=%s auth=%s", things_http.base_url,
                    bootstrap_http.base_url, "login" if target.uses_login else "api-key")

    def _client(self, url: str) -> HttpClient:
        t = self.target
        client = HttpClient(url, connect_timeout_s=t.connect_timeout_s,
                            read_timeout_s=t.read_timeout_s, ca_bundle=t.ca_bundle,
                            client_cert=t.client_cert, client_key=t.client_key,
                            insecure=t.insecure)
        self._http.append(client)
        return client

    def close(self) -> None:
        """Release the HTTP connections and the certificate store; safe to call twice."""
        for client in self._http:
            client.close()
        self.certs.close()

    def __enter__(self) -> MainfluxBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def credentials_setting(self) -> str:
        """The setting(s) holding the lab's own credentials on the platform."""
        if self.target.uses_login:
            return f"{ENV_NAMES['user']}/{ENV_NAMES['password']}"
        return ENV_NAMES["api_key"]

    @contextmanager
    def _platform_errors(self) -> Iterator[None]:
        """The platform's trouble as the lab's clients should see it (details to the log).

        A refusal of the lab's own credentials and an unreadable answer are the lab
        operator's to fix; a platform that is down is temporary. All three become
        :class:`ServiceUnavailable` (the lab answers 503 with ``Retry-After``).
        """
        try:
            yield
        except Unauthorized as exc:
            setting = self.credentials_setting
            logger.error("the platform refused the lab's credentials setting=%s error=%s",
                         setting, exc)
            raise ServiceUnavailable(
                f"the Mainflux platform refused the lab server's own credentials ({setting}); "
                "the lab operator must fix that setting (or the platform CA bundle, if the lab "
                "server log says TLS). The request itself was fine: retry later",
                reason=Reason.REFUSED, retry_after_s=_REFUSED_RETRY_S) from exc
        except ProtocolError as exc:
            logger.error("unreadable answer from the platform error=%s", exc)
            raise ServiceUnavailable(
                "the Mainflux platform gave an answer the lab server cannot read; the lab "
                f"operator should check that {ENV_NAMES['things_url']} and "
                f"{ENV_NAMES['bootstrap_url']} point at the Things and Bootstrap services "
                "(details in the lab server log)",
                reason=Reason.PROTOCOL, retry_after_s=_UNREADABLE_RETRY_S) from exc
        except ServiceUnavailable as exc:
            logger.warning("platform unavailable error=%s", exc)
            raise ServiceUnavailable(
                "the Mainflux platform is unavailable right now; try again later (details in "
                "the lab server log)", retry_after_s=exc.retry_after_s) from exc

    # ------------------------------------------------------------------ metrics

    def _observe(self, service: str, endpoint: str, status: str) -> None:
        self.counters.inc(UPSTREAM_REQUESTS, service=service, endpoint=endpoint, status=status)

    def _leftover(self, kind: str, count: int) -> None:
        self.counters.inc(LEFTOVERS, float(count), kind=kind)

    def metrics(self) -> list[Metric]:
        """The two metric families of this backend, for ``/metrics``."""
        return [
            Metric("edge_provision_lab_upstream_requests_total",
                   "HTTP requests the lab made to the platform, by service, endpoint and "
                   "status ('error': no answer).", "counter",
                   self.counters.samples(UPSTREAM_REQUESTS)),
            Metric("edge_provision_lab_upstream_leftovers_total",
                   "Entities a failed mapping created and could not delete (ids in the log).",
                   "counter", self.counters.samples(LEFTOVERS) or [({}, 0.0)]),
        ]  # fmt: skip

    def _share_scheme(self) -> None:
        """Once Things settled the header form (AUTO), Bootstrap of the same platform uses it.

        Saves Bootstrap its own probe (one refused call per process on 0.12).
        """
        known = self._things_http.scheme_for("user")
        if known is not None and self._bootstrap_http.scheme_for("user") is None:
            self._bootstrap_http.remember_scheme("user", known)
            self._bootstrap_http.remember_scheme("thing", known)

    # ---------------------------------------------------------------- provision

    @staticmethod
    def check_plan(plan: Plan) -> None:
        """ConfigError if this backend cannot provision ``plan`` (checked before any call)."""
        if plan.bootstrap is None:
            raise ConfigError(Problem(
                "the mainflux backend finds a mapping again through its bootstrap config: set "
                "[bootstrap] provision = true and give one [[things]] entry metadata.external_id",
                path="bootstrap.provision",
            ))
        if len(plan.things) > _MAX_ENTITIES or len(plan.channels) > _MAX_ENTITIES:
            raise ConfigError(Problem(
                f"the mainflux backend supports at most {_MAX_ENTITIES} things and channels "
                f"per mapping; the layout has {len(plan.things)} and {len(plan.channels)}",
                path="things",
            ))
        for thing in plan.things:
            mark.check_reserved("things", thing.name, thing.metadata)
        for channel in plan.channels:
            mark.check_reserved("channels", channel.name, channel.metadata)

    async def provision(self, plan: Plan, *, owner: str,
                        issue_certs: CertIssuer | None = None) -> MappingRecord:
        """:meth:`provision_sync` in a worker thread (the loop's default executor).

        Every mapping is a few blocking HTTP calls; the event loop is not held up.
        """
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, functools.partial(
            self.provision_sync, plan, owner=owner, issue_certs=issue_certs))

    def provision_sync(self, plan: Plan, *, owner: str,
                       issue_certs: CertIssuer | None = None) -> MappingRecord:
        """Create everything in ``plan`` on the platform; idempotent per external_id + key.

        Raises ``AlreadyProvisioned`` for another key (or a bootstrap config this
        backend did not make), ``ConfigError`` for a plan it cannot make, and the
        platform's errors (``ServiceUnavailable``, ``Rejected``) after deleting what
        this run created.
        """
        self.check_plan(plan)
        with self._platform_errors(), self._locks.hold(plan.external_id):
            found = self._find(plan, owner)
            if found is not None:
                return found
            return self._create(plan, owner, issue_certs)

    def _find(self, plan: Plan, owner: str) -> MappingRecord | None:
        located = self._locate(plan.external_id)
        if located is None:
            return None
        mset, view = located
        if not _same(view.external_key, plan.external_key):
            raise AlreadyProvisioned(
                f"external_id {plan.external_id} is already provisioned with a different "
                "external_key; use the original key, or delete its bootstrap config "
                f"(DELETE /things/configs/{view.thing_id} on Bootstrap) and its things")
        return self._record(plan, mset, view, owner)

    def _locate(self, external_id: str) -> tuple[mark.MappingSet, ConfigView] | None:
        """The marked things of ``external_id`` whose gateway holds its bootstrap config."""
        page = self._things.things(metadata={mark.MAPPING: external_id}, limit=_MAX_ENTITIES)
        self._share_scheme()
        sets = [s for s in mark.group(page.items, external_id) if s.gateway is not None]
        if not sets:
            return None
        if len(sets) == 1:
            gateway_id = _gateway(sets[0]).id
        else:  # earlier runs left sets without a config (crashed), or one is in flight
            listing = self._configs.configs(external_id=external_id, limit=1)
            if not listing.items:
                return None
            gateway_id = listing.items[0].thing_id
        mset = next((s for s in sets if _gateway(s).id == gateway_id), None)
        if mset is None:
            return None
        view = self._configs.view(gateway_id)
        if view is None or view.external_id != external_id:
            return None
        return mset, view

    def _record(self, plan: Plan, mset: mark.MappingSet, view: ConfigView,
                owner: str) -> MappingRecord:
        """The MappingRecord of a mapping found on the platform (``created=False``)."""
        ours = [c for c in view.channels if c.metadata.get(mark.REQUEST) == mset.request]
        channels = sorted(ours, key=lambda c: mark.index_of(c.metadata) or 0)
        if (len(mset.things), len(channels)) != (mset.expected_things, mset.expected_channels):
            raise Rejected(
                f"the mapping of external_id {plan.external_id} on the platform is incomplete "
                f"({len(mset.things)} of {mset.expected_things} things, {len(channels)} of "
                f"{mset.expected_channels} channels in its bootstrap config); delete its "
                f"bootstrap config (DELETE /things/configs/{view.thing_id}) and things with "
                f"metadata {mark.REQUEST}={mset.request}, then map again")
        connected = {c.thing_index for c in plan.connections}
        certs, keys, ca = self._stored_certs(plan, mset)
        return MappingRecord(
            external_id=plan.external_id,
            things=tuple(mark.thing_record(t, owner) for t in mset.things),
            channels=tuple(mark.channel_record(c, owner) for c in channels),
            whitelisted=tuple(t.id for t in mset.things
                              if mark.index_of(t.metadata) in connected),
            client_certs=certs, client_keys=keys, ca_cert=ca, created=False,
        )

    def _stored_certs(self, plan: Plan, mset: mark.MappingSet
                      ) -> tuple[dict[str, str], dict[str, str], str | None]:
        """The gateway's certificate from its config (the device view), if it has one."""
        if not mset.has_certs:
            return {}, {}, None
        device = self._device_config(plan.external_id, plan.external_key)
        gateway = _gateway(mset)
        if device is None or not device.client_cert:
            return {}, {}, None
        keys = {gateway.id: device.client_key} if device.client_key else {}
        return {gateway.id: device.client_cert}, keys, device.ca_cert or None

    def _device_config(self, external_id: str, external_key: str) -> BootstrapConfig | None:
        try:
            config = self._devices.fetch(external_id, external_key)
        except Unauthorized:
            self._observe("bootstrap", _DEVICE_ENDPOINT, "403")
            return None
        except EdgeProvisionError:
            self._observe("bootstrap", _DEVICE_ENDPOINT, "error")
            raise
        self._observe("bootstrap", _DEVICE_ENDPOINT, "200" if config is not None else "404")
        return config

    def _create(self, plan: Plan, owner: str, issue_certs: CertIssuer | None) -> MappingRecord:
        """Make the mapping; on any failure delete what this run made, then re-raise."""
        assert plan.bootstrap is not None  # check_plan()
        boot = plan.bootstrap
        request = uuid.uuid4().hex
        gets_cert = issue_certs is not None and any(
            c.thing_index == boot.thing_index for c in plan.certificates)
        undo = Undo(self._things, self._configs, external_id=plan.external_id, request=request,
                    on_leftover=self._leftover)
        try:
            undo.things_unsure = True
            things = self._things.create_things(
                [NewThing(t.name, self._tags(plan, request, t.index, t.metadata,
                                             gateway=t.index == boot.thing_index,
                                             certs=gets_cert)) for t in plan.things])
            undo.thing_ids, undo.things_unsure = [t.id for t in things], False
            channels: tuple[PlatformChannel, ...] = ()
            if plan.channels:
                undo.channels_unsure = True
                channels = self._things.create_channels(
                    [NewChannel(c.name, self._tags(plan, request, c.index, c.metadata))
                     for c in plan.channels])  # fmt: skip
                undo.channel_ids, undo.channels_unsure = [c.id for c in channels], False
            thing_records = tuple(mark.thing_record(t, owner) for t in things)
            issued = _issue(plan, thing_records, issue_certs)
            gateway = things[boot.thing_index]
            cert = issued.get(gateway.id)
            undo.config_id = gateway.id
            try:
                self._configs.create(NewConfig(
                    external_id=plan.external_id, external_key=plan.external_key,
                    thing_id=gateway.id, channel_ids=tuple(channels[i].id
                                                           for i in boot.channel_indexes),
                    name=boot.name, content=boot.content,
                    client_cert=cert[0].cert_pem if cert else "",
                    client_key=cert[1] if cert else "", ca_cert=cert[0].ca_pem if cert else "",
                ))
            except AlreadyProvisioned:
                undo.config_id = None
                raise _LostRace from None
            except (Rejected, Unauthorized):
                undo.config_id = None  # refused outright: no config was made
                raise
            self._connect(plan, things, channels)
        except _LostRace:
            undo.run()
            found = self._find(plan, owner)
            if found is not None:
                logger.info("another run provisioned external_id=%s first; answering with its "
                            "result", plan.external_id)
                return found
            raise AlreadyProvisioned(
                f"external_id {plan.external_id} already has a bootstrap config on the platform "
                "that this lab did not make (or whose things were deleted); delete it "
                "(DELETE /things/configs/<thing id> on Bootstrap) or use another external_id"
            ) from None
        except BaseException:
            undo.run()
            raise
        connected = {c.thing_index for c in plan.connections}
        logger.info("mapping created external_id=%s things=%s channels=%s", plan.external_id,
                    len(things), len(channels))
        self._record_issued(plan.external_id, issued)
        return MappingRecord(
            external_id=plan.external_id,
            things=thing_records,
            channels=tuple(mark.channel_record(c, owner) for c in channels),
            whitelisted=tuple(t.id for i, t in enumerate(things) if i in connected),
            client_certs={t: c.cert_pem for t, (c, _k) in issued.items()},
            client_keys={t: k for t, (_c, k) in issued.items()},
            ca_cert=next((issued[t.id][0].ca_pem for t in reversed(thing_records)
                          if t.id in issued), None),  # as upstream: the last one's CA
            created=True,
        )

    def _record_issued(self, external_id: str,
                       issued: dict[str, tuple[IssuedCert, str]]) -> None:
        """Keep the records of the certificates made for a new mapping.

        The mapping is on the platform by now: a record that cannot be written is
        logged (with its serial) rather than failing the request.
        """
        for thing_id, (cert, _key) in issued.items():
            try:
                self.certs.record(thing_id, cert, server_made=True)
            except StoreError as exc:
                logger.error("certificate not recorded external_id=%s thing_id=%s serial=%s "
                             "error=%s", external_id, thing_id, cert.serial, exc)

    @staticmethod
    def _tags(plan: Plan, request: str, index: int, metadata: dict[str, object], *,
              gateway: bool = False, certs: bool = False) -> dict[str, object]:
        tagged = {**metadata, mark.MAPPING: plan.external_id, mark.REQUEST: request,
                  mark.INDEX: index}
        if gateway:
            tagged.update({mark.THINGS: len(plan.things), mark.CHANNELS: len(plan.channels),
                           mark.CERTS: certs})
        return tagged

    def _connect(self, plan: Plan, things: Sequence[PlatformThing],
                 channels: Sequence[PlatformChannel]) -> None:
        """Whitelist the gateway through Bootstrap; connect the other things with /connect."""
        assert plan.bootstrap is not None
        boot = plan.bootstrap
        wanted: dict[int, set[int]] = {}
        for pair in plan.connections:
            wanted.setdefault(pair.thing_index, set()).add(pair.channel_index)
        gateway_pairs = wanted.get(boot.thing_index, set())
        if gateway_pairs and gateway_pairs == set(boot.channel_indexes):
            self._configs.set_state(things[boot.thing_index].id, ConfigState.ACTIVE)
            del wanted[boot.thing_index]
        by_channels: dict[frozenset[int], list[int]] = {}
        for thing_index, channel_indexes in sorted(wanted.items()):
            by_channels.setdefault(frozenset(channel_indexes), []).append(thing_index)
        for channel_set, thing_indexes in by_channels.items():
            self._things.connect([channels[i].id for i in sorted(channel_set)],
                                 [things[i].id for i in thing_indexes])

    # ---------------------------------------------------------------- device side

    async def bootstrap(self, external_id: str, external_key: str) -> BootstrapRecord | None:
        """:meth:`bootstrap_sync` in a worker thread (as :meth:`provision`)."""
        return await _in_worker(self.bootstrap_sync, external_id, external_key)

    async def authenticate_thing(self, thing_id: str, thing_key: str) -> ThingRecord | None:
        """:meth:`authenticate_thing_sync` in a worker thread (as :meth:`provision`)."""
        return await _in_worker(self.authenticate_thing_sync, thing_id, thing_key)

    @_platform_call
    def bootstrap_sync(self, external_id: str, external_key: str) -> BootstrapRecord | None:
        """The bootstrap config of a mapping this lab made; None if unknown or the key is wrong."""
        located = self._locate(external_id)
        if located is None:
            return None
        mset, view = located
        if not _same(view.external_key, external_key):
            return None
        gateway = _gateway(mset)
        cert = key = ca = ""
        if mset.has_certs:
            device = self._device_config(external_id, external_key)
            if device is not None:
                cert, key, ca = device.client_cert, device.client_key, device.ca_cert
        return BootstrapRecord(
            external_id=external_id, thing_id=gateway.id, thing_key=gateway.key,
            name=view.name,
            channels=tuple(mark.channel_record(c, self._owner) for c in view.channels),
            content=view.content, client_cert=cert, client_key=key, ca_cert=ca,
            state=view.state,
            extra_things=tuple(mark.thing_record(t, self._owner) for t in mset.things
                               if t.id != gateway.id),
        )

    @_platform_call
    def authenticate_thing_sync(self, thing_id: str, thing_key: str) -> ThingRecord | None:
        """The thing if ``thing_key`` is its key, else None."""
        thing = self._things.thing(thing_id)
        if thing is None or not _same(thing.key, thing_key):
            return None
        return mark.thing_record(thing, self._owner)

    # ------------------------------------------------------------- operator view

    @_platform_call
    def list_things(self, offset: int = 0, limit: int = 100) -> Page[ThingRecord]:
        """Things of the lab's platform user, in the platform's order."""
        page = self._things.things(offset=offset, limit=limit)
        return Page(page.total, page.offset, page.limit,
                    tuple(mark.thing_record(t, self._owner) for t in page.items))

    @_platform_call
    def list_channels(self, offset: int = 0, limit: int = 100) -> Page[ChannelRecord]:
        """Channels of the lab's platform user."""
        page = self._things.channels(offset=offset, limit=limit)
        return Page(page.total, page.offset, page.limit,
                    tuple(mark.channel_record(c, self._owner) for c in page.items))

    @_platform_call
    def list_bootstrap_configs(self, offset: int = 0,
                               limit: int = 100) -> Page[BootstrapRecord]:
        """Bootstrap configs of the lab's user; Bootstrap's list carries no channels."""
        page = self._configs.configs(offset=offset, limit=limit)
        items = tuple(
            BootstrapRecord(external_id=v.external_id, thing_id=v.thing_id,
                            thing_key=v.thing_key, name=v.name, channels=(), content=v.content,
                            client_cert="", client_key="", ca_cert="", state=v.state,
                            extra_things=())
            for v in page.items
        )  # fmt: skip
        return Page(page.total, page.offset, page.limit, items)

    @_platform_call
    def connections(self, thing_id: str) -> tuple[str, ...]:
        """Ids of the channels ``thing_id`` is connected to (the first 100)."""
        return tuple(c.id for c in self._things.channels_of(thing_id).items)

    @_platform_call
    def delete_thing(self, thing_id: str) -> DeletedThing | None:
        """Remove a thing on the platform; revoke the certificates the lab CA gave it.

        Its bootstrap config first (when it is a gateway), then the thing (Things drops its
        connections); channels stay, as in the embedded backend. None if the platform has
        no such thing for the lab's user.
        """
        with self._locks.hold(f"thing:{thing_id}"):
            if self._things.thing(thing_id) is None:
                return None
            view = self._configs.view(thing_id)
            if view is not None:
                self._configs.delete(thing_id)
            self._things.delete_thing(thing_id)
            revoked = self.certs.revoke(thing_id)
        logger.info("thing deleted thing_id=%s revoked=%d bootstrap_removed=%s", thing_id,
                    len(revoked), view is not None)  # fmt: skip
        return DeletedThing(thing_id, revoked, view.external_id if view is not None else None)

    def broker_snapshot(self) -> BrokerSnapshot:
        """Not offered: with a real Mainflux its own MQTT adapter is the broker."""
        raise ConfigError(
            "the lab broker (--mqtt) runs only with the embedded backend; with "
            "--backend mainflux use the platform's own MQTT adapter")

    def counts(self) -> dict[str, int]:
        """Things, channels and bootstrap configs the lab's user sees (3 calls); certificates.

        A platform that cannot be counted now leaves its three numbers out (logged):
        ``/metrics`` must keep answering exactly then, with the upstream counters.
        """
        found = {"certificates": self.certs.count()}
        try:
            found.update(things=self._things.things(limit=1).total,
                         channels=self._things.channels(limit=1).total,
                         bootstrap_configs=self._configs.configs(limit=1).total)
        except EdgeProvisionError as exc:
            logger.warning("platform counts unavailable error=%s", exc)
            return {"certificates": found["certificates"]}
        return found

    # ------------------------------------------------------------- certificates

    async def record_certificate(self, thing_id: str, cert: IssuedCert) -> tuple[str, ...]:
        """:meth:`record_certificate_sync` in a worker thread (as :meth:`provision`)."""
        return await _in_worker(self.record_certificate_sync, thing_id, cert)

    def record_certificate_sync(self, thing_id: str, cert: IssuedCert) -> tuple[str, ...]:
        """Remember a certificate the lab CA signed from ``thing_id``'s CSR; revoke the
        server-made ones (X.509 at ``/mapping``); return the serials revoked."""
        self.certs.record(thing_id, cert)
        revoked = self.certs.revoke(thing_id, server_made_only=True)
        logger.info("certificate recorded thing_id=%s serial=%s server_made_revoked=%d",
                    thing_id, cert.serial, len(revoked))  # fmt: skip
        return revoked

    def revoke_certificates(self, thing_id: str) -> tuple[str, ...]:
        """Revoke every unrevoked certificate of ``thing_id``; return their serials."""
        return self.certs.revoke(thing_id)

    def certificate(self, serial: str) -> CertRecord | None:
        """The certificate with ``serial`` (hex, any case), or None."""
        return self.certs.get(serial)

    def list_certificates(self, offset: int = 0, limit: int = 100) -> Page[CertRecord]:
        """Certificates the lab CA issued, in recording order."""
        return self.certs.page(offset, limit)


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def _gateway(mset: mark.MappingSet) -> PlatformThing:
    assert mset.gateway is not None  # only sets with a gateway get here
    return mset.gateway


def _issue(plan: Plan, things: tuple[ThingRecord, ...], issue_certs: CertIssuer | None
           ) -> dict[str, tuple[IssuedCert, str]]:
    """Certificates for the planned things (thing id -> certificate, private key PEM)."""
    if issue_certs is None or not plan.certificates:
        return {}
    issued = issue_certs(things, plan.certificates)
    unknown = set(issued) - {t.id for t in things}
    if unknown:
        raise CertificateError("the certificate issuer returned certificates for things not in "
                               f"this mapping: {sorted(unknown)}")
    return issued
