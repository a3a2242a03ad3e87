"""Composition root of ``edge-provision serve``: state directory, service, broker, HTTP.

``build_service`` opens everything in the state directory (0700)::

    lab.db      the embedded platform (SQLite, WAL); with the mainflux backend
                certs.db instead: the records of the certificates the CA issued
    ca/         the local CA (ca.key 0600, ca.crt 0644)
    api-token   the operator token, generated at first start (0600) unless one
                is configured (MF_PROVISION_API_KEY, server.mf_api_key, --token)
    lab.lock    held while a server runs, with its pid: one server per directory

The backend is the one ``settings.backend`` names
(:func:`edge_provision.lab.backends.open_backend`).

One start-up (``_open``): the state directory's lock, the service, the broker
with ``--mqtt``, the ASGI app and the bound socket. ``serve`` runs that in the
foreground until Ctrl-C or SIGTERM (exit code 0); ``start_in_thread`` runs it in
a background thread for tests and benchmarks. Only the way it runs and stops differs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import logging
import secrets
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from edge_provision import fileio
from edge_provision.crypto import bootstrap_cipher
from edge_provision.crypto.pki import LocalCA
from edge_provision.errors import ConfigError, StoreError
from edge_provision.lab.backends import open_backend
from edge_provision.lab.http.app import LabApp, create_app
from edge_provision.lab.http.listener import Limits, Listener, open_listener
from edge_provision.lab.service import LabService, ServiceInfo
from edge_provision.lab.state_lock import StateLock
from edge_provision.layout import Layout, default_layout, load_layout
from edge_provision.logs import register_secret
from edge_provision.settings import LabSettings

if TYPE_CHECKING:
    from edge_provision.lab.mosquitto import MosquittoSync

__all__ = [
    "TOKEN_FILE",
    "RunningLabServer",
    "build_service",
    "exposure_warning",
    "serve",
    "start_in_thread",
]

logger = logging.getLogger(__name__)

TOKEN_FILE = "api-token"  # noqa: S105 - a file name, not a secret
_CA_DIR = "ca"
_START_TIMEOUT_S = 15.0
_STOP_TIMEOUT_S = 15.0


# ----------------------------------------------------------------------- service


def _effective_layout(settings: LabSettings) -> Layout:
    """The layout file (or the built-in one) with the settings' overrides applied."""
    if settings.layout_file is not None:
        try:
            text = fileio.read_text(settings.layout_file, "layout file")
        except ValueError as exc:
            raise ConfigError(f"{exc}; check --layout / MF_PROVISION_CONFIG_FILE") from None
        layout = load_layout(text, source=str(settings.layout_file))
    else:
        layout = default_layout()
    for problem in layout.warnings:
        logger.warning("layout warning: %s", problem)
    boot, cert = layout.bootstrap, layout.cert
    boot = dataclasses.replace(
        boot,
        provision=boot.provision if settings.bs_provision is None else settings.bs_provision,
        autowhite_list=(boot.autowhite_list if settings.autowhite_list is None
                        else settings.autowhite_list),
        x509_provision=(boot.x509_provision if settings.x509_provision is None
                        else settings.x509_provision),
    )  # fmt: skip
    if settings.cert_ttl_s is not None:
        ttl_s = max(1, int(settings.cert_ttl_s))
        cert = dataclasses.replace(cert, ttl_s=ttl_s, ttl=f"{ttl_s}s")
    if settings.cert_key_type is not None:
        cert = dataclasses.replace(cert, key_type=settings.cert_key_type)
    if settings.cert_key_bits is not None:
        cert = dataclasses.replace(cert, key_bits=settings.cert_key_bits)
    return dataclasses.replace(layout, bootstrap=boot, cert=cert)


def _load_token(settings: LabSettings, state_dir: Path) -> tuple[str, bool, str]:
    """(token, header required, how to authenticate): configured, else the token file."""
    if settings.token:
        source = settings.sources.get("token", "settings")
        where = source.split(" ", 1)[1] if source.startswith(("env ", "flag ")) else source
        return settings.token, False, f"token from {where}"
    path = state_dir / TOKEN_FILE
    path = Path(path)
    if path.exists():
        try:
            token = fileio.read_text(path, "API token file").strip()
        except ValueError as exc:
            raise StoreError(str(exc)) from None
        if not token:
            raise StoreError(f"{path}: the API token file is empty; delete it to generate a "
                             "new token at the next start")  # fmt: skip
    else:
        token = secrets.token_urlsafe(32)
        fileio.atomic_write(path, token + "\n", mode=fileio.SECRET_MODE)
        logger.info("api token generated path=%s", path)
    return token, True, f"token in {path}"


