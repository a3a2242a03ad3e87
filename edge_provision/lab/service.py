"""The lab mapping service: layout plan -> backend, idempotency, certificates, auth.

Everything here is HTTP-free: :mod:`edge_provision.lab.http` parses requests,
calls one method and renders the returned JSON-ready dict. What a gateway calls --
:meth:`LabService.provision`, :meth:`~LabService.bootstrap`,
:meth:`~LabService.bootstrap_secure` and :meth:`~LabService.sign_csr` -- are
coroutines (the hot paths, awaited on the event loop); every other method blocks and
is called from a worker thread. Failures are raised as :mod:`edge_provision.errors`
classes that the app maps to status codes:

=========================  ======
``Unauthorized``           401
``AlreadyProvisioned``     409
``Rejected``               400
``CertificateError``       400
``ConfigError``            400 (a plan the layout cannot make for this request)
``StoreError``             503
``ServiceUnavailable``     503 (the platform behind the lab; ``Retry-After``)
=========================  ======

"Not found" is a ``None`` return, so that unknown ids and wrong keys can be
answered identically.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

from edge_provision import __version__
from edge_provision.clock import rfc3339
from edge_provision.crypto import bootstrap_cipher
from edge_provision.crypto.pki import IssuedCert, LocalCA
from edge_provision.errors import AlreadyProvisioned, ProtocolError, Unauthorized
from edge_provision.lab._turn_log import TurnLog
from edge_provision.lab.auth import THING_SCHEMES, AuthOutcome, check_token, extract_credential
from edge_provision.lab.models import (
    Backend,
    BootstrapRecord,
    CertRecord,
    ChannelRecord,
    MappingRecord,
    Page,
    ThingRecord,
)
from edge_provision.layout import Layout, PlannedCertificate, plan
from edge_provision.metrics import CounterSet, Metric, lab_metrics, render

__all__ = ["LOG_INTERVAL_S", "OWNER", "LabService", "ServiceInfo"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

LOG_INTERVAL_S = 1.0
"""Created mappings and signed certificates are logged one line per kind per second at most."""

OWNER = "admin"
"""Owner recorded on every entity: the lab server has one operator."""

_USER_HINT = "send 'Authorization: Bearer <token>' (or Token/ApiKey/bare) with the lab API token"
_THING_HINT = "send 'Authorization: Thing <key>' (or the bare key)"


@dataclass(frozen=True)
class ServiceInfo:
    """What the server prints at start: where things are and how to authenticate."""

    layout_source: str
    things: int
    channels: int
    db_path: Path
    ca_path: Path
    auth_hint: str
    x509_provision: bool
    backend: str = "embedded"
    """Which backend (``/health`` says it too)."""
    backend_banner: tuple[str, ...] = ()
    """How the backend describes itself at start (``database: ...``)."""
    certs: str = "lab-ca"
    """Who signs certificates: the lab's own CA (``/health``)."""
    header_required: bool = True
    """False with a configured token: ``POST /mapping`` without a header is let through."""


def _thing_json(thing: ThingRecord) -> dict[str, object]:
    return {"id": thing.id, "name": thing.name, "key": thing.key, "metadata": thing.metadata}


def _channel_json(channel: ChannelRecord) -> dict[str, object]:
    return {"id": channel.id, "name": channel.name, "metadata": channel.metadata}


def _cert_json(cert: CertRecord) -> dict[str, object]:
    return {
        "thing_id": cert.thing_id,
        "cert_serial": cert.serial,
        "not_before": rfc3339(cert.not_before),
        "expiration": rfc3339(cert.not_after),
        "revoked": cert.revoked,
    }


