"""What enrollment and renewal need from the platform and the broker, as Protocols.

:mod:`edge_provision.platform` (``ProvisionClient``, ``BootstrapClient``, ``CertsClient``)
and :func:`edge_provision.agent.mqtt.make_verifier` provide them; the composition root
(:mod:`edge_provision.agent.wiring`) builds them from settings. The platform's value
types are named for the type checker only, so importing this module loads no HTTP
library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional, Protocol

if TYPE_CHECKING:
    from edge_provision.agent.store import Generation
    from edge_provision.platform import (
        BootstrapConfig,
        IssuedCertificate,
        MappingResult,
        SignedCertificate,
    )

__all__ = ["BootstrapPort", "CertsPort", "EnrollClients", "ProvisionPort", "Verified",
           "Verifier"]  # fmt: skip


class ProvisionPort(Protocol):
    """``POST /mapping`` (Provision service)."""

    def create_mapping(self, external_id: str, external_key: str,
                       name: str | None = None) -> MappingResult:  # fmt: skip
        """Provision ``external_id``; what the platform created."""
        ...


class BootstrapPort(Protocol):
    """The Bootstrap service's device endpoint."""

    def fetch(self, external_id: str, external_key: str, *,
              secure: bool = False) -> BootstrapConfig | None:  # fmt: skip
        """The bootstrap config of ``external_id``, or None when the platform has none."""
        ...


class CertsPort(Protocol):
    """The certificate service: CSR signing (lab) or server-made keys (upstream Certs)."""

    def supports_csr(self) -> bool:
        """Whether ``POST /certs/csr`` exists."""
        ...

    def sign_csr(self, thing_id: str, thing_key: str, csr_pem: str,
                 ttl_s: int | None = None) -> SignedCertificate:  # fmt: skip
        """Sign a CSR for ``thing_id`` (authenticated by its key)."""
        ...

    def issue(self, thing_id: str, token: str, key_type: str, key_bits: int,
              ttl: str | int) -> IssuedCertificate:  # fmt: skip
        """Have the server make a key and a certificate for ``thing_id``."""
        ...


class Verified(Protocol):
    """What a successful MQTT credential check reports."""

    @property
    def url(self) -> str:
        """The broker URL used."""
        ...

    @property
    def elapsed_s(self) -> float:
        """How long connect + publish took."""
        ...


Verifier = Callable[["Generation"], Optional[Verified]]
"""Checks a generation's credentials (None: skipped, no broker known); raises on refusal."""


@dataclass(frozen=True)
class EnrollClients:
    """The platform clients one run uses, with their base URLs (for messages)."""

    provision: ProvisionPort
    bootstrap: BootstrapPort
    certs: Optional[CertsPort]
    provision_url: str
    bootstrap_url: str
    certs_url: Optional[str] = None
