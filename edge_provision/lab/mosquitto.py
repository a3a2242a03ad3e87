"""Keep a real mosquitto's auth in step with the lab's things (``serve --mqtt``).

Files, in ``<state dir>/mosquitto/`` (or only the first three in ``--mosquitto-config-dir``
for a mosquitto the operator runs)::

    passwd          user = thing id, password = thing key, mosquitto's own $7$ hash
    acl             per thing: readwrite on channels/<id>/messages and .../messages/#
                    for each channel it is connected to, nothing else
    crl.pem         revoked client certificates, signed by the lab CA (TLS listener)
    mosquitto.conf  listeners on 127.0.0.1, allow_anonymous false, persistence off
    server.crt/.key the TLS listener's certificate from the lab CA (127.0.0.1, localhost)
    admin-password  password of the "edge-provision-admin" user (readwrite on channels/#)
    mosquitto.log   the broker's log

Mapping and revocation events from :class:`~edge_provision.lab.service.LabService`
wake a worker thread that rebuilds the files; changed files are replaced atomically and
the broker gets SIGHUP: mosquitto 2.0 re-reads the password file, the ACL file and the
listener's TLS files including ``crlfile`` on it (checked with 2.0.11), so new things and
revocations apply without a restart to new connections. Password hash:
``$7$<iterations>$<b64 salt>$<b64 PBKDF2-SHA512>``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import logging
import os
import pwd
import secrets
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from edge_provision import fileio
from edge_provision.crypto.pki import LocalCA, parse_certificate
from edge_provision.errors import ConfigError, StoreError
from edge_provision.net import free_port

if TYPE_CHECKING:
    from edge_provision.lab.models import Backend

__all__ = [
    "ADMIN_USER",
    "MosquittoSync",
    "check_password",
    "hash_password",
    "render_acl",
    "render_config",
    "render_password_file",
]

logger = logging.getLogger(__name__)

ADMIN_USER = "edge-provision-admin"
_ITERATIONS = 101  # mosquitto_passwd's default for $7$
_SALT_BYTES = 12
_HASH_BYTES = 64
_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 5.0
_PAGE = 100
_SERVER_CERT_TTL_S = 365 * 86_400


# --------------------------------------------------------------------------- pure renderers


def hash_password(password: str, *, salt: bytes | None = None,
                  iterations: int = _ITERATIONS) -> str:  # fmt: skip
    """mosquitto's ``$7$`` hash of ``password`` (PBKDF2-HMAC-SHA512, 64 bytes)."""
    salt = secrets.token_bytes(_SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations, _HASH_BYTES)
    b64 = base64.b64encode
    return f"$7${iterations}${b64(salt).decode()}${b64(digest).decode()}"


def check_password(hashed: str, password: str) -> bool:
    """Whether ``hashed`` (a ``$7$`` entry) is the hash of ``password``."""
    parts = hashed.split("$")
    if len(parts) != 5 or parts[1] != "7" or not parts[2].isdigit():
        return False
    try:
        salt = base64.b64decode(parts[3], validate=True)
        want = base64.b64decode(parts[4], validate=True)
    except ValueError:
        return False
    got = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, int(parts[2]), len(want))
    return hmac.compare_digest(got, want)


def render_password_file(entries: Mapping[str, str]) -> str:
    """``user:hash`` lines, sorted by user (``entries`` maps user -> ``$7$`` hash)."""
    for user in entries:
        if not user or ":" in user or any(ch.isspace() for ch in user):
            raise ValueError(f"user name {user!r} cannot be written to a mosquitto password file")
    return "".join(f"{user}:{entries[user]}\n" for user in sorted(entries))


def render_acl(grants: Mapping[str, Sequence[str]], admin: str | None = ADMIN_USER) -> str:
    """The ACL: each user may read/write only on the channels it is connected to."""
    lines = ["# written by edge-provision serve --mqtt; changes are overwritten", ""]
    if admin:
        lines += [f"user {admin}", "topic readwrite channels/#", ""]
    for user in sorted(grants):
        lines.append(f"user {user}")
        for channel in sorted(set(grants[user])):
            lines.append(f"topic readwrite channels/{channel}/messages")
            lines.append(f"topic readwrite channels/{channel}/messages/#")
        lines.append("")
    return "\n".join(lines)


