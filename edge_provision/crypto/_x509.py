"""X.509 helpers shared by the modules of :mod:`edge_provision.crypto` (private to it).

PEM handling, the allowed key sizes, subject names, certificate loading, UTC times and
key comparison: what ``keys``, ``pki`` and ``ca`` all need. Foreign exceptions become
:class:`~edge_provision.errors.CertificateError` here.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Union

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from edge_provision.errors import CertificateError

PrivateKey = Union[ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey]
PublicKey = Union[ec.EllipticCurvePublicKey, rsa.RSAPublicKey]

EC_CURVES: dict[int, type[ec.EllipticCurve]] = {
    256: ec.SECP256R1,
    384: ec.SECP384R1,
    521: ec.SECP521R1,
}
EC_CURVE_NAMES = frozenset(curve().name for curve in EC_CURVES.values())
RSA_BITS = (2048, 3072, 4096)
CN_MAX_LEN = 64  # RFC 5280 ub-common-name
PEM = serialization.Encoding.PEM


def is_int(value: object) -> bool:
    """An int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def to_bytes(pem: str | bytes) -> bytes:
    """PEM text as bytes; CertificateError for non-ASCII text."""
    if isinstance(pem, str):
        try:
            return pem.encode("ascii")
        except UnicodeEncodeError:
            raise CertificateError("PEM text contains non-ASCII characters") from None
    return bytes(pem)


def cn_name(common_name: str) -> x509.Name:
    """The subject ``CN=<common_name>``; CertificateError unless 1 to 64 characters."""
    if not isinstance(common_name, str) or not 1 <= len(common_name) <= CN_MAX_LEN:
        size = len(common_name) if isinstance(common_name, str) else type(common_name).__name__
        raise CertificateError(f"common name must be 1 to {CN_MAX_LEN} characters, got {size}")
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def load_cert(pem: str | bytes, what: str = "certificate") -> x509.Certificate:
    """The first certificate of a PEM text; CertificateError naming ``what`` otherwise."""
    try:
        return x509.load_pem_x509_certificate(to_bytes(pem))
    except ValueError as exc:
        raise CertificateError(
            f"{what} is not a valid PEM certificate (expected '-----BEGIN CERTIFICATE-----')"
        ) from exc


def utc_time(cert: x509.Certificate, name: str) -> datetime:
    """``not_valid_before``/``not_valid_after`` as aware UTC on every cryptography version."""
    aware = getattr(cert, f"{name}_utc", None)  # cryptography >= 42
    if isinstance(aware, datetime):
        return aware
    naive: datetime = getattr(cert, name)  # pragma: no cover - cryptography < 42
    return naive.replace(tzinfo=timezone.utc)  # pragma: no cover


def as_utc(now: datetime | None) -> datetime:
    """``now`` as aware UTC (a naive time is taken to be UTC); the current time if None."""
    if now is None:
        return datetime.now(timezone.utc)
    if now.tzinfo is None:
        return now.replace(tzinfo=timezone.utc)
    return now.astimezone(timezone.utc)


def _spki(public_key: object) -> bytes:
    """SubjectPublicKeyInfo DER of an EC or RSA public key (empty for other kinds)."""
    if not isinstance(public_key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
        return b""
    der = serialization.Encoding.DER
    return public_key.public_bytes(der, serialization.PublicFormat.SubjectPublicKeyInfo)


def same_key(cert: x509.Certificate, key: PrivateKey) -> bool:
    """Whether ``cert`` holds the public half of ``key``."""
    theirs = _spki(cert.public_key())
    return bool(theirs) and theirs == _spki(key.public_key())
