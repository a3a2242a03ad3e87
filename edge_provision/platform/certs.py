"""Certificates: the lab server's CSR endpoint and the upstream Certs service.

* :meth:`CertsClient.sign_csr` -- ``POST /certs/csr`` on the edge-provision lab
  server (no Mainflux release has a CSR path): the private key never leaves the
  gateway.
* :meth:`CertsClient.issue` -- ``POST /certs`` on a Mainflux Certs service, which
  generates the key itself. 0.12 returns ``cert``/``cert_key``/``ca_cert``; 0.13
  returns only ``cert`` (unusable: no key); later versions return
  ``client_cert``/``client_key`` (wire contract section 5.3).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from edge_provision.errors import BadReply, ProtocolError
from edge_provision.http import AuthScheme, Credential, HttpClient
from edge_provision.platform.models import parse_rfc3339

__all__ = ["CertsClient", "IssuedCertificate", "SignedCertificate", "normalize_serial"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SignedCertificate:
    """A certificate signed for our own key (``not_after`` is tz-aware UTC)."""

    cert_pem: str
    ca_pem: str
    serial: str
    not_after: datetime


@dataclass(frozen=True)
class IssuedCertificate:
    """A certificate plus the private key the server generated for it."""

    cert_pem: str
    key_pem: str = field(repr=False)
    ca_pem: str
    serial: str
    not_after: datetime | None


def normalize_serial(serial: str) -> str:
    """Lower-case hex without separators (Vault writes ``1a:2b:...``)."""
    return serial.replace(":", "").replace("-", "").strip().lower()


def _go_duration(ttl: str | int) -> str:
    if isinstance(ttl, int):
        if ttl < 1:
            raise ValueError("certificate ttl must be at least 1 second")
        return f"{ttl}s"
    return ttl


class CertsClient:
    """Talk to a certificate endpoint (lab server CSR path, or upstream Certs)."""

    def __init__(self, http: HttpClient, *, auth_scheme: AuthScheme = AuthScheme.AUTO) -> None:
        self._http = http
        self._auth_scheme = auth_scheme

    def supports_csr(self) -> bool:
        """Whether the server signs CSRs: its ``GET /health`` says ``"csr": true``."""
        response = self._http.request("GET", "/health", expected=(200, 404))
        if response.status != 200:
            return False
        try:
            data = response.json()
        except BadReply:
            if response.is_html:  # a captive portal's page says nothing about the server
                raise
            return False  # a plain-text health answer: a server without our CSR path
        return isinstance(data, dict) and data.get("csr") is True

    def sign_csr(
        self, thing_id: str, thing_key: str, csr_pem: str, ttl_s: int | None = None
    ) -> SignedCertificate:
        """Have the lab server sign ``csr_pem`` for ``thing_id`` (authenticated by its key)."""
        body: dict[str, object] = {"thing_id": thing_id, "csr": csr_pem}
        if ttl_s is not None:
            body["ttl_s"] = int(ttl_s)
        response = self._http.request(
            "POST",
            "/certs/csr",
            json_body=body,
            expected=(200, 201),
            auth=Credential("thing", thing_key),
            auth_scheme=self._auth_scheme,
        )
        where = f"{response.url} reply"
        data = response.json_object()
        cert = _pem(data, ("client_cert", "cert"), where, required=True)
        ca = _pem(data, ("ca_cert", "issuing_ca"), where, required=False)
        serial = _text(data, "cert_serial", where, required=True)
        expiration = _text(data, "expiration", where, required=True)
        signed = SignedCertificate(
            cert_pem=cert,
            ca_pem=ca,
            serial=normalize_serial(serial),
            not_after=parse_rfc3339(expiration, f"{where}: expiration"),
        )
        logger.info(
            "certificate signed thing_id=%s serial=%s not_after=%s",
            thing_id,
            signed.serial,
            signed.not_after.isoformat(),
        )
        return signed

    def issue(
        self,
        thing_id: str,
        token: str,
        key_type: str,
        key_bits: int,
        ttl: str | int,
    ) -> IssuedCertificate:
        """Ask an upstream Certs service to generate a key and certificate for ``thing_id``.

        ``ttl`` is a Go duration (``"2400h"``) or seconds. Sent as both ``ttl``
        (0.13+) and ``valid`` (0.12); unknown fields are ignored upstream.
        """
        duration = _go_duration(ttl)
        body: dict[str, object] = {
            "thing_id": thing_id,
            "key_type": key_type,
            "key_bits": key_bits,
            "ttl": duration,
            "valid": duration,
        }
        response = self._http.request(
            "POST",
            "/certs",
            json_body=body,
            expected=(200, 201),
            auth=Credential("user", token),
            auth_scheme=self._auth_scheme,
        )
        where = f"{response.url} reply"
        data = response.json_object()
        cert = _pem(data, ("client_cert", "cert"), where, required=True)
        key = _pem(data, ("client_key", "cert_key"), where, required=False)
        if not key:
            raise ProtocolError(
                f"{where}: this Certs service (0.13) does not return the private key; use a "
                "newer Certs or the lab server's CSR path"
            )
        expiration = _text(data, "expiration", where, required=False)
        issued = IssuedCertificate(
            cert_pem=cert,
            key_pem=key,
            ca_pem=_pem(data, ("ca_cert", "issuing_ca"), where, required=False),
            serial=normalize_serial(_text(data, "cert_serial", where, required=False)),
            not_after=parse_rfc3339(expiration, f"{where}: expiration") if expiration else None,
        )
        logger.info("certificate issued thing_id=%s serial=%s", thing_id, issued.serial)
        return issued


def _text(data: dict[str, object], name: str, where: str, *, required: bool) -> str:
    value = data.get(name)
    if value is None or value == "":
        if required:
            raise ProtocolError(f"{where}: missing {name!r}")
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise ProtocolError(f"{where}: {name!r} must be a string")
    return value


def _pem(data: dict[str, object], names: tuple[str, ...], where: str, *, required: bool) -> str:
    for name in names:
        value = data.get(name)
        if value is None or value == "":
            continue
        if not isinstance(value, str) or "-----BEGIN " not in value:
            raise ProtocolError(f"{where}: {name!r} is not a PEM string")
        return value
    if required:
        raise ProtocolError(f"{where}: missing {' or '.join(repr(n) for n in names)}")
    return ""