def render_config(directory: Path, *, host: str, port: int, tls_port: int | None,
                  require_cert: bool, cafile: Path, user: str | None) -> str:  # fmt: skip
    """mosquitto.conf for a lab broker whose files live in ``directory``."""
    lines = [
        "# written by edge-provision serve --mqtt",
        "per_listener_settings false",
        "allow_anonymous false",
        f"password_file {directory / 'passwd'}",
        f"acl_file {directory / 'acl'}",
        "persistence false",
        f"log_dest file {directory / 'mosquitto.log'}",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "connection_messages true",
    ]
    if user:
        lines.append(f"user {user}")
    lines += ["", f"listener {port} {host}"]
    if tls_port is not None:
        lines += [
            "", f"listener {tls_port} {host}",
            f"cafile {cafile}",
            f"certfile {directory / 'server.crt'}",
            f"keyfile {directory / 'server.key'}",
        ]  # fmt: skip
        if require_cert:
            lines += ["require_certificate true", f"crlfile {directory / 'crl.pem'}"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the sync


class MosquittoSync:
    """Files (and, unless ``run`` is False, the process) of the lab's mosquitto."""

    def __init__(self, backend: Backend, *, directory: Path, ca_dir: Path, run: bool = True,
                 mosquitto_bin: str = "mosquitto", host: str = "127.0.0.1", port: int = 1883,
                 tls_port: int | None = None, require_cert: bool = False) -> None:  # fmt: skip
        self._backend = backend
        self.directory = Path(directory)
        self._ca_dir = Path(ca_dir)
        self._run = run
        self._bin = mosquitto_bin
        self.host = host
        self.port = port or (free_port(host) if run else 1883)
        self.tls_port = (tls_port or free_port(host)) if tls_port is not None else None
        self.require_cert = require_cert
        self._hashes: dict[str, tuple[str, str]] = {}  # user -> (password, hash)
        self._files: dict[str, str] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._worker: threading.Thread | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self.syncs = 0
        self.reloads = 0
        self.admin_password = ""
        self._crl_serials: list[str] | None = None

    # ---------------------------------------------------------------- public

    @property
    def urls(self) -> tuple[str, ...]:
        """Broker URLs clients use (``tcp://`` and, with TLS, ``ssl://``)."""
        urls = [f"tcp://{self.host}:{self.port}"]
        if self.tls_port is not None:
            urls.append(f"ssl://{self.host}:{self.tls_port}")
        return tuple(urls)

    @property
    def log_path(self) -> Path:
        """The broker's log file."""
        return self.directory / "mosquitto.log"

    def banner_lines(self) -> list[str]:
        """What ``serve`` prints about the broker."""
        if not self._run:
            return [f"mosquitto files: {self.directory} (passwd, acl, crl.pem); "
                    "send your mosquitto SIGHUP after changes"]  # fmt: skip
        lines = [f"mqtt broker: {url}" for url in self.urls]
        secret = self.directory / "admin-password"
        lines.append(f"mqtt admin: user {ADMIN_USER}, password in {secret}")
        return lines

    def start(self) -> None:
        """Write the files, start mosquitto (when running it) and the sync worker."""
        fileio.ensure_private_dir(self.directory)
        self.admin_password = self._load_admin_password()
        if self.tls_port is not None:
            self._ensure_server_cert()
        self.sync_now(signal_broker=False)
        if self._run:
            user = pwd.getpwuid(os.geteuid()).pw_name
            config = render_config(self.directory, host=self.host, port=self.port,
                                   tls_port=self.tls_port, require_cert=self.require_cert,
                                   cafile=self._ca_dir / LocalCA.CERT_FILE, user=user)  # fmt: skip
            fileio.atomic_write(self.directory / "mosquitto.conf", config, mode=fileio.SECRET_MODE)
            self._spawn()
        self._worker = threading.Thread(target=self._loop, name="mosquitto-sync", daemon=True)
        self._worker.start()

    def notify(self, event: str = "changed") -> None:
        """Ask the worker to rebuild the files soon (cheap; safe from any thread)."""
        logger.debug("mosquitto sync requested event=%s", event)
        self._wake.set()

    def sync_now(self, *, signal_broker: bool = True) -> bool:
        """Rebuild the files now; return True if any changed (and the broker was told)."""
        with self._lock:
            files = self._render_all()
            changed = [name for name, text in files.items() if self._files.get(name) != text
                       or not (self.directory / name).exists()]  # fmt: skip
            for name in changed:
                mode = fileio.SECRET_MODE if (self._run or name == "passwd") else fileio.PUBLIC_MODE
                if not self._run and name == "passwd":
                    mode = 0o644  # the operator's mosquitto runs as another user
                fileio.atomic_write(self.directory / name, files[name], mode=mode)
                self._files[name] = files[name]
            self.syncs += 1
            if changed:
                logger.info("mosquitto files updated files=%s", ",".join(sorted(changed)))
            if changed and signal_broker and self._process is not None:
                self._reload()
            return bool(changed)

    def stop(self) -> None:
        """Stop the worker and the broker (bounded)."""
        self._stopping.set()
        self._wake.set()
        if self._worker is not None:
            self._worker.join(timeout=_STOP_TIMEOUT_S)
        with self._lock:
            self._terminate()

    # ---------------------------------------------------------------- internals

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(timeout=30.0)
            if self._stopping.is_set():
                return
            self._wake.clear()
            try:
                self.sync_now()
            except Exception:  # a failing sync must not end the worker
                logger.exception("mosquitto sync failed")

    def _load_admin_password(self) -> str:
        path = self.directory / "admin-password"
        if path.exists():
            try:
                return fileio.read_text(path, "mqtt admin password").strip()
            except ValueError as exc:
                raise StoreError(str(exc)) from None
        password = secrets.token_urlsafe(24)
        fileio.atomic_write(path, password + "\n", mode=fileio.SECRET_MODE)
        return password

    def _ensure_server_cert(self) -> None:
        cert_path, key_path = self.directory / "server.crt", self.directory / "server.key"
        if cert_path.exists() and key_path.exists():
            with contextlib.suppress(Exception):
                info = parse_certificate(cert_path.read_text("ascii"))
                if info.not_after - datetime.now(timezone.utc) > timedelta(days=1):
                    return
        ca = LocalCA.load_or_create(self._ca_dir)
        issued, key_pem = ca.issue_server_cert(["127.0.0.1", "localhost"], _SERVER_CERT_TTL_S)
        fileio.atomic_write(key_path, key_pem, mode=fileio.SECRET_MODE)
        fileio.atomic_write(cert_path, issued.cert_pem, mode=fileio.PUBLIC_MODE)
        logger.info("mqtt server certificate issued serial=%s", issued.serial)

    def _hash_for(self, user: str, password: str) -> str:
        cached = self._hashes.get(user)
        if cached is not None and hmac.compare_digest(cached[0], password):
            return cached[1]
        hashed = hash_password(password)
        self._hashes[user] = (password, hashed)
        return hashed

    def _render_all(self) -> dict[str, str]:
        entries: dict[str, str] = {}
        grants: dict[str, tuple[str, ...]] = {}
        offset = 0
        while True:
            page = self._backend.list_things(offset, _PAGE)
            for thing in page.items:
                entries[thing.id] = self._hash_for(thing.id, thing.key)
                grants[thing.id] = self._backend.connections(thing.id)
            offset += len(page.items)
            if not page.items or offset >= page.total:
                break
        if self._run or self.admin_password:
            entries[ADMIN_USER] = self._hash_for(ADMIN_USER, self.admin_password)
        admin = ADMIN_USER if self.admin_password else None
        files = {"passwd": render_password_file(entries), "acl": render_acl(grants, admin)}
        if self.tls_port is not None or not self._run:
            files["crl.pem"] = self._crl()
        return files

    def _revoked(self) -> list[str]:
        serials: list[str] = []
        offset = 0
        while True:
            page = self._backend.list_certificates(offset, _PAGE)
            serials += [c.serial for c in page.items if c.revoked]
            offset += len(page.items)
            if not page.items or offset >= page.total:
                return serials

    def _crl(self) -> str:
        revoked = sorted(self._revoked())
        previous = self._files.get("crl.pem")
        if previous is not None and self._crl_serials == revoked:
            return previous  # same set: keep the file byte for byte (no reload)
        crl = LocalCA.load_or_create(self._ca_dir).crl_pem(revoked)
        self._crl_serials = revoked
        return crl


    def _spawn(self) -> None:
        conf = self.directory / "mosquitto.conf"
        try:
            process = subprocess.Popen(
                [self._bin, "-c", str(conf)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )  # fmt: skip
        except FileNotFoundError:
            raise ConfigError(
                f"mosquitto executable {self._bin!r} not found; install mosquitto (apt install "
                "mosquitto) or set EDGE_PROVISION_LAB_MOSQUITTO_BIN"
            ) from None
        self._process = process
        ports = [self.port] + ([self.tls_port] if self.tls_port is not None else [])
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            if all(_port_open(self.host, p) for p in ports):
                logger.info("mosquitto started pid=%s urls=%s", process.pid, ",".join(self.urls))
                return
            time.sleep(0.02)
        err = b""
        if process.poll() is not None and process.stderr is not None:
            err = process.stderr.read()[-2000:]
        self._terminate()
        tail = err.decode("utf-8", "replace").strip() or self._log_tail()
        raise ConfigError(
            f"mosquitto did not start on {self.host}:{','.join(map(str, ports))}: {tail}; "
            "pick other ports with --mqtt-port/--mqtt-tls-port"
        )

    def _log_tail(self) -> str:
        try:
            return " | ".join(self.log_path.read_text("utf-8", "replace").splitlines()[-5:])
        except OSError:
            return "no log"

    def _reload(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGHUP)
            self.reloads += 1
            logger.info("mosquitto reloaded pid=%s", self._process.pid)

    def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=_STOP_TIMEOUT_S)
        if process.stderr is not None:
            process.stderr.close()


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False