def build_service(settings: LabSettings) -> LabService:
    """Open the state directory and build the lab service (caller closes it)."""
    state_dir = fileio.ensure_private_dir(settings.state_dir)
    layout = _effective_layout(settings)
    encrypt_key = bootstrap_cipher.parse_encrypt_key(settings.encrypt_key_hex)
    token, header_required, auth_hint = _load_token(settings, state_dir)
    register_secret(token)  # the log redaction filter masks it should it ever appear
    ca_dir = state_dir / _CA_DIR
    ca = LocalCA.load_or_create(ca_dir, key_type=layout.cert.key_type,
                                key_bits=layout.cert.key_bits)  # fmt: skip
    opened = open_backend(settings, state_dir, layout)
    info = ServiceInfo(
        layout_source=layout.source,
        things=len(layout.things),
        channels=len(layout.channels),
        db_path=opened.store_path,
        ca_path=ca_dir / LocalCA.CERT_FILE,
        auth_hint=auth_hint,
        x509_provision=layout.bootstrap.x509_provision,
        backend=opened.name,
        backend_banner=opened.banner,
        header_required=header_required,
    )
    return LabService(backend=opened.backend, ca=ca, layout=layout, token=token,
                      header_required=header_required, encrypt_key=encrypt_key, info=info,
                      max_body_bytes=settings.max_body_bytes)  # fmt: skip


# ---------------------------------------------------------------------- start-up


def exposure_warning(bound_host: str, port: int, header_required: bool) -> str | None:
    """The warning for a server anyone beyond this machine may provision on, or None.

    A configured token (``MF_PROVISION_API_KEY``, ``--token``) lets ``POST /mapping``
    through without an Authorization header, as upstream does; harmless on
    loopback, an open door on any other address.
    """
    if header_required:
        return None
    try:
        if ipaddress.ip_address(bound_host.split("%", 1)[0]).is_loopback:
            return None
    except ValueError:
        pass  # not numeric: assume the worst
    return (f"WARNING: listening beyond loopback ({bound_host} port {port}) with a configured "
            "token: anyone who reaches this port can POST /mapping without an Authorization "
            "header (upstream's MF_PROVISION_API_KEY behaviour); listen on 127.0.0.1 "
            "(--host), or drop --token / MF_PROVISION_API_KEY so that the generated token "
            "is required on every request")  # fmt: skip



@dataclass(frozen=True)
class _Lab:
    """One lab server, built and bound but not yet serving (see :func:`_open`)."""

    lock: StateLock
    service: LabService
    app: LabApp
    listener: Listener
    broker: MosquittoSync | None

    @property
    def exposure(self) -> str | None:
        """:func:`exposure_warning` for this server."""
        return exposure_warning(self.listener.host, self.listener.port,
                                self.service.info.header_required)

    def banner(self) -> list[str]:
        """What ``serve`` prints once it listens."""
        info = self.service.info
        exposure = self.exposure
        return [
            f"listening on {self.listener.url}",
            *((exposure,) if exposure else ()),
            f"layout: {info.layout_source} ({info.things} things, {info.channels} channels"
            f"{', X.509 on' if info.x509_provision else ''})",
            *info.backend_banner,
            f"CA: {info.ca_path}",
            f"auth: {info.auth_hint}",
            *(self.broker.banner_lines() if self.broker is not None else ()),
            "press Ctrl-C to stop",
        ]

    def close(self) -> None:
        """Release the socket, the broker, the service, the lock (after serving ended)."""
        try:
            self.listener.close()
            if self.broker is not None:
                self.broker.stop()
            self.service.close()
        finally:
            self.lock.release()


