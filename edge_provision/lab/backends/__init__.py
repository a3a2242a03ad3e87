"""Platforms the lab server can provision on (see :class:`edge_provision.lab.models.Backend`).

``embedded`` (the default) keeps everything in one local SQLite file and needs
nothing else; ``mainflux`` provisions into a real Mainflux (Things, Bootstrap and,
for a login, Users) named by upstream Provision's own settings. Each backend is a
subpackage, imported only when it is selected: :func:`open_backend` is the one
place that chooses, and the lab service never learns which one it talks to.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edge_provision.errors import ConfigError, Problem

if TYPE_CHECKING:
    from edge_provision.lab.models import Backend
    from edge_provision.layout import Layout
    from edge_provision.settings import LabSettings

__all__ = ["BACKENDS", "CERTS_FILE", "DB_FILE", "OpenedBackend", "open_backend"]

BACKENDS = ("embedded", "mainflux")
DB_FILE = "lab.db"
"""The embedded platform's database, in the state directory."""
CERTS_FILE = "certs.db"
"""With the mainflux backend: the records of the certificates the lab CA issued."""


@dataclass(frozen=True)
class OpenedBackend:
    """A backend, opened, and how the server describes it (banner lines, ``/health``)."""

    backend: Backend
    name: str
    banner: tuple[str, ...]
    store_path: Path
    """The local file the backend writes (embedded: the platform; mainflux: cert records)."""


def open_backend(settings: LabSettings, state_dir: Path, layout: Layout) -> OpenedBackend:
    """Open the backend ``settings.backend`` names; ConfigError for settings it cannot use."""
    if settings.backend == "mainflux":
        return _open_mainflux(settings, state_dir, layout)
    if settings.backend != "embedded":
        raise ConfigError(Problem(f"unknown backend {settings.backend!r}; expected one of "
                                  f"{', '.join(BACKENDS)}", path="backend"))
    from edge_provision.lab.backends.embedded import EmbeddedBackend

    db_path = state_dir / DB_FILE
    return OpenedBackend(EmbeddedBackend(db_path), "embedded", (f"database: {db_path}",),
                         db_path)


def _open_mainflux(settings: LabSettings, state_dir: Path, layout: Layout) -> OpenedBackend:
    from edge_provision.http import AuthScheme
    from edge_provision.lab.backends.mainflux import MainfluxBackend, MainfluxTarget
    from edge_provision.layout import plan

    if settings.mqtt or settings.mosquitto_config_dir is not None:
        raise ConfigError(Problem(
            "the mainflux backend's things authenticate at the platform's own MQTT adapter; "
            "drop --mqtt / --mosquitto-config-dir (they keep a lab mosquitto in step with the "
            "embedded backend)", path=settings.source_of("mqtt" if settings.mqtt
                                                         else "mosquitto_config_dir")))
    target = MainfluxTarget(
        things_url=settings.things_url or "", bootstrap_url=settings.bootstrap_svc_url or "",
        users_url=settings.users_url, api_key=settings.token, user=settings.mf_user,
        password=settings.mf_pass, auth_scheme=AuthScheme(settings.platform_auth_scheme),
        ca_bundle=settings.platform_ca_bundle, client_cert=settings.platform_client_cert,
        client_key=settings.platform_client_key, insecure=settings.platform_insecure,
    ).check()
    # a layout this backend cannot make is the operator's to fix: say so now, not per request
    MainfluxBackend.check_plan(plan(layout, "start-up-check", "start-up-check"))
    certs_path = state_dir / CERTS_FILE
    backend = MainfluxBackend(target, certs_path=certs_path)
    auth = (f"login as {target.user} at {target.users_url}" if target.uses_login
            else f"API key from {settings.source_of('token')}")
    tls = " (TLS NOT verified)" if target.insecure else ""
    banner = (
        f"backend: mainflux, things {target.things_url}, bootstrap {target.bootstrap_url}, "
        f"{auth}{tls}",
        f"certificates: signed by the lab CA, records in {certs_path}",
    )
    return OpenedBackend(backend, "mainflux", banner, certs_path)
