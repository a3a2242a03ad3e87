"""Private keys and CSRs: make, serialize and load EC/RSA keys; make a CSR for a key."""

from __future__ import annotations

from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from edge_provision.crypto._x509 import (
    EC_CURVES,
    PEM,
    RSA_BITS,
    PrivateKey,
    cn_name,
    is_int,
    to_bytes,
)
from edge_provision.errors import CertificateError

__all__ = ["KeyType", "PrivateKey", "generate_key", "key_to_pem", "load_key", "make_csr"]

KeyType = Literal["ec", "rsa"]


def generate_key(key_type: str = "ec", key_bits: int | None = None) -> PrivateKey:
    """Make a key: ``ec`` 256/384/521 (default P-256) or ``rsa`` 2048/3072/4096 (e=65537).

    Raises :class:`CertificateError` naming the allowed values for anything else.
    """
    kind = key_type.strip().lower() if isinstance(key_type, str) else key_type
    if kind == "ec":
        bits = 256 if key_bits is None else key_bits
        curve = EC_CURVES.get(bits) if is_int(bits) else None
        if curve is None:
            raise CertificateError(
                f"key_bits {key_bits!r} is not allowed for key_type 'ec'; use 256, 384 or 521"
            )
        return ec.generate_private_key(curve())
    if kind == "rsa":
        bits = RSA_BITS[0] if key_bits is None else key_bits
        if not is_int(bits) or bits not in RSA_BITS:
            raise CertificateError(
                f"key_bits {key_bits!r} is not allowed for key_type 'rsa'; use 2048, 3072 or 4096"
            )
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    raise CertificateError(f"key_type {key_type!r} is not supported; use 'ec' or 'rsa'")


def key_to_pem(key: PrivateKey) -> str:
    """Serialize a private key as unencrypted PKCS#8 PEM (``BEGIN PRIVATE KEY``)."""
    return key.private_bytes(
        PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


def load_key(pem: str | bytes) -> PrivateKey:
    """Load an unencrypted EC or RSA private key (PKCS#8, SEC1 or PKCS#1 PEM).

    Raises :class:`CertificateError` for garbage, encrypted keys and other key types.
    """
    try:
        key = serialization.load_pem_private_key(to_bytes(pem), password=None)
    except TypeError as exc:
        raise CertificateError("private key is encrypted; store it without a passphrase") from exc
    except (ValueError, InvalidSignature) as exc:
        raise CertificateError(
            "not a valid PEM private key (expected '-----BEGIN PRIVATE KEY-----')"
        ) from exc
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise CertificateError(f"unsupported private key type {type(key).__name__}; use EC or RSA")
    return key


def make_csr(key: PrivateKey, common_name: str) -> str:
    """Return a PEM CSR for ``key`` with subject ``CN=<common_name>``, signed with SHA-256."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(cn_name(common_name))
    return builder.sign(key, hashes.SHA256()).public_bytes(PEM).decode("ascii")