def _start_broker(settings: LabSettings, service: LabService) -> MosquittoSync | None:
    """The mosquitto sync of ``--mqtt`` / ``--mosquitto-config-dir`` (None if neither)."""
    if not settings.mqtt and settings.mosquitto_config_dir is None:
        return None
    from edge_provision.lab.mosquitto import MosquittoSync

    state_dir = Path(settings.state_dir)
    run = bool(settings.mqtt)
    directory = state_dir / "mosquitto" if run else Path(settings.mosquitto_config_dir or "")
    sync = MosquittoSync(service.backend, directory=directory, ca_dir=state_dir / _CA_DIR,
                         run=run, mosquitto_bin=settings.mosquitto_bin, host="127.0.0.1",
                         port=settings.mqtt_port, tls_port=settings.mqtt_tls_port,
                         require_cert=settings.mqtt_require_cert)  # fmt: skip
    service.add_listener(sync.notify)  # before start: no change may slip between
    sync.start()
    return sync


def _open(settings: LabSettings) -> _Lab:
    """The one start-up: lock, service, broker (if asked for), ASGI app, bound socket."""
    lock = StateLock.acquire(Path(settings.state_dir))
    try:
        service = build_service(settings)
    except BaseException:
        lock.release()
        raise
    broker: MosquittoSync | None = None
    try:
        broker = _start_broker(settings, service)
        app = create_app(service)
        limits = Limits(header_timeout_s=settings.header_timeout_s,
                        body_timeout_s=settings.body_timeout_s,
                        max_connections=settings.max_connections)
        listener = open_listener(app, host=settings.host, port=settings.port,
                                 log_level=settings.log_level, tls_cert=settings.server_cert,
                                 tls_key=settings.server_key, limits=limits)  # fmt: skip
    except BaseException:
        if broker is not None:
            broker.stop()
        service.close()
        lock.release()
        raise
    lab = _Lab(lock, service, app, listener, broker)
    if lab.exposure:
        logger.warning("%s", lab.exposure)
    return lab


# --------------------------------------------------------------------- run modes


def serve(settings: LabSettings, echo: Callable[[str], None]) -> None:
    """Run the lab server in the foreground until Ctrl-C or SIGTERM."""
    with _stop_requests() as stop_requested:
        lab = _open(settings)

        def started() -> None:
            for line in lab.banner():
                echo(line)

        try:
            if not lab.listener.run(started, stop_requested):
                raise ConfigError("the lab server failed to start; see the log above")
            echo("stopped")
        finally:
            lab.close()


@contextlib.contextmanager
def _stop_requests() -> Iterator[threading.Event]:
    """Remember SIGINT/SIGTERM that arrive while starting up (uvicorn takes over later).

    Without this, a SIGTERM between binding the socket and uvicorn's own handlers
    would kill the process (-15) instead of stopping it cleanly.
    """
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return
    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda *_: requested.set()) for sig in handled}
    try:
        yield requested
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class RunningLabServer:
    """A lab server running in a background thread (tests, benchmarks)."""

    def __init__(self, lab: _Lab, thread: threading.Thread) -> None:
        self._lab = lab
        self._thread = thread
        self.url = lab.listener.url
        self.port = lab.listener.port
        self.service = lab.service
        self.app = lab.app
        self.mqtt = lab.broker

    def stop(self) -> None:
        """Shut down gracefully, wait for the thread, close the backend."""
        self._lab.listener.stop()
        self._thread.join(timeout=_STOP_TIMEOUT_S)
        if self._thread.is_alive():
            self._lab.listener.stop(force=True)
            self._thread.join(timeout=_STOP_TIMEOUT_S)
        self._lab.close()

    def __enter__(self) -> RunningLabServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_in_thread(settings: LabSettings) -> RunningLabServer:
    """Start the lab server on a background thread; returns once it accepts connections."""
    lab = _open(settings)
    ready = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            lab.listener.run(ready.set)
        except BaseException as exc:  # SystemExit from uvicorn included
            failure.append(exc)
        finally:
            ready.set()

    thread = threading.Thread(target=run, name="edge-provision-lab", daemon=True)
    thread.start()
    ready.wait(_START_TIMEOUT_S)
    running = RunningLabServer(lab, thread)
    if not lab.listener.started:
        running.stop()
        raise ConfigError(f"the lab server did not start: {failure[0] if failure else 'timeout'}")
    return running
