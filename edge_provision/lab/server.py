"""Composition root of ``edge-provision serve``: state directory, service, uvicorn.

``build_service`` opens everything in the state directory (0700)::

    lab.db      the embedded platform (SQLite, WAL)
    ca/         the local CA (ca.key 0600, ca.crt 0644)
    api-token   the operator token, generated at first start (0600) unless one
                is configured (MF_PROVISION_API_KEY, server.mf_api_key, --token)

``serve`` runs it in the foreground until Ctrl-C or SIGTERM (exit code 0);
``start_in_thread`` runs it in a background thread for tests and benchmarks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import secrets
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import uvicorn

from edge_provision import fileio
from edge_provision.crypto import bootstrap_cipher
from edge_provision.crypto.pki import LocalCA
from edge_provision.errors import ConfigError, StoreError
from edge_provision.lab.backends.embedded import EmbeddedBackend
from edge_provision.lab.http import create_app
from edge_provision.lab.service import LabService, ServiceInfo
from edge_provision.layout import Layout, default_layout, load_layout
from edge_provision.logs import register_secret
from edge_provision.settings import LabSettings

if TYPE_CHECKING:
    from edge_provision.lab.mosquitto import MosquittoSync

__all__ = ["TOKEN_FILE", "RunningLabServer", "build_service", "serve", "start_in_thread"]

logger = logging.getLogger(__name__)

TOKEN_FILE = "api-token"  # noqa: S105 - a file name, not a secret
_DB_FILE = "lab.db"
_CA_DIR = "ca"
_START_TIMEOUT_S = 15.0
_STOP_TIMEOUT_S = 15.0
_UVICORN_LEVELS = {"debug": "debug", "info": "info", "warn": "warning", "warning": "warning",
                   "error": "error", "critical": "critical", "trace": "trace"}  # fmt: skip


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
    db_path = state_dir / _DB_FILE
    backend = EmbeddedBackend(db_path)
    info = ServiceInfo(
        layout_source=layout.source,
        things=len(layout.things),
        channels=len(layout.channels),
        db_path=db_path,
        ca_path=ca_dir / LocalCA.CERT_FILE,
        auth_hint=auth_hint,
        x509_provision=layout.bootstrap.x509_provision,
    )
    return LabService(backend=backend, ca=ca, layout=layout, token=token,
                      header_required=header_required, encrypt_key=encrypt_key, info=info,
                      max_body_bytes=settings.max_body_bytes)  # fmt: skip


# ------------------------------------------------------------------------ uvicorn


class _Server(uvicorn.Server):
    """uvicorn's server that reports once it listens and exits 0 on SIGINT/SIGTERM.

    uvicorn re-raises a captured signal after a graceful shutdown (so SIGTERM
    would end the process with -15); we only restore the previous handlers.
    """

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None],
                 stop_requested: threading.Event | None = None) -> None:
        super().__init__(config)
        self._on_started = on_started
        self._stop_requested = stop_requested

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._on_started()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        if self._stop_requested is not None and self._stop_requested.is_set():
            self.handle_exit(signal.SIGTERM, None)  # asked to stop while starting up
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket, or ConfigError saying why not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host!r}: cannot resolve the address: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    # proto must be IPPROTO_TCP (not 0): asyncio sets TCP_NODELAY on accepted
    # sockets only then, and without it Nagle + delayed ACKs cost 40 ms a request
    sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        hint = ("pick another with --port (0 = any free port)" if exc.errno == errno.EADDRINUSE
                else "check --host and --port")  # fmt: skip
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}; {hint}") from None
    sock.setblocking(False)
    return sock


def _url(sock: socket.socket, tls: bool) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{shown}:{port}"


def _config(settings: LabSettings, service: LabService) -> uvicorn.Config:
    level = _UVICORN_LEVELS.get(settings.log_level.lower(), "info")
    tls = settings.server_cert is not None and settings.server_key is not None
    config = uvicorn.Config(
        create_app(service),
        host=settings.host,
        port=settings.port,
        log_level=level,
        log_config=None,
        access_log=level in ("debug", "trace"),
        lifespan="on",
        ws="none",
        server_header=False,
        ssl_certfile=str(settings.server_cert) if tls else None,
        ssl_keyfile=str(settings.server_key) if tls else None,
    )
    try:
        config.load()
    except (OSError, ValueError) as exc:  # unreadable TLS files, mostly
        raise ConfigError(
            f"cannot load the HTTPS certificate/key ({settings.server_cert}, "
            f"{settings.server_key}): {exc}; check MF_PROVISION_SERVER_CERT/_KEY"
        ) from None
    return config


def _banner(service: LabService, url: str) -> list[str]:
    info = service.info
    return [
        f"listening on {url}",
        f"layout: {info.layout_source} ({info.things} things, {info.channels} channels"
        f"{', X.509 on' if info.x509_provision else ''})",
        f"database: {info.db_path}",
        f"CA: {info.ca_path}",
        f"auth: {info.auth_hint}",
        "press Ctrl-C to stop",
    ]


def _attach_mqtt(settings: LabSettings, service: LabService) -> MosquittoSync | None:
    """The mosquitto sync of ``--mqtt`` / ``--mosquitto-config-dir`` (None if neither)."""
    if not settings.mqtt and settings.mosquitto_config_dir is None:
        return None
    from edge_provision.lab.mosquitto import attach

    return attach(settings, service)


def serve(settings: LabSettings, echo: Callable[[str], None]) -> None:
    """Run the lab server in the foreground until Ctrl-C or SIGTERM."""
    with _stop_requests() as stop_requested:
        _serve(settings, echo, stop_requested)


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


def _serve(settings: LabSettings, echo: Callable[[str], None],
           stop_requested: threading.Event) -> None:
    service = build_service(settings)
    broker: MosquittoSync | None = None
    try:
        broker = _attach_mqtt(settings, service)
        config = _config(settings, service)
        sock = _bind(settings.host, settings.port)
        url = _url(sock, config.is_ssl)

        def started() -> None:
            lines = _banner(service, url)
            lines[-1:-1] = broker.banner_lines() if broker is not None else []
            for line in lines:
                echo(line)

        server = _Server(config, started, stop_requested)
        try:
            server.run(sockets=[sock])
        finally:
            sock.close()
        if not server.started:
            raise ConfigError("the lab server failed to start; see the log above")
        echo("stopped")
    finally:
        if broker is not None:
            broker.stop()
        service.close()


class RunningLabServer:
    """A lab server running in a background thread (tests, benchmarks)."""

    def __init__(self, url: str, service: LabService, server: _Server,
                 thread: threading.Thread, sock: socket.socket,
                 mqtt: MosquittoSync | None = None) -> None:
        self.url = url
        self.mqtt = mqtt
        self.service = service
        self._server = server
        self._thread = thread
        self._sock = sock
        self.port: int = int(sock.getsockname()[1])

    def stop(self) -> None:
        """Shut down gracefully, wait for the thread, close the backend."""
        self._server.should_exit = True
        self._thread.join(timeout=_STOP_TIMEOUT_S)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout=_STOP_TIMEOUT_S)
        self._sock.close()
        if self.mqtt is not None:
            self.mqtt.stop()
        self.service.close()

    def __enter__(self) -> RunningLabServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_in_thread(settings: LabSettings) -> RunningLabServer:
    """Start the lab server on a background thread; returns once it accepts connections."""
    service = build_service(settings)
    broker: MosquittoSync | None = None
    try:
        broker = _attach_mqtt(settings, service)
        config = _config(settings, service)
        sock = _bind(settings.host, settings.port)
    except BaseException:
        if broker is not None:
            broker.stop()
        service.close()
        raise
    ready = threading.Event()
    server = _Server(config, ready.set)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # SystemExit from uvicorn included
            failure.append(exc)
        finally:
            ready.set()

    thread = threading.Thread(target=run, name="edge-provision-lab", daemon=True)
    thread.start()
    deadline = time.monotonic() + _START_TIMEOUT_S
    while not ready.wait(0.05) and time.monotonic() < deadline:
        pass
    running = RunningLabServer(_url(sock, config.is_ssl), service, server, thread, sock, broker)
    if not server.started:
        running.stop()
        raise ConfigError(f"the lab server did not start: {failure[0] if failure else 'timeout'}")
    return running