class LabService:
    """One lab platform: a backend, a local CA, a layout and the operator token."""

    def __init__(
        self,
        *,
        backend: Backend,
        ca: LocalCA,
        layout: Layout,
        token: str,
        header_required: bool,
        encrypt_key: bytes,
        info: ServiceInfo,
        max_body_bytes: int = 65536,
    ) -> None:
        self._backend = backend
        self._ca = ca
        self._layout = layout
        self._token = token
        self._header_required = header_required
        self._encrypt_key = encrypt_key
        self._max_ttl_s = layout.cert.ttl_s
        self._close_lock = threading.Lock()
        self._closed = False
        self.info = info
        self.max_body_bytes = max_body_bytes
        self.internal_errors = 0
        """Requests that ended in a 500 (the app counts them; tests expect 0)."""
        self.counters = CounterSet()
        """What ``/metrics`` reports: mappings, bootstrap fetches, certificates, HTTP statuses."""
        self._content = layout.bootstrap.content or {}
        self._listeners: list[Callable[[str, str | None], None]] = []
        self._mappings_log: TurnLog[tuple[str, int, int]] = TurnLog(
            logger, _mappings_line, interval_s=LOG_INTERVAL_S)
        self._certificates_log: TurnLog[tuple[str, str, int]] = TurnLog(
            logger, _certs_line, interval_s=LOG_INTERVAL_S)
        self.health_body = json.dumps({
            "status": "pass",
            "version": __version__,
            "commit": "",
            "description": "edge-provision lab provision service",
            "build_time": "",
            "csr": True,
            "backend": info.backend,
            "certs": info.certs,
        }).encode()

    # ------------------------------------------------------------------ plumbing

    @property
    def backend(self) -> Backend:
        """The platform backend (tests and benchmarks inspect it)."""
        return self._backend

    @property
    def layout(self) -> Layout:
        """The effective layout (file or built-in, with settings applied)."""
        return self._layout

    @property
    def ca_pem(self) -> str:
        """The lab CA certificate, PEM."""
        return self._ca.cert_pem

    def add_listener(self, callback: Callable[[str, str | None], None]) -> None:
        """Call ``callback(event, thing_id)`` after things or certificates changed.

        Events: ``mapping`` (new things; thing_id None), ``revoke`` (the
        certificates of thing_id), ``delete`` (thing_id removed). Callbacks run on
        the request's worker thread or on the event loop: they must be quick (set
        an event).
        """
        self._listeners.append(callback)

    def _changed(self, event: str, thing_id: str | None = None) -> None:
        for callback in tuple(self._listeners):
            try:
                callback(event, thing_id)
            except Exception:  # a listener's bug must not fail the request
                logger.exception("change listener failed event=%s", event)

    def close(self) -> None:
        """Close the backend; safe to call more than once."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self.flush_log()
        self._backend.close()

    # ---------------------------------------------------------------------- auth

    def check_operator(self, header: str | None, *, for_mapping: bool = False) -> None:
        """Raise :class:`Unauthorized` unless ``header`` carries the operator token.

        ``for_mapping``: on ``POST /mapping`` a configured token (as upstream's
        ``MF_PROVISION_API_KEY``) lets requests without a header through.
        """
        required = self._header_required or not for_mapping
        outcome = check_token(header, self._token, header_required=required)
        if outcome is AuthOutcome.OK:
            return
        if outcome is AuthOutcome.MISSING:
            raise Unauthorized(f"missing Authorization header; {_USER_HINT}")
        if outcome is AuthOutcome.MALFORMED:
            raise Unauthorized(f"unreadable Authorization header; {_USER_HINT}")
        raise Unauthorized(f"wrong API token in the Authorization header; {_USER_HINT}")

    # ----------------------------------------------------------------- /mapping

    async def provision(
        self, external_id: str, external_key: str, name: str | None
    ) -> dict[str, object]:
        """Run (or repeat) the mapping for a gateway; the upstream 201 body.

        Awaited on the event loop (the backend decides how it waits for its
        platform; see :class:`~edge_provision.lab.models.Backend`).
        """
        run = plan(self._layout, external_id, external_key, name)
        issuer = self._issue_certs if run.certificates else None
        try:
            record = await self._backend.provision(run, owner=OWNER, issue_certs=issuer)
        except AlreadyProvisioned:
            raise _already_provisioned(external_id) from None
        if record.created:
            self._created(record, external_id)
        return self._mapping_body(record)

    def _created(self, record: MappingRecord, external_id: str) -> None:
        self.counters.inc("mappings_total")
        if record.client_certs:
            self.counters.inc("certificates_issued_total", len(record.client_certs))
        self._changed("mapping")
        self._mappings_log.add((external_id, len(record.things), len(record.channels)))

    def flush_log(self) -> None:
        """Log the mappings and certificates reported since the last lines (see
        :mod:`edge_provision.lab._turn_log`)."""
        self._mappings_log.flush()
        self._certificates_log.flush()

    def _issue_certs(
        self, things: Sequence[ThingRecord], planned: Sequence[PlannedCertificate]
    ) -> dict[str, tuple[IssuedCert, str]]:
        """Issue one server-generated key + certificate per planned thing (CN = thing id)."""
        issued: dict[str, tuple[IssuedCert, str]] = {}
        for want in planned:
            thing = things[want.thing_index]
            issued[thing.id] = self._ca.issue(
                common_name=thing.id, key_type=want.key_type, key_bits=want.key_bits,
                ttl_s=want.ttl_s,
            )
        return issued

    @staticmethod
    def _mapping_body(record: MappingRecord) -> dict[str, object]:
        body: dict[str, object] = {
            "things": [_thing_json(t) for t in record.things],
            "channels": [_channel_json(c) for c in record.channels],
        }
        if record.whitelisted:
            body["whitelisted"] = {thing_id: True for thing_id in record.whitelisted}
        if record.client_certs:
            body["client_cert"] = dict(record.client_certs)
        if record.client_keys:
            body["client_key"] = dict(record.client_keys)
        if record.ca_cert:
            body["ca_cert"] = record.ca_cert
        return body

    def bootstrap_content(self) -> dict[str, object]:
        """``GET /mapping``: the layout's ``[bootstrap.content]`` table."""
        return self._content

    # --------------------------------------------------------------- bootstrap

    async def bootstrap(self, external_id: str, header: str | None) -> dict[str, object] | None:
        """Device bootstrap with the external key; None if unknown id OR wrong key."""
        external_key = extract_credential(header, THING_SCHEMES)
        if external_key is None:
            raise Unauthorized(f"missing or unreadable external key; {_THING_HINT}")
        record = await self._backend.bootstrap(external_id, external_key)
        if record is None:
            return None
        self.counters.inc("bootstrap_fetches_total")
        return self._bootstrap_body(record)

    async def bootstrap_secure(self, external_id: str, header: str | None) -> bytes | None:
        """Encrypted device bootstrap: ``iv || AES-CFB(key, json)``, or None."""
        token = extract_credential(header, THING_SCHEMES)
        if token is None:
            raise Unauthorized(
                "missing or unreadable encrypted external key; send 'Authorization: Thing "
                "<hex(iv || AES-CFB(MF_BOOTSTRAP_ENCRYPT_KEY, external_key))>'"
            )
        try:
            blob = bytes.fromhex(token)
            plain_key = bootstrap_cipher.decrypt(self._encrypt_key, blob)
        except (ValueError, ProtocolError):
            raise Unauthorized(
                "the encrypted external key is not hex of IV (16 bytes) || ciphertext; "
                "secure bootstrap expects 'Thing <hex>'"
            ) from None
        try:
            external_key = plain_key.decode("utf-8")
        except UnicodeDecodeError:
            return None  # another MF_BOOTSTRAP_ENCRYPT_KEY: same answer as a wrong key
        record = await self._backend.bootstrap(external_id, external_key)
        if record is None:
            return None
        self.counters.inc("bootstrap_fetches_total")
        plain = json.dumps(self._bootstrap_body(record), separators=(",", ":")).encode()
        return bootstrap_cipher.encrypt(self._encrypt_key, plain)

    @staticmethod
    def _bootstrap_body(record: BootstrapRecord) -> dict[str, object]:
        """0.12 names and the newer ones side by side; empty optional fields omitted."""
        channels = [_channel_json(c) for c in record.channels]
        body: dict[str, object] = {
            "mainflux_id": record.thing_id,
            "mainflux_key": record.thing_key,
            "mainflux_channels": channels,
            "thing_id": record.thing_id,
            "thing_key": record.thing_key,
            "channels": channels,
        }
        for field_name in ("content", "client_cert", "client_key", "ca_cert"):
            value = getattr(record, field_name)
            if value:
                body[field_name] = value
        if record.extra_things:
            body["extra_things"] = [_thing_json(t) for t in record.extra_things]
        return body

    # ------------------------------------------------------------ certificates

    async def sign_csr(
        self, thing_id: str, header: str | None, csr_pem: str, ttl_s: int | None
    ) -> dict[str, object]:
        """Sign a gateway's CSR for ``thing_id`` (CN forced to the thing id).

        Awaited on the event loop; the signature itself is made in a worker thread
        (an RSA CA key takes milliseconds). The certificates the server made for the
        thing (its key generated here, by ``/mapping`` with X.509 on) are revoked: the
        gateway has its own key now.
        """
        thing_key = extract_credential(header, THING_SCHEMES)
        if thing_key is None:
            raise Unauthorized(f"missing or unreadable thing key; {_THING_HINT}")
        if await self._backend.authenticate_thing(thing_id, thing_key) is None:
            raise Unauthorized(
                f"thing id and key do not match; send the key of thing {thing_id!r} "
                "as 'Authorization: Thing <thing_key>'"
            )
        ttl = self._max_ttl_s if ttl_s is None else min(ttl_s, self._max_ttl_s)
        issued = await asyncio.get_running_loop().run_in_executor(
            None, functools.partial(self._ca.sign_csr, csr_pem, common_name=thing_id, ttl_s=ttl))
        revoked = await self._backend.record_certificate(thing_id, issued)
        self.counters.inc("certificates_issued_total")
        self._certificates_log.add((thing_id, issued.serial, ttl))
        if revoked:  # the server-made key is not the gateway's any more
            logger.info("server-made certificates revoked thing_id=%s serials=%s", thing_id,
                        ",".join(revoked))
            self._changed("revoke", thing_id)
        return {
            "thing_id": thing_id,
            "client_cert": issued.cert_pem,
            "cert_serial": issued.serial,
            "expiration": rfc3339(issued.not_after),
            "ca_cert": issued.ca_pem,
        }

    def metrics_text(self) -> str:
        """Prometheus exposition of the counters plus the platform's entity counts."""
        gauges = [
            Metric(f"edge_provision_lab_{name}", f"{name.replace('_', ' ')} on the platform",
                   "gauge", [({}, float(count))])
            for name, count in sorted(self._backend.counts().items())
        ]  # fmt: skip
        return render([*lab_metrics(self.counters), *gauges, *self._backend.metrics()])

    def revoke(self, thing_id: str) -> dict[str, object]:
        """Revoke every certificate of ``thing_id``."""
        serials = self._backend.revoke_certificates(thing_id)
        logger.info("certificates revoked thing_id=%s count=%d", thing_id, len(serials))
        self._changed("revoke", thing_id)
        return {"revoked": list(serials)}

    def delete_thing(self, thing_id: str) -> None:
        """Remove a thing from the platform (and, through the listeners, from the broker).

        Mainflux's ``DELETE /things/{id}``: an unknown id is no error (idempotent).
        """
        deleted = self._backend.delete_thing(thing_id)
        if deleted is None:
            logger.info("thing delete: no such thing thing_id=%.80r", thing_id)
            return
        self._changed("delete", thing_id)

    def certificate(self, serial: str) -> dict[str, object] | None:
        """One issued certificate by serial (lower-case hex), or None."""
        record = self._backend.certificate(serial.lower())
        if record is None:
            return None
        body = _cert_json(record)
        body["cert"] = record.cert_pem
        return body

    # ------------------------------------------------------------ operator view

    def list_things(self, offset: int, limit: int) -> dict[str, object]:
        """A page of things (with their keys: operator only, as upstream)."""
        page = self._backend.list_things(offset, limit)
        return _page_body(page, "things", [_thing_json(t) for t in page.items])

    def list_channels(self, offset: int, limit: int) -> dict[str, object]:
        """A page of channels."""
        page = self._backend.list_channels(offset, limit)
        return _page_body(page, "channels", [_channel_json(c) for c in page.items])

    def list_configs(self, offset: int, limit: int) -> dict[str, object]:
        """A page of bootstrap configs, never with external keys or private keys."""
        page = self._backend.list_bootstrap_configs(offset, limit)
        items: list[object] = [
            {
                "external_id": b.external_id,
                "mainflux_id": b.thing_id,
                "mainflux_key": b.thing_key,
                "name": b.name,
                "mainflux_channels": [_channel_json(c) for c in b.channels],
                "content": b.content,
                "state": b.state,
                "has_client_cert": bool(b.client_cert),
            }
            for b in page.items
        ]
        return _page_body(page, "configs", items)

    def list_certificates(self, offset: int, limit: int) -> dict[str, object]:
        """A page of issued certificates (metadata only, no PEM)."""
        page = self._backend.list_certificates(offset, limit)
        return _page_body(page, "certs", [_cert_json(c) for c in page.items])


