"""edge-provision: gateway self-provisioning for Mainflux-style IoT platforms.

The programmatic API (see ``docs/api.md``) is the names in ``__all__``: the layout
engine, the settings loaders, the enroll and renew use cases, the daemon, the error
hierarchy and the :mod:`edge_provision.testing` kit. They load lazily (PEP 562), so
``import edge_provision`` stays as light as the stdlib: ``edge_provision.plan`` loads
the layout engine only, ``edge_provision.run_enroll`` the agent.

Where each public name lives is one table, ``_HOMES``: when a name moves to another
module, change its line there (and in the ``TYPE_CHECKING`` block below, which lets
type checkers and IDEs see the names).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> the module that defines it (a module maps to itself: "testing")
_HOMES: dict[str, str] = {
    # the layout engine (pure: stdlib only)
    "Layout": "edge_provision.layout",
    "Plan": "edge_provision.layout",
    "default_layout": "edge_provision.layout",
    "load_layout": "edge_provision.layout",
    "plan": "edge_provision.layout",
    # settings
    "AgentSettings": "edge_provision.settings",
    "LabSettings": "edge_provision.settings",
    "load_agent_settings": "edge_provision.settings",
    "load_lab_settings": "edge_provision.settings",
    # use cases and the daemon
    "run_enroll": "edge_provision.agent.wiring",
    "enroll": "edge_provision.agent.enroll",
    "run_renew": "edge_provision.agent.wiring",
    "Daemon": "edge_provision.agent.daemon.supervisor",
    # the error hierarchy
    "AlreadyProvisioned": "edge_provision.errors",
    "BadReply": "edge_provision.errors",
    "CertificateError": "edge_provision.errors",
    "ConfigError": "edge_provision.errors",
    "EdgeProvisionError": "edge_provision.errors",
    "IdentityError": "edge_provision.errors",
    "LayoutError": "edge_provision.errors",
    "LockBusy": "edge_provision.errors",
    "MqttAuthError": "edge_provision.errors",
    "MqttError": "edge_provision.errors",
    "MqttUnavailable": "edge_provision.errors",
    "PermanentError": "edge_provision.errors",
    "Problem": "edge_provision.errors",
    "ProtocolError": "edge_provision.errors",
    "ProvisioningError": "edge_provision.errors",
    "Rejected": "edge_provision.errors",
    "ServiceUnavailable": "edge_provision.errors",
    "StoreError": "edge_provision.errors",
    "TransientError": "edge_provision.errors",
    "Unauthorized": "edge_provision.errors",
    # test helpers (a module)
    "testing": "edge_provision.testing",
}

__all__ = [
    "AgentSettings",
    "AlreadyProvisioned",
    "BadReply",
    "CertificateError",
    "ConfigError",
    "Daemon",
    "EdgeProvisionError",
    "IdentityError",
    "LabSettings",
    "Layout",
    "LayoutError",
    "LockBusy",
    "MqttAuthError",
    "MqttError",
    "MqttUnavailable",
    "PermanentError",
    "Plan",
    "Problem",
    "ProtocolError",
    "ProvisioningError",
    "Rejected",
    "ServiceUnavailable",
    "StoreError",
    "TransientError",
    "Unauthorized",
    "__version__",
    "default_layout",
    "enroll",
    "load_agent_settings",
    "load_lab_settings",
    "load_layout",
    "plan",
    "run_enroll",
    "run_renew",
    "testing",
]

if TYPE_CHECKING:
    from edge_provision import testing
    from edge_provision.agent.daemon.supervisor import Daemon
    from edge_provision.agent.enroll import enroll
    from edge_provision.agent.wiring import run_enroll, run_renew
    from edge_provision.errors import (
        AlreadyProvisioned,
        BadReply,
        CertificateError,
        ConfigError,
        EdgeProvisionError,
        IdentityError,
        LayoutError,
        LockBusy,
        MqttAuthError,
        MqttError,
        MqttUnavailable,
        PermanentError,
        Problem,
        ProtocolError,
        ProvisioningError,
        Rejected,
        ServiceUnavailable,
        StoreError,
        TransientError,
        Unauthorized,
    )
    from edge_provision.layout import Layout, Plan, default_layout, load_layout, plan
    from edge_provision.settings import (
        AgentSettings,
        LabSettings,
        load_agent_settings,
        load_lab_settings,
    )


def _load(name: str) -> object:
    """Import the home module of a public name on first use, then keep the value."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(home)
    value = module if home == f"{__name__}.{name}" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if not TYPE_CHECKING:
    __getattr__ = _load
