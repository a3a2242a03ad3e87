"""Typed clients for the platform side.

Device side: Provision (``POST /mapping``), Bootstrap (device endpoints), Certs.
Operator side (the lab's mainflux backend): Things, Bootstrap configs, Users.
All of them speak through one :class:`edge_provision.http.HttpClient` per service and
raise only the classes of :mod:`edge_provision.errors`.

The names below are loaded on first use (PEP 562), so that importing a value type
(``edge_provision.platform.models``) does not load requests or cryptography.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

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

_HOMES = {
    "BootstrapClient": "edge_provision.platform.bootstrap",
    "BootstrapConfig": "edge_provision.platform.bootstrap",
    "CertsClient": "edge_provision.platform.certs",
    "IssuedCertificate": "edge_provision.platform.certs",
    "SignedCertificate": "edge_provision.platform.certs",
    "MappingResult": "edge_provision.platform.provision",
    "ProvisionClient": "edge_provision.platform.provision",
    "PlatformChannel": "edge_provision.platform.models",
    "PlatformThing": "edge_provision.platform.models",
}

if TYPE_CHECKING:
    from edge_provision.platform.bootstrap import BootstrapClient, BootstrapConfig
    from edge_provision.platform.certs import CertsClient, IssuedCertificate, SignedCertificate
    from edge_provision.platform.models import PlatformChannel, PlatformThing
    from edge_provision.platform.provision import MappingResult, ProvisionClient


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
