"""Composition root of the agent: the one place that builds its objects from settings.

``HttpClient`` (one per distinct base URL), ``ProvisionClient``, ``BootstrapClient``,
``CertsClient``, ``Store`` and ``Notifier`` are constructed here and nowhere else; the
CLI commands and the daemon ask this module for them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Callable

from edge_provision.agent.daemon.systemd import Notifier
from edge_provision.agent.enroll import EnrollClients, EnrollResult, StepEvent, Verifier, enroll
from edge_provision.agent.store import Store
from edge_provision.errors import ConfigError
from edge_provision.settings import AgentSettings

__all__ = ["build_clients", "build_notifier", "build_store", "build_verifier", "run_enroll"]

logger = logging.getLogger(__name__)


def build_store(settings: AgentSettings, *, clock: Callable[[], datetime] | None = None) -> Store:
    """The credential store in ``settings.state_dir``."""
    return Store(settings.state_dir, clock=clock)


def build_notifier() -> Notifier:
    """The systemd notifier (a no-op outside systemd)."""
    return Notifier()


@contextlib.contextmanager
def build_clients(settings: AgentSettings) -> Iterator[EnrollClients]:
    """The platform clients for ``settings``; their HTTP sessions close on exit.

    The bootstrap and certificate URLs default to the provision URL. Raises
    :class:`ConfigError` when no provision URL is configured.
    """
    from edge_provision.crypto import bootstrap_cipher
    from edge_provision.http import AuthScheme, HttpClient
    from edge_provision.platform import BootstrapClient, CertsClient, ProvisionClient

    if not settings.provision_url:
        raise ConfigError(
            "no provision URL: pass --provision-url, set EDGE_PROVISION_PROVISION_URL or "
            "server.url in the config file (e.g. http://platform.example:8190)"
        )
    provision_url = settings.provision_url.rstrip("/")
    bootstrap_url = (settings.bootstrap_url or provision_url).rstrip("/")
    certs_url = (settings.certs_url or provision_url).rstrip("/")
    scheme = AuthScheme(settings.auth_scheme)
    encrypt_key = bootstrap_cipher.parse_encrypt_key(settings.encrypt_key) if (
        settings.secure_bootstrap) else None
    sessions: dict[str, HttpClient] = {}

    def http(url: str) -> HttpClient:
        if url not in sessions:
            sessions[url] = HttpClient(
                url, connect_timeout_s=settings.connect_timeout_s,
                read_timeout_s=settings.read_timeout_s, ca_bundle=settings.ca_bundle,
                client_cert=settings.client_cert, client_key=settings.client_key,
                insecure=settings.insecure,
            )  # fmt: skip
        return sessions[url]

    try:
        yield EnrollClients(
            provision=ProvisionClient(http(provision_url), token=settings.token,
                                      auth_scheme=scheme),
            bootstrap=BootstrapClient(http(bootstrap_url), auth_scheme=scheme,
                                      encrypt_key=encrypt_key),
            certs=CertsClient(http(certs_url), auth_scheme=scheme),
            provision_url=provision_url, bootstrap_url=bootstrap_url, certs_url=certs_url,
        )  # fmt: skip
    finally:
        for session in sessions.values():
            session.close()


def build_verifier(settings: AgentSettings) -> Verifier | None:
    """The MQTT credential check of ``mqtt.verify`` (None when it is off)."""
    from edge_provision.agent.mqtt import make_verifier

    return make_verifier(settings)


def run_enroll(
    settings: AgentSettings,
    *,
    force: bool = False,
    progress: Callable[[StepEvent], None] | None = None,
) -> EnrollResult:
    """Build everything from ``settings`` and run one enrollment."""
    from edge_provision.agent.renew.renewal import write_metrics

    store = build_store(settings)
    verifier = build_verifier(settings)
    try:
        with build_clients(settings) as clients:
            return enroll(settings, store, clients, verifier=verifier, force=force,
                          progress=progress)  # fmt: skip
    finally:
        write_metrics(settings, store)  # the textfile follows every run, failed or not
