"""Typed clients for the platform side: Provision, Bootstrap (device endpoints), Certs.

All of them speak through one :class:`edge_provision.http.HttpClient` per service
and raise only the classes of :mod:`edge_provision.errors`.
"""

from __future__ import annotations

from edge_provision.platform.bootstrap import BootstrapClient, BootstrapConfig
from edge_provision.platform.certs import CertsClient, IssuedCertificate, SignedCertificate
from edge_provision.platform.models import PlatformChannel, PlatformThing
from edge_provision.platform.provision import MappingResult, ProvisionClient

__all__ = [
    "BootstrapClient",
    "BootstrapConfig",
    "CertsClient",
    "IssuedCertificate",
    "MappingResult",
    "PlatformChannel",
    "PlatformThing",
    "ProvisionClient",
    "SignedCertificate",
]
