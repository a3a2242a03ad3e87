"""Key generation and loading plus the low-level X.509 helpers shared by pki and _ca."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal, Union

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from edge_provision.errors import CertificateError

__all__ = ["KeyType", "PrivateKey", "generate_key", "key_to_pem", "load_key"]

KeyType = Literal["ec", "rsa"]
PrivateKey = Union[ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey]

_EC_CURVES: dict[int, type[ec.EllipticCurve]] = {
    256: ec.SECP256R1,
    384: ec.SECP384R1,
    521: ec.SECP521R1,
}
_RSA_BITS = (2048, 3072, 4096)
_CN_MAX_LEN = 64  # RFC 5280 ub-common-name
_PEM = serialization.Encoding.PEM


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def generate_key(key_type: str = "ec", key_bits: int | None = None) -> PrivateKey:
    """Make a key: ``ec`` 256/384/521 (default P-256) or ``rsa`` 2048/3072/4096 (e=65537).

    Raises :class:`CertificateError` naming the allowed values for anything else.
    """
    kind = key_type.strip().lower() if isinstance(key_type, str) else key_type
    if kind == "ec":
        bits = 256 if key_bits is None else key_bits
        curve = _EC_CURVES.get(bits) if _is_int(bits) else None
        if curve is None:
            raise CertificateError(
                f"key_bits {key_bits!r} is not allowed for key_type 'ec'; use 256, 384 or 521"
            )
        return ec.generate_private_key(curve())
    if kind == "rsa":
        bits = 2048 if key_bits is None else key_bits
        if not _is_int(bits) or bits not in _RSA_BITS:
            raise CertificateError(
                f"key_bits {key_bits!r} is not allowed for key_type 'rsa'; use 2048, 3072 or 4096"
            )
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    raise CertificateError(f"key_type {key_type!r} is not supported; use 'ec' or 'rsa'")


def key_to_pem(key: PrivateKey) -> str:
    """Serialize a private key as unencrypted PKCS#8 PEM (``BEGIN PRIVATE KEY``)."""
    return key.private_bytes(
        _PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


def _to_bytes(pem: str | bytes) -> bytes:
    if isinstance(pem, str):
        try:
            return pem.encode("ascii")
        except UnicodeEncodeError:
            raise CertificateError("PEM text contains non-ASCII characters") from None
    return bytes(pem)


def load_key(pem: str | bytes) -> PrivateKey:
    """Load an unencrypted EC or RSA private key (PKCS#8, SEC1 or PKCS#1 PEM).

    Raises :class:`CertificateError` for garbage, encrypted keys and other key types.
    """
    try:
        key = serialization.load_pem_private_key(_to_bytes(pem), password=None)
    except TypeError as exc:
        raise CertificateError("private key is encrypted; store it without a passphrase") from exc
    except (ValueError, InvalidSignature) as exc:
        raise CertificateError(
            "not a valid PEM private key (expected '-----BEGIN PRIVATE KEY-----')"
        ) from exc
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise CertificateError(f"unsupported private key type {type(key).__name__}; use EC or RSA")
    return key


def _cn_name(common_name: str) -> x509.Name:
    if not isinstance(common_name, str) or not 1 <= len(common_name) <= _CN_MAX_LEN:
        size = len(common_name) if isinstance(common_name, str) else type(common_name).__name__
        raise CertificateError(f"common name must be 1 to {_CN_MAX_LEN} characters, got {size}")
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])



def _load_cert(pem: str | bytes, what: str = "certificate") -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(_to_bytes(pem))
    except ValueError as exc:
        raise CertificateError(
            f"{what} is not a valid PEM certificate (expected '-----BEGIN CERTIFICATE-----')"
        ) from exc


def _utc_time(cert: x509.Certificate, name: str) -> datetime:
    """``not_valid_before``/``not_valid_after`` as aware UTC on every cryptography version."""
    aware = getattr(cert, f"{name}_utc", None)  # cryptography >= 42
    if isinstance(aware, datetime):
        return aware
    naive: datetime = getattr(cert, name)  # pragma: no cover - cryptography < 42
    return naive.replace(tzinfo=timezone.utc)  # pragma: no cover


def _as_utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(timezone.utc)
    if now.tzinfo is None:  # a naive time is taken to be UTC
        return now.replace(tzinfo=timezone.utc)
    return now.astimezone(timezone.utc)



def _spki(public_key: object) -> bytes:
    """SubjectPublicKeyInfo DER of an EC or RSA public key (empty for other kinds)."""
    if not isinstance(public_key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
        return b""
    der = serialization.Encoding.DER
    return public_key.public_bytes(der, serialization.PublicFormat.SubjectPublicKeyInfo)


def _same_key(cert: x509.Certificate, key: PrivateKey) -> bool:
    theirs = _spki(cert.public_key())
    return bool(theirs) and theirs == _spki(key.public_key())

