"""Certificate inspection and chain checks; the one import for callers of the crypto zone.

Here: :func:`parse_certificate`, :func:`cert_matches_key` and :func:`verify_chain`, with
which the agent checks what the platform returned. Re-exported so that callers need one
module: keys and CSRs (:mod:`.keys`: :func:`generate_key`, :func:`make_csr` ...) and the
lab server's local CA (:mod:`.ca`: :class:`LocalCA`, :class:`IssuedCert`). Foreign
exceptions (``ValueError``, ``TypeError``, ``InvalidSignature``) become
:class:`CertificateError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from edge_provision.crypto._x509 import as_utc, load_cert, same_key, utc_time
from edge_provision.crypto.ca import CLOCK_SKEW_S, IssuedCert, LocalCA
from edge_provision.crypto.keys import (
    KeyType,
    PrivateKey,
    generate_key,
    key_to_pem,
    load_key,
    make_csr,
)
from edge_provision.errors import CertificateError

__all__ = [
    "CLOCK_SKEW_S",
    "CertInfo",
    "IssuedCert",
    "KeyType",
    "LocalCA",
    "PrivateKey",
    "cert_matches_key",
    "generate_key",
    "key_to_pem",
    "load_key",
    "make_csr",
    "parse_certificate",
    "verify_chain",
]


@dataclass(frozen=True)
class CertInfo:
    """What a certificate says about itself (serial lower hex, times tz-aware UTC)."""

    subject: str
    common_name: str
    serial: str
    not_before: datetime
    not_after: datetime
    issuer: str
    fingerprint_sha256: str


def parse_certificate(pem: str | bytes) -> CertInfo:
    """Describe the first certificate of a PEM text. Raises :class:`CertificateError`."""
    cert = load_cert(pem)
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = attrs[0].value if attrs else ""
    return CertInfo(
        subject=cert.subject.rfc4514_string(),
        common_name=cn.decode("utf-8", "replace") if isinstance(cn, bytes) else cn,
        serial=format(cert.serial_number, "x"),
        not_before=utc_time(cert, "not_valid_before"),
        not_after=utc_time(cert, "not_valid_after"),
        issuer=cert.issuer.rfc4514_string(),
        fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(),
    )


def cert_matches_key(cert_pem: str | bytes, key: str | bytes | PrivateKey) -> bool:
    """Whether the certificate holds the public half of the private key (PEM, or the key
    object itself: no PEM round trip, whose key check costs as much as the comparison).

    Raises :class:`CertificateError` if either input cannot be parsed.
    """
    private = load_key(key) if isinstance(key, (str, bytes)) else key
    return same_key(load_cert(cert_pem), private)


def _verify_signature(cert: x509.Certificate, ca: x509.Certificate) -> None:
    direct = getattr(cert, "verify_directly_issued_by", None)  # cryptography >= 40
    try:
        if direct is not None:
            direct(ca)
            return
        algorithm = cert.signature_hash_algorithm  # pragma: no cover - cryptography < 40
        ca_key = ca.public_key()  # pragma: no cover
        if algorithm is None:  # pragma: no cover
            raise TypeError("signature algorithm without hash")
        if isinstance(ca_key, ec.EllipticCurvePublicKey):  # pragma: no cover
            ca_key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(algorithm))
        elif isinstance(ca_key, rsa.RSAPublicKey):  # pragma: no cover
            ca_key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), algorithm)
        else:  # pragma: no cover
            raise TypeError(f"unsupported CA key type {type(ca_key).__name__}")
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise CertificateError(
            "certificate is not signed by the given CA: the signature does not verify "
            "with the CA's public key"
        ) from exc


def _check_validity(cert: x509.Certificate, now: datetime, what: str) -> None:
    not_before = utc_time(cert, "not_valid_before")
    not_after = utc_time(cert, "not_valid_after")
    if now < not_before:
        raise CertificateError(
            f"{what} is not yet valid: valid from {not_before.isoformat()}, now is "
            f"{now.isoformat()}; check the system clock"
        )
    if now > not_after:
        raise CertificateError(f"{what} expired at {not_after.isoformat()}; renew it")


def verify_chain(cert_pem: str | bytes, ca_pem: str | bytes, now: datetime | None = None) -> None:
    """Check that ``ca_pem`` issued ``cert_pem`` and both are valid at ``now``.

    In order: issuer name equals the CA subject; the signature verifies with
    the CA key; the CA is not marked ``ca=false``; neither certificate is
    expired or not yet valid (``now`` defaults to the current time, a naive
    ``now`` is UTC). Raises :class:`CertificateError` with the precise reason.
    """
    cert = load_cert(cert_pem)
    ca = load_cert(ca_pem, "CA certificate")
    when = as_utc(now)
    if cert.issuer != ca.subject:
        raise CertificateError(
            f"certificate is not signed by the given CA: issuer "
            f"'{cert.issuer.rfc4514_string()}' differs from the CA subject "
            f"'{ca.subject.rfc4514_string()}'"
        )
    _verify_signature(cert, ca)
    try:
        is_ca = ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = True  # old roots without BasicConstraints: trust the caller's choice
    if not is_ca:
        raise CertificateError("the given CA certificate is not a CA (BasicConstraints ca=false)")
    _check_validity(cert, when, "certificate")
    _check_validity(ca, when, "CA certificate")