def _mappings_line(created: list[tuple[str, int, int]]) -> tuple[str, tuple[object, ...]]:
    """One line for the mappings created in a turn: (external_id, things, channels) each."""
    return ("mappings created count=%d things=%d channels=%d external_ids=%s",
            (len(created), sum(c[1] for c in created), sum(c[2] for c in created),
             json.dumps([c[0] for c in created], ensure_ascii=False)))  # fmt: skip


def _certs_line(issued: list[tuple[str, str, int]]) -> tuple[str, tuple[object, ...]]:
    """One line for the certificates signed in a turn: (thing_id, serial, ttl_s) each."""
    return ("certificates issued count=%d thing_ids=%s serials=%s ttl_s=%s",
            (len(issued), json.dumps([c[0] for c in issued]), json.dumps([c[1] for c in issued]),
             json.dumps(sorted({c[2] for c in issued}))))  # fmt: skip


def _already_provisioned(external_id: str) -> AlreadyProvisioned:
    return AlreadyProvisioned(
        f"external_id {external_id!r} is already provisioned with a different "
        "external_key; send the original key (the request is idempotent), or "
        "fetch the configuration with GET /things/bootstrap/<external_id>"
    )


def _page_body(page: Page[T], name: str, items: list[object]) -> dict[str, object]:
    return {"total": page.total, "offset": page.offset, "limit": page.limit, name: items}
