"""One set of platform clients per worker thread, the way the agent builds its own.

Every worker thread of the simulator gets its own :class:`~edge_provision.http.HttpClient`
per distinct base URL (one ``requests`` session each, connections kept alive between
the gateways the thread serves) and the agent's Provision, Bootstrap and Certs clients
on top of them. Nothing is shared between threads, so no lock sits on the hot path.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from edge_provision.http import AuthScheme, HttpClient
from edge_provision.platform import BootstrapClient, CertsClient, ProvisionClient

__all__ = ["ClientPool", "FleetTarget", "GatewayClients"]


@dataclass(frozen=True)
class FleetTarget:
    """Where the simulated gateways go and how they talk (the ``enroll`` settings)."""

    provision_url: str
    bootstrap_url: str
    certs_url: str
    things_url: str
    token: str = field(repr=False)
    auth_scheme: AuthScheme = AuthScheme.AUTO
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    ca_bundle: Path | None = None
    insecure: bool = False
    encrypt_key: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class GatewayClients:
    """The clients one worker thread uses for every gateway it serves."""

    provision: ProvisionClient
    bootstrap: BootstrapClient
    certs: CertsClient
    things: HttpClient
    configs: HttpClient


class ClientPool:
    """Hands each thread its own :class:`GatewayClients`; :meth:`close` closes them all."""

    def __init__(self, target: FleetTarget) -> None:
        self._target = target
        self._local = threading.local()
        self._lock = threading.Lock()
        self._sessions: list[HttpClient] = []

    @property
    def target(self) -> FleetTarget:
        """Where the clients point."""
        return self._target

    def get(self) -> GatewayClients:
        """This thread's clients (built on first use)."""
        clients: GatewayClients | None = getattr(self._local, "clients", None)
        if clients is None:
            clients = self._build()
            self._local.clients = clients
        return clients

    def _build(self) -> GatewayClients:
        t = self._target
        sessions: dict[str, HttpClient] = {}

        def http(url: str) -> HttpClient:
            if url not in sessions:
                sessions[url] = HttpClient(
                    url, connect_timeout_s=t.connect_timeout_s, read_timeout_s=t.read_timeout_s,
                    ca_bundle=t.ca_bundle, insecure=t.insecure,
                )  # fmt: skip
            return sessions[url]

        clients = GatewayClients(
            provision=ProvisionClient(http(t.provision_url), token=t.token,
                                      auth_scheme=t.auth_scheme),
            bootstrap=BootstrapClient(http(t.bootstrap_url), auth_scheme=t.auth_scheme,
                                      encrypt_key=t.encrypt_key),
            certs=CertsClient(http(t.certs_url), auth_scheme=t.auth_scheme),
            things=http(t.things_url),
            configs=http(t.bootstrap_url),
        )  # fmt: skip
        with self._lock:
            self._sessions.extend(sessions.values())
        return clients

    def close(self) -> None:
        """Close every session of every thread (call once the workers are done)."""
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()
