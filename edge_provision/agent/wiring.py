"""Composition root of the agent: the one place that turns settings into objects.

The platform clients (one ``HttpClient`` per distinct base URL), the MQTT targets and the
credential verifier are built here from :class:`~edge_provision.settings.AgentSettings`;
the adapters they come from take plain values. The use cases the CLI calls --
:func:`run_enroll`, :func:`run_renew`, :func:`read_status` -- build what they need here
and write the Prometheus textfile after every enroll/renew run, failed or not; an
enroll or renew run ends by its deadline (:func:`run_deadline`).

Top-level imports stay light (store, settings, errors): the daemon's control bridge
imports this module; the heavy parts (requests, cryptography, paho) load inside the
functions that need them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, cast

from edge_provision import deadline
from edge_provision.agent.store import Store
from edge_provision.deadline import Deadline
from edge_provision.errors import ConfigError, EdgeProvisionError
from edge_provision.settings import AgentSettings

if TYPE_CHECKING:
    from edge_provision.agent.enroll import (
        EnrollClients,
        EnrollResult,
        StepEvent,
        Verified,
        Verifier,
    )
    from edge_provision.agent.enroll.ports import BootstrapPort, CertsPort, ProvisionPort
    from edge_provision.agent.mqtt import MqttTarget
    from edge_provision.agent.renew.renewal import RenewResult
    from edge_provision.agent.reset import ResetResult
    from edge_provision.agent.status import GatewayStatus
    from edge_provision.agent.store import Generation
    from edge_provision.http import HttpClient

__all__ = [
    "build_clients",
    "build_store",
    "build_verifier",
    "mqtt_target",
    "read_status",
    "run_deadline",
    "run_enroll",
    "run_renew",
    "run_reset",
    "write_metrics",
]

logger = logging.getLogger(__name__)


def build_store(settings: AgentSettings, *, clock: Callable[[], datetime] | None = None) -> Store:
    """The credential store in ``settings.state_dir``; it records what each certificate it
    stores says, so that reading it back needs no crypto library."""
    from edge_provision.agent.certificates import describe

    return Store(settings.state_dir, clock=clock, describe_certificate=describe)


class _OnFirstUse:
    """A platform client made when it is first used, so that a run that needs no platform
    (the no-op ``enroll``, a ``renew`` with nothing due) loads no HTTP or crypto library."""

    def __init__(self, make: Callable[[], object]) -> None:
        self._make = make
        self._client: object | None = None

    def __getattr__(self, name: str) -> Any:
        if self._client is None:
            self._client = self._make()
        return getattr(self._client, name)


@contextlib.contextmanager
def build_clients(settings: AgentSettings) -> Iterator[EnrollClients]:
    """The platform clients for ``settings``, each made on first use; sessions close on exit.

    The bootstrap and certificate URLs default to the provision URL. Raises
    :class:`ConfigError` when no provision URL is configured.
    """
    from edge_provision.agent.enroll.ports import EnrollClients

    if not settings.provision_url:
        raise ConfigError(
            "no provision URL: pass --provision-url, set EDGE_PROVISION_PROVISION_URL or "
            "server.url in the config file (e.g. http://platform.example:8190)"
        )
    provision_url = settings.provision_url.rstrip("/")
    bootstrap_url = (settings.bootstrap_url or provision_url).rstrip("/")
    certs_url = (settings.certs_url or provision_url).rstrip("/")
    sessions: dict[str, HttpClient] = {}

    def http(url: str) -> HttpClient:
        from edge_provision.http import HttpClient

        if url not in sessions:
            sessions[url] = HttpClient(
                url, connect_timeout_s=settings.connect_timeout_s,
                read_timeout_s=settings.read_timeout_s,
                request_deadline_s=settings.request_deadline_s, ca_bundle=settings.ca_bundle,
                client_cert=settings.client_cert, client_key=settings.client_key,
                insecure=settings.insecure,
            )  # fmt: skip
        return sessions[url]

    def provision() -> ProvisionPort:
        from edge_provision.http import AuthScheme
        from edge_provision.platform import ProvisionClient

        return ProvisionClient(http(provision_url), token=settings.token,
                               auth_scheme=AuthScheme(settings.auth_scheme))  # fmt: skip

    def bootstrap() -> BootstrapPort:
        from edge_provision.crypto import bootstrap_cipher
        from edge_provision.http import AuthScheme
        from edge_provision.platform import BootstrapClient

        encrypt_key = bootstrap_cipher.parse_encrypt_key(settings.encrypt_key) if (
            settings.secure_bootstrap) else None
        return BootstrapClient(http(bootstrap_url), auth_scheme=AuthScheme(settings.auth_scheme),
                               encrypt_key=encrypt_key)  # fmt: skip

    def certs() -> CertsPort:
        from edge_provision.http import AuthScheme
        from edge_provision.platform import CertsClient

        return CertsClient(http(certs_url), auth_scheme=AuthScheme(settings.auth_scheme))

    try:
        yield EnrollClients(
            provision=cast("ProvisionPort", _OnFirstUse(provision)),
            bootstrap=cast("BootstrapPort", _OnFirstUse(bootstrap)),
            certs=cast("CertsPort", _OnFirstUse(certs)),
            provision_url=provision_url, bootstrap_url=bootstrap_url, certs_url=certs_url,
        )  # fmt: skip
    finally:
        for session in sessions.values():
            session.close()


def mqtt_target(settings: AgentSettings, generation: Generation) -> MqttTarget | None:
    """How ``generation``'s gateway thing connects to the broker (None: no broker known).

    The broker is ``mqtt.url``, else ``agent.mqtt.url`` of the bootstrap content; the CA
    is ``mqtt.ca``, else the generation's own.
    """
    from edge_provision.agent.mqtt import target_for

    return target_for(generation, url=settings.mqtt_url, ca_path=settings.mqtt_ca,
                      mtls=settings.mqtt_mtls, insecure=settings.insecure)  # fmt: skip


def build_verifier(settings: AgentSettings) -> Verifier | None:
    """The MQTT credential check of ``mqtt.verify`` (None when it is ``never``).

    paho and ssl load at the first check, not before: a run that checks nothing never
    loads them.
    """
    if settings.mqtt_verify == "never":
        return None

    def verify(generation: Generation) -> Verified | None:
        from edge_provision.agent.mqtt import make_verifier

        check = make_verifier(lambda gen: mqtt_target(settings, gen),
                              required=settings.mqtt_verify == "always",
                              timeout_s=settings.mqtt_timeout_s)  # fmt: skip
        return check(generation)

    return verify


Notice = Callable[[str], None]
"""Hears, as one line for a person, what a command does besides its work: waiting for the
state lock (and who holds it), file modes put back."""


@contextlib.contextmanager
def _locked(settings: AgentSettings, store: Store, command: str,
            notice: Notice | None) -> Iterator[None]:  # fmt: skip
    """The state lock for one ``command``: another run's lock is waited for (``lock_wait_s``).

    Contention is never an error: whoever holds the lock finishes its run; only after
    ``settings.lock_wait_s`` is it :class:`~edge_provision.errors.LockBusy` (temporary).
    Once held, the leftovers of interrupted writes are removed and loosened file modes put
    back (each said through ``notice``).
    """
    from edge_provision.agent.leftovers import remove_leftovers
    from edge_provision.agent.permissions import tighten

    say = notice or (lambda text: None)

    def waiting(holder: str) -> None:
        say(f"waiting for the state lock, held by {holder}; it is let go when that run ends "
            "(Ctrl-C to give up)")

    with store.lock(wait_s=settings.lock_wait_s, holder=f"edge-provision {command}",
                    on_wait=waiting):  # fmt: skip
        remove_leftovers(settings, store)
        for fixed in tighten(store):
            say(f"restored the mode of {fixed.path} to {fixed.expected:04o} (it was "
                f"{fixed.mode:04o}: readable by others)")
        yield


def run_deadline(
    settings: AgentSettings, command: str, *, hard_stop: bool = False
) -> contextlib.AbstractContextManager[Deadline]:
    """The deadline of one ``command`` run (``agent.run_deadline``), from now.

    Every request and step inside stops at it; ``hard_stop`` (the commands) adds the
    backstop that ends the process shortly after it, for what cannot be interrupted.
    """
    return deadline.limit(settings.run_deadline_s, f"{command} run", "agent.run_deadline",
                          on_overrun=deadline.exit_process if hard_stop else None)  # fmt: skip


@contextlib.contextmanager
def _use_case(
    settings: AgentSettings, command: str, hard_stop: bool, notice: Notice | None
) -> Iterator[tuple[Store, EnrollClients, Verifier | None]]:
    """The frame of one enroll or renew run: the store, the state lock, the run's deadline
    (from once the lock is held, so the lock is never held past ``agent.run_deadline``),
    the platform clients and the MQTT verifier; the metrics textfile written afterwards,
    whatever the outcome."""
    store = build_store(settings)
    verifier = build_verifier(settings)
    try:
        with _locked(settings, store, command, notice), \
                run_deadline(settings, command, hard_stop=hard_stop), \
                build_clients(settings) as clients:  # fmt: skip
            yield store, clients, verifier
    finally:
        write_metrics(settings, store)


def run_enroll(
    settings: AgentSettings,
    *,
    force: bool = False,
    progress: Callable[[StepEvent], None] | None = None,
    hard_stop: bool = False,
    notice: Notice | None = None,
) -> EnrollResult:
    """Build everything from ``settings`` and run one enrollment within its deadline.

    The run's deadline starts once the state lock is held (waiting for it is
    ``agent.lock_wait``'s), so the lock is never held past ``agent.run_deadline``.
    """
    from edge_provision.agent.enroll import enroll

    with _use_case(settings, "enroll", hard_stop, notice) as (store, clients, verifier):
        return enroll(settings, store, clients, verifier=verifier, force=force,
                      progress=progress)  # fmt: skip


def run_renew(settings: AgentSettings, *, force: bool = False, hard_stop: bool = False,
              notice: Notice | None = None) -> RenewResult:  # fmt: skip
    """Build the store, clients and verifier from ``settings`` and run one renewal in time.

    The run's deadline starts once the state lock is held (waiting for it is
    ``agent.lock_wait``'s), so the lock is never held past ``agent.run_deadline``.
    """
    from edge_provision.agent.renew.renewal import renew

    with _use_case(settings, "renew", hard_stop, notice) as (store, clients, verifier):
        return renew(settings, store, clients, verifier=verifier, force=force)


def run_reset(settings: AgentSettings, *,
              notice: Notice | None = None) -> ResetResult:  # fmt: skip
    """Forget the current generation of ``settings.state_dir`` (see agent.reset)."""
    from edge_provision.agent.reset import reset

    store = build_store(settings)
    with _locked(settings, store, "reset", notice):
        return reset(store)


def read_status(settings: AgentSettings) -> GatewayStatus:
    """What this gateway is and does now (reads only; safe while the daemon runs)."""
    from edge_provision.agent.status import gateway_status

    return gateway_status(settings, build_store(settings))


def write_metrics(settings: AgentSettings, store: Store) -> None:
    """Write the Prometheus textfile (``agent.metrics_textfile``) if one is configured.

    The textfile is one more view of :func:`read_status`; a failure to write it is
    logged, never raised (the run it follows matters more).
    """
    if settings.metrics_textfile is None:
        return
    from edge_provision.agent.status import gateway_status, metrics_text
    from edge_provision.metrics import write_textfile

    try:
        text = metrics_text(gateway_status(settings, store))
        with contextlib.suppress(OSError, UnicodeDecodeError):
            if settings.metrics_textfile.read_text("utf-8") == text:
                return  # unchanged: a run that changes nothing writes nothing
        write_textfile(settings.metrics_textfile, text)
    except EdgeProvisionError as exc:
        logger.warning("metrics not written path=%s error=%s", settings.metrics_textfile, exc)
