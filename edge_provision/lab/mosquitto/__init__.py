"""The lab broker (``serve --mqtt``): a real mosquitto whose auth follows the lab's things.

Files, in ``<state dir>/mosquitto/`` (or only the first three in ``--mosquitto-config-dir``
for a mosquitto the operator runs)::

    passwd          user = thing id, password = thing key (``$7$`` hashes), the admin
                    and the probe user
    acl             per thing: readwrite on channels/<id>/messages/# of its channels
    crl.pem         revoked client certificates, signed by the lab CA (TLS listener)
    mosquitto.conf  listeners on 127.0.0.1, allow_anonymous false, persistence off,
                    set_tcp_nodelay (no Nagle delay on deliveries);
                    with client certificates the certificate is the identity on the
                    TLS listener (user = CN = thing id, no password)
    server.crt/.key the TLS listener's certificate from the lab CA (127.0.0.1, localhost)
    probe.crt/.key  a client certificate of the probe user (TLS listener check)
    admin-password  password of the "edge-provision-admin" user (readwrite on channels/#)
    mosquitto.pid   the broker's pid (a stale broker of ours is replaced at start)
    mosquitto.log   the broker's log (its connection messages name the sessions)

**Never a lost change.** Every event from :class:`~edge_provision.lab.service.LabService`
(``mapping``, ``revoke``, ``delete``) bumps a request counter and wakes one worker
thread. The worker reads the whole platform at once (``Backend.broker_snapshot``),
renders the files and, if any changed, replaces them atomically and sends mosquitto
one SIGHUP; then it *confirms* the reload: the password file carries a probe user
with a new random password each time, and the reload counts as applied once the
broker accepts that password. mosquitto clears its reload flag after reloading, so a
SIGHUP that lands during a reload is lost; an unconfirmed reload is signalled again.
Changes that arrive meanwhile are coalesced into the next round: one reload in
flight, another after it (never sooner than the last one took, so that the broker
serves its clients between reloads). :meth:`MosquittoSync.wait_applied` returns once
everything requested before the call is in effect.

**Sessions.** mosquitto 2.0.11's reload re-checks the password of every open session
and closes those of users no longer in the file (a deleted thing). Where the certificate
is the identity it re-checks neither password nor CRL: after the reload that removed a
deleted thing or revoked its certificates, the lab takes its sessions on that listener
over and closes them (``_sessions``).

**The limit.** mosquitto 2.0 reads the ACL in time quadratic in the number of users
(see ``_files``): a reload at 5,000 things stalls every client for tens to hundreds of
milliseconds. Beyond that, use ``serve --backend mainflux`` with Mainflux's own MQTT
adapter (``docs/lab-server.md``, "Broker").
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import pwd
import secrets
import ssl
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from edge_provision import fileio
from edge_provision.crypto.pki import LocalCA, parse_certificate
from edge_provision.errors import ConfigError, StoreError
from edge_provision.lab.mosquitto._files import (
    ADMIN_USER,
    PROBE_USER,
    check_password,
    hash_password,
    render_acl,
    render_config,
    render_password_file,
)
from edge_provision.lab.mosquitto._probe import ACCEPTED, connect_once
from edge_provision.lab.mosquitto._process import BrokerProcess
from edge_provision.lab.mosquitto._sessions import SessionLog
from edge_provision.net import free_port

if TYPE_CHECKING:
    from edge_provision.lab.models import Backend, BrokerSnapshot

__all__ = [
    "ADMIN_USER",
    "PROBE_USER",
    "MosquittoSync",
    "check_password",
    "hash_password",
    "render_acl",
    "render_config",
    "render_password_file",
]

logger = logging.getLogger(__name__)

_STOP_TIMEOUT_S = 5.0
_SERVER_CERT_TTL_S = 365 * 86_400
_CONFIRM_MIN_S = 1.0  # re-send SIGHUP if a reload is not confirmed by then (or 3x the last)
_CONFIRM_TRIES = 5
_RESYNC_S = 30.0  # look at the platform this often even without events
_MIN_GAP_S = 0.05


class MosquittoSync:
    """Files and (unless ``run`` is False) the process of the lab's mosquitto."""

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
        self._written: dict[str, str] = {}  # file name -> text last written (passwd w/o probe)
        self._crl: tuple[tuple[str, ...], str] | None = None  # (serials, PEM)
        self._cond = threading.Condition()
        self._requested = 0
        self._applied = 0
        self._kicks: list[tuple[str, str]] = []  # (event, thing id) waiting for a reload
        self._stopping = threading.Event()
        self._worker: threading.Thread | None = None
        self._process: BrokerProcess | None = None
        self._sessions = SessionLog(self.log_path)
        self._probe_password = ""
        self.admin_password = ""
        self.syncs = 0
        """Rounds that read the platform."""
        self.reloads = 0
        """SIGHUPs sent (re-sent ones included)."""
        self.resent = 0
        """Reloads that were not confirmed in time and were signalled again."""
        self.kicked = 0
        """Sessions taken over and closed."""
        self.last_reload_s = 0.0
        """From SIGHUP to the confirmed reload, last time."""

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

    @property
    def pid(self) -> int | None:
        """The broker's pid while it runs."""
        return self._process.pid if self._process is not None else None

    def banner_lines(self) -> list[str]:
        """What ``serve`` prints about the broker (only once it answered, see :meth:`start`)."""
        if not self._run:
            return [f"mosquitto files: {self.directory} (passwd, acl, crl.pem); "
                    "send your mosquitto SIGHUP after changes"]  # fmt: skip
        lines = [f"mqtt broker: {url}" for url in self.urls]
        secret = self.directory / "admin-password"
        lines.append(f"mqtt admin: user {ADMIN_USER}, password in {secret}")
        return lines

    def start(self) -> None:
        """Write the files, start mosquitto and check that it answers; start the worker.

        Runs on a thread that lives as long as the server: the broker dies with it.
        ConfigError if the broker cannot start or does not accept the lab's probe.
        """
        fileio.ensure_private_dir(self.directory)
        self.admin_password = self._load_admin_password()
        if self.tls_port is not None:
            self._ensure_cert("server", server=True)
            if self.require_cert:
                self._ensure_cert("probe", server=False)
        self._apply(self._backend.broker_snapshot(), signal_broker=False)
        if self._run:
            user = pwd.getpwuid(os.geteuid()).pw_name
            config = render_config(self.directory, host=self.host, port=self.port,
                                   tls_port=self.tls_port, require_cert=self.require_cert,
                                   cafile=self._ca_dir / LocalCA.CERT_FILE, user=user)  # fmt: skip
            conf_path = self.directory / "mosquitto.conf"
            fileio.atomic_write(conf_path, config, mode=fileio.SECRET_MODE)
            if self.log_path.exists():
                os.replace(self.log_path, self.directory / "mosquitto.log.1")
            ports = [self.port] + ([self.tls_port] if self.tls_port is not None else [])
            self._process = BrokerProcess(self._bin, conf_path, self.directory / "mosquitto.pid",
                                          self.log_path, self.host, ports)  # fmt: skip
            self._process.start()
            try:
                self._verify()
            except BaseException:
                self._process.stop()
                raise
        self._worker = threading.Thread(target=self._loop, name="mosquitto-sync", daemon=True)
        self._worker.start()

    def notify(self, event: str = "changed", thing_id: str | None = None) -> None:
        """Ask the worker to bring the broker in step soon (cheap; safe from any thread)."""
        logger.debug("mosquitto sync requested event=%s", event)
        with self._cond:
            self._requested += 1
            if thing_id is not None and event in ("delete", "revoke"):
                self._kicks.append((event, thing_id))
            self._cond.notify_all()

    def wait_applied(self, timeout_s: float = 30.0) -> bool:
        """Wait until every change notified before this call is in effect in the broker."""
        with self._cond:
            target = self._requested
            return self._cond.wait_for(lambda: self._applied >= target, timeout_s)

    def sync_now(self) -> bool:
        """Bring the files (and the broker) in step now; True if anything changed."""
        return self._apply(self._backend.broker_snapshot(), signal_broker=True)

    def stop(self) -> None:
        """Stop the worker and the broker (bounded)."""
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=_STOP_TIMEOUT_S)
        if self._process is not None:
            self._process.stop()

    # ---------------------------------------------------------------- the worker

    def _loop(self) -> None:
        while not self._stopping.is_set():
            with self._cond:
                self._cond.wait_for(lambda: self._requested > self._applied
                                    or self._stopping.is_set(), _RESYNC_S)  # fmt: skip
                target, kicks, self._kicks = self._requested, self._kicks, []
            if self._stopping.is_set():
                return
            try:
                self._apply(self._backend.broker_snapshot(), signal_broker=True)
                self._kick(kicks)
            except Exception:  # a failing round must not end the worker: retried below
                logger.exception("mosquitto sync failed; retrying in 1 s")
                with self._cond:
                    self._kicks[:0] = kicks
                self._stopping.wait(1.0)
                continue
            with self._cond:
                self._applied = max(self._applied, target)
                self._cond.notify_all()
            # let the broker serve its clients between two reloads
            self._stopping.wait(max(_MIN_GAP_S, self.last_reload_s))

    def _apply(self, snapshot: BrokerSnapshot, *, signal_broker: bool) -> bool:
        self.syncs += 1
        entries: dict[str, str] = {}
        grants: dict[str, tuple[str, ...]] = {}
        for account in snapshot.accounts:
            entries[account.thing_id] = self._hash_for(account.thing_id, account.thing_key)
            grants[account.thing_id] = account.channels
        if self._run or self.admin_password:
            entries[ADMIN_USER] = self._hash_for(ADMIN_USER, self.admin_password)
        for user in set(self._hashes) - set(entries):
            del self._hashes[user]
        admin = ADMIN_USER if self.admin_password else None
        files = {"passwd": render_password_file(entries), "acl": render_acl(grants, admin)}
        if self.tls_port is not None or not self._run:
            files["crl.pem"] = self._crl_pem(snapshot.revoked)
        changed = [name for name, text in files.items() if self._written.get(name) != text
                   or not (self.directory / name).exists()]  # fmt: skip
        if not changed:
            return False
        written = dict(files)
        if self._run:  # a new probe password proves the next reload (see the module doc)
            self._probe_password = secrets.token_urlsafe(18)
            files["passwd"] = render_password_file(
                {**entries, PROBE_USER: hash_password(self._probe_password)})
            changed = sorted(set(changed) | {"passwd"})
        for name in changed:
            mode = 0o644 if (not self._run and name == "passwd") else (
                fileio.SECRET_MODE if self._run or name == "passwd" else fileio.PUBLIC_MODE)
            # the operator's mosquitto runs as another user: its passwd must be readable
            fileio.atomic_write(self.directory / name, files[name], mode=mode)
        self._written.update(written)
        logger.info("mosquitto files updated files=%s things=%d", ",".join(changed),
                    len(snapshot.accounts))  # fmt: skip
        if signal_broker and self._process is not None:
            self._reload()
        return True

    def _reload(self) -> None:
        """SIGHUP, then wait until the broker accepts the new probe password (re-send if not)."""
        assert self._process is not None
        for _ in range(_CONFIRM_TRIES):
            started = time.monotonic()
            self._process.hup()
            self.reloads += 1
            deadline = started + max(_CONFIRM_MIN_S, 3 * self.last_reload_s)
            while time.monotonic() < deadline and not self._stopping.is_set():
                if self._probe_accepted(deadline - time.monotonic()):
                    self.last_reload_s = time.monotonic() - started
                    logger.info("mosquitto reloaded pid=%s reload_ms=%.0f", self._process.pid,
                                self.last_reload_s * 1000)  # fmt: skip
                    return
                time.sleep(0.01)
            if self._stopping.is_set():
                return
            self.resent += 1
            logger.warning("mosquitto reload not confirmed; signalling again pid=%s",
                           self._process.pid)  # fmt: skip
        raise StoreError(f"mosquitto (pid {self._process.pid}) did not apply its files after "
                         f"{_CONFIRM_TRIES} SIGHUPs; see {self.log_path}")  # fmt: skip

    def _probe_accepted(self, timeout_s: float) -> bool:
        try:
            code = connect_once(self.host, self.port, client_id=f"{PROBE_USER}-{os.getpid()}",
                                username=PROBE_USER, password=self._probe_password,
                                timeout_s=max(0.05, timeout_s))  # fmt: skip
        except OSError:
            return False
        return code == ACCEPTED

    def _verify(self) -> None:
        """The broker on our ports is ours and applies our files: the probe is accepted."""
        deadline = time.monotonic() + 5.0
        while not self._probe_accepted(1.0):
            if time.monotonic() > deadline:
                raise ConfigError(
                    f"the mqtt broker on {self.host}:{self.port} does not accept the lab's "
                    f"probe user; see {self.log_path}")
            time.sleep(0.05)
        if self.tls_port is None:
            return
        context = ssl.create_default_context(cafile=str(self._ca_dir / LocalCA.CERT_FILE))
        if self.require_cert:
            context.load_cert_chain(self.directory / "probe.crt", self.directory / "probe.key")
        try:
            code = connect_once(self.host, self.tls_port, client_id=f"{PROBE_USER}-tls",
                                username=PROBE_USER, password=self._probe_password,
                                tls=context, timeout_s=5.0)  # fmt: skip
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"the mqtt TLS listener {self.host}:{self.tls_port} does not "
                              f"answer with the lab CA: {exc}") from None  # fmt: skip
        if code != ACCEPTED:
            raise ConfigError(f"the mqtt TLS listener {self.host}:{self.tls_port} refused the "
                              f"lab's probe (CONNACK {code}); see {self.log_path}")  # fmt: skip

    def _kick(self, kicks: list[tuple[str, str]]) -> None:
        """Close the sessions the last reload took the right from (see ``_sessions``)."""
        if not kicks or self._process is None or self.tls_port is None or not self.require_cert:
            return  # the reload itself re-checked the passwords of every open session
        self._sessions.refresh()
        for event, thing_id in kicks:
            for client_id in self._sessions.client_ids(thing_id, (self.tls_port,)):
                with contextlib.suppress(OSError):
                    connect_once(self.host, self.port, client_id=client_id, username=ADMIN_USER,
                                 password=self.admin_password)  # fmt: skip
                    self._sessions.forget(client_id)
                    self.kicked += 1
                    logger.info("mqtt session closed thing_id=%s event=%s", thing_id, event)

    # ---------------------------------------------------------------- files

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

    def _ensure_cert(self, name: str, *, server: bool) -> None:
        cert_path, key_path = self.directory / f"{name}.crt", self.directory / f"{name}.key"
        if cert_path.exists() and key_path.exists():
            with contextlib.suppress(Exception):
                info = parse_certificate(cert_path.read_text("ascii"))
                if info.not_after - datetime.now(timezone.utc) > timedelta(days=1):
                    return
        ca = LocalCA.load_or_create(self._ca_dir)
        if server:
            issued, key_pem = ca.issue_server_cert(["127.0.0.1", "localhost"], _SERVER_CERT_TTL_S)
        else:
            issued, key_pem = ca.issue(common_name=PROBE_USER, key_type="ec", key_bits=None,
                                       ttl_s=_SERVER_CERT_TTL_S)  # fmt: skip
        fileio.atomic_write(key_path, key_pem, mode=fileio.SECRET_MODE)
        fileio.atomic_write(cert_path, issued.cert_pem, mode=fileio.PUBLIC_MODE)
        logger.info("mqtt %s certificate issued serial=%s", name, issued.serial)

    def _hash_for(self, user: str, password: str) -> str:
        cached = self._hashes.get(user)
        if cached is not None and hmac.compare_digest(cached[0], password):
            return cached[1]
        hashed = hash_password(password)
        self._hashes[user] = (password, hashed)
        return hashed

    def _crl_pem(self, revoked: tuple[str, ...]) -> str:
        if self._crl is not None and self._crl[0] == revoked:
            return self._crl[1]  # same set: the same bytes (no reload)
        pem = LocalCA.load_or_create(self._ca_dir).crl_pem(revoked)
        self._crl = (revoked, pem)
        return pem

