"""The credential set of :mod:`edge_provision.agent.enroll` (private to that package).

Turns what the platform answered (a ``/mapping`` result and/or a bootstrap config) into
the things, channels and certificates of one generation, and signs CSRs for keys
generated on the gateway.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

from edge_provision.agent.enroll.ports import CertsPort
from edge_provision.agent.store import StoredChannel, StoredThing
from edge_provision.errors import CertificateError

if TYPE_CHECKING:
    from edge_provision.platform import BootstrapConfig, MappingResult, PlatformChannel

__all__ = [
    "CredentialSet",
    "from_bootstrap",
    "from_mapping",
    "issue_certificates",
    "order_channels",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CredentialSet:
    """Things (with keys), channels, content and platform-made certificates of a gateway."""

    things: tuple[StoredThing, ...]
    channels: tuple[StoredChannel, ...]
    gateway_thing_id: str
    content: str = field(repr=False)
    certificates: Mapping[str, tuple[str, str]] = field(default_factory=dict, repr=False)
    ca_pem: Optional[str] = field(default=None, repr=False)


def order_channels(channels: Sequence[PlatformChannel]) -> tuple[StoredChannel, ...]:
    """Control first, then data, export, untyped (platform order within each type)."""
    from edge_provision.layout import control_first  # here: the no-op enroll never orders

    ordered = control_first(channels, lambda c: c.type)
    return tuple(StoredChannel(c.id, c.name, dict(c.metadata)) for c in ordered)


def _pair(cert: str, key: str) -> tuple[str, str] | None:
    return (cert, key) if cert and key else None


def from_bootstrap(config: BootstrapConfig, external_id: str) -> CredentialSet:
    """The credential set from a bootstrap config alone (the lookup path)."""
    things = [StoredThing(config.thing_id, "", config.thing_key, {"external_id": external_id})]
    things += [StoredThing(t.id, t.name, t.key, dict(t.metadata))
               for t in config.extra_things if t.id != config.thing_id]  # fmt: skip
    certs: dict[str, tuple[str, str]] = {}
    pair = _pair(config.client_cert, config.client_key)
    if pair is not None:
        certs[config.thing_id] = pair
    return CredentialSet(
        things=tuple(things), channels=order_channels(config.channels),
        gateway_thing_id=config.thing_id, content=config.content, certificates=certs,
        ca_pem=config.ca_cert or None,
    )  # fmt: skip


def from_mapping(result: MappingResult, config: BootstrapConfig | None,
                 external_id: str) -> CredentialSet:  # fmt: skip
    """The credential set from a ``/mapping`` result, completed by its bootstrap config."""
    ids = [t.id for t in result.things]
    if config is not None and config.thing_id in ids:
        gateway = config.thing_id
    else:
        gateway = next((t.id for t in result.things if "external_id" in t.metadata), ids[0])
    things = [StoredThing(t.id, t.name, t.key, dict(t.metadata)) for t in result.things]
    if config is not None:
        known = set(ids)
        if config.thing_id not in known:  # odd platform: trust the bootstrap config
            things.insert(0, StoredThing(config.thing_id, "", config.thing_key,
                                         {"external_id": external_id}))  # fmt: skip
            gateway = config.thing_id
            known.add(config.thing_id)
        things += [StoredThing(t.id, t.name, t.key, dict(t.metadata))
                   for t in config.extra_things if t.id not in known]  # fmt: skip
    channels = config.channels if config is not None and config.channels else result.channels
    certs: dict[str, tuple[str, str]] = {}
    for thing_id, cert in result.client_certs.items():
        pair = _pair(cert, result.client_keys.get(thing_id, ""))
        if pair is not None and any(t.id == thing_id for t in things):
            certs[thing_id] = pair
    if config is not None and config.thing_id not in certs:
        pair = _pair(config.client_cert, config.client_key)
        if pair is not None:
            certs[config.thing_id] = pair
    ca = result.ca_cert or (config.ca_cert if config is not None else None) or None
    return CredentialSet(
        things=tuple(things), channels=order_channels(channels), gateway_thing_id=gateway,
        content=config.content if config is not None else "", certificates=certs, ca_pem=ca,
    )  # fmt: skip


def issue_certificates(
    certs: CertsPort, things: Sequence[StoredThing], key_type: str, key_bits: int | None
) -> tuple[dict[str, tuple[str, str]], str | None]:
    """Generate a key here for every thing, have its CSR signed; (certs by thing, CA PEM)."""
    from edge_provision.crypto import pki

    issued: dict[str, tuple[str, str]] = {}
    ca_pem: str | None = None
    for thing in things:
        key = pki.generate_key(key_type, key_bits)
        key_pem = pki.key_to_pem(key)
        signed = certs.sign_csr(thing.id, thing.key, pki.make_csr(key, thing.id))
        if not pki.cert_matches_key(signed.cert_pem, key_pem):
            raise CertificateError(
                f"the certificate signed for thing {thing.id} does not match the key sent in "
                "the CSR; the certificate server is misbehaving"
            )
        issued[thing.id] = (signed.cert_pem, key_pem)
        ca_pem = signed.ca_pem or ca_pem
        logger.info("certificate stored thing_id=%s serial=%s", thing.id, signed.serial)
    return issued, ca_pem
