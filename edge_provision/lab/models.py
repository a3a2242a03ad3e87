"""Records the lab backends return, and the :class:`Backend` port the lab service uses.

Every record is a frozen value: the lab service renders it to the Mainflux wire
shape (``/mapping`` result, Bootstrap device reply); backends never build HTTP
bodies themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Callable, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    from edge_provision.crypto.pki import IssuedCert
    from edge_provision.layout import Plan, PlannedCertificate
    from edge_provision.metrics import Metric

__all__ = [
    "Backend",
    "BootstrapRecord",
    "BrokerAccount",
    "BrokerSnapshot",
    "CertIssuer",
    "CertRecord",
    "ChannelRecord",
    "DeletedThing",
    "MappingRecord",
    "Page",
    "ThingRecord",
]

T = TypeVar("T")


@dataclass(frozen=True)
class ThingRecord:
    """A thing on the platform: id, name, key (its MQTT password) and metadata."""

    id: str
    name: str
    key: str
    metadata: dict[str, object]
    owner: str


@dataclass(frozen=True)
class ChannelRecord:
    """A channel on the platform."""

    id: str
    name: str
    metadata: dict[str, object]
    owner: str


@dataclass(frozen=True)
class CertRecord:
    """A client certificate issued to a thing (times are timezone-aware UTC)."""

    serial: str
    thing_id: str
    not_before: datetime
    not_after: datetime
    revoked: bool
    cert_pem: str


@dataclass(frozen=True)
class BootstrapRecord:
    """One bootstrap config, as the device endpoint serves it.

    ``channels`` are in stored order (control first); ``extra_things`` are the
    other things of the same mapping, with their keys (a lab extension).
    Empty strings mean "not set" for ``content`` and the three PEM fields.
    """

    external_id: str
    thing_id: str
    thing_key: str
    name: str
    channels: tuple[ChannelRecord, ...]
    content: str
    client_cert: str
    client_key: str
    ca_cert: str
    state: int
    extra_things: tuple[ThingRecord, ...]


@dataclass(frozen=True)
class MappingRecord:
    """The result of one ``/mapping`` run: everything created for one external_id.

    ``whitelisted`` holds the ids of the things that were connected to their
    channels; ``client_certs``/``client_keys`` map thing id to PEM. ``created``
    is False when an earlier identical request had already created it all.
    """

    external_id: str
    things: tuple[ThingRecord, ...]
    channels: tuple[ChannelRecord, ...]
    whitelisted: tuple[str, ...]
    client_certs: dict[str, str]
    client_keys: dict[str, str]
    ca_cert: str | None
    created: bool


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing: ``items`` from ``offset``, at most ``limit``, of ``total``."""

    total: int
    offset: int
    limit: int
    items: tuple[T, ...]


@dataclass(frozen=True)
class BrokerAccount:
    """What the lab broker needs of one thing: MQTT user (thing id), password, channels."""

    thing_id: str
    thing_key: str
    channels: tuple[str, ...]


@dataclass(frozen=True)
class BrokerSnapshot:
    """Every thing's broker account and every revoked certificate serial, read at once."""

    accounts: tuple[BrokerAccount, ...]
    revoked: tuple[str, ...]


@dataclass(frozen=True)
class DeletedThing:
    """What ``DELETE /things/{id}`` removed: the thing, and with it these.

    ``revoked``: serials of its certificates (now on the CRL); ``external_id``:
    the bootstrap config removed with it (the thing was a gateway), else None.
    """

    thing_id: str
    revoked: tuple[str, ...]
    external_id: str | None


# thing_id -> (certificate, private key PEM). The things are passed in plan order
# (things[i] is the thing of plan index i); the planned certificates say which
# thing each one is for (``thing_index``) and with what key type, size and TTL.
CertIssuer = Callable[
    [Sequence[ThingRecord], Sequence["PlannedCertificate"]],
    dict[str, tuple["IssuedCert", str]],
]


class Backend(Protocol):
    """What the lab service needs from a platform (embedded SQLite or real Mainflux).

    What every gateway does at power-on -- :meth:`provision`, :meth:`bootstrap`,
    :meth:`authenticate_thing` and :meth:`record_certificate` -- are coroutines,
    awaited on the server's event loop: a backend that does its I/O asynchronously
    (or a quick local read) does it there, one that blocks (an HTTP client with
    threads) runs that part with ``loop.run_in_executor(None, ...)``. The service
    cannot tell which. (A hop to a worker thread per call cost more CPU than the call
    itself with a fleet of gateways at the door.) Every other method blocks; the HTTP
    layer calls them from worker threads.
    """

    async def provision(
        self, plan: Plan, *, owner: str, issue_certs: CertIssuer | None = None
    ) -> MappingRecord:
        """Create everything in ``plan`` atomically; idempotent per external_id + key.

        Returns once the mapping is durable. Raises ``AlreadyProvisioned`` when the
        external_id exists with another key. ``issue_certs`` (called at most once,
        never on the event loop) makes the certificates the plan asks for.
        """
        ...

    async def bootstrap(self, external_id: str, external_key: str) -> BootstrapRecord | None:
        """The bootstrap config of ``external_id``; None if unknown or the key is wrong."""
        ...

    async def authenticate_thing(self, thing_id: str, thing_key: str) -> ThingRecord | None:
        """The thing if ``thing_key`` is its key, else None."""
        ...

    async def record_certificate(self, thing_id: str, cert: IssuedCert) -> tuple[str, ...]:
        """Remember a certificate signed from ``thing_id``'s own CSR.

        In the same transaction, every unrevoked certificate the server made for
        that thing (with a server-generated key, by ``/mapping``) is revoked: the
        gateway has a key of its own now. Returns the serials revoked that way.
        """
        ...

    def revoke_certificates(self, thing_id: str) -> tuple[str, ...]:
        """Revoke every unrevoked certificate of ``thing_id``; return their serials."""
        ...

    def certificate(self, serial: str) -> CertRecord | None:
        """The certificate with ``serial`` (lower-case hex), or None."""
        ...

    def list_things(self, offset: int = 0, limit: int = 100) -> Page[ThingRecord]:
        """Things in creation order."""
        ...

    def list_channels(self, offset: int = 0, limit: int = 100) -> Page[ChannelRecord]:
        """Channels in creation order."""
        ...

    def list_bootstrap_configs(
        self, offset: int = 0, limit: int = 100
    ) -> Page[BootstrapRecord]:
        """Bootstrap configs in creation order."""
        ...

    def list_certificates(self, offset: int = 0, limit: int = 100) -> Page[CertRecord]:
        """Issued certificates in recording order."""
        ...

    def connections(self, thing_id: str) -> tuple[str, ...]:
        """Ids of the channels ``thing_id`` is connected to."""
        ...

    def delete_thing(self, thing_id: str) -> DeletedThing | None:
        """Remove a thing: its connections, its bootstrap config, its certificates (revoked).

        None if there is no such thing.
        """
        ...

    def broker_snapshot(self) -> BrokerSnapshot:
        """Every thing with its key and channels, and every revoked serial (one read)."""
        ...

    def counts(self) -> dict[str, int]:
        """Number of things, channels, connections, bootstrap_configs, certificates.

        Scraped by ``/metrics`` (unauthenticated): keep it cheap, never a count per call.
        """
        ...

    def metrics(self) -> list[Metric]:
        """The backend's own metric families for ``/metrics`` (may be empty)."""
        ...

    def close(self) -> None:
        """Release every resource; safe to call twice."""
        ...
