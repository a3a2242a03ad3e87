"""Keys, CSRs, certificate checks and a small local CA.

The agent makes keys and CSRs and checks what the platform returned; the lab
server uses :class:`LocalCA` to issue client certificates the way the Mainflux
Certs service does (key generated server-side, common name = thing key) and
TLS certificates for its own listener. Foreign exceptions (``ValueError``,
``TypeError``, ``InvalidSignature``) become :class:`CertificateError` here.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Literal, Union

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge_provision import _fs
from edge_provision.errors import CertificateError, StoreError

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

logger = logging.getLogger(__name__)

KeyType = Literal["ec", "rsa"]
PrivateKey = Union[ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey]
_PublicKey = Union[ec.EllipticCurvePublicKey, rsa.RSAPublicKey]

CLOCK_SKEW_S = 60
"""Issued certificates start this many seconds in the past (slow device clocks)."""

_EC_CURVES: dict[int, type[ec.EllipticCurve]] = {
    256: ec.SECP256R1,
    384: ec.SECP384R1,
    521: ec.SECP521R1,
}
_EC_CURVE_NAMES = frozenset(("secp256r1", "secp384r1", "secp521r1"))
_RSA_BITS = (2048, 3072, 4096)
_CN_MAX_LEN = 64  # RFC 5280 ub-common-name
_PEM = serialization.Encoding.PEM

# --------------------------------------------------------------------------- keys and CSRs


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


def make_csr(key: PrivateKey, common_name: str) -> str:
    """Return a PEM CSR for ``key`` with subject ``CN=<common_name>``, signed with SHA-256."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(_cn_name(common_name))
    return builder.sign(key, hashes.SHA256()).public_bytes(_PEM).decode("ascii")


# --------------------------------------------------------------------------- inspection


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


def parse_certificate(pem: str | bytes) -> CertInfo:
    """Describe the first certificate of a PEM text. Raises :class:`CertificateError`."""
    cert = _load_cert(pem)
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = attrs[0].value if attrs else ""
    return CertInfo(
        subject=cert.subject.rfc4514_string(),
        common_name=cn.decode("utf-8", "replace") if isinstance(cn, bytes) else cn,
        serial=format(cert.serial_number, "x"),
        not_before=_utc_time(cert, "not_valid_before"),
        not_after=_utc_time(cert, "not_valid_after"),
        issuer=cert.issuer.rfc4514_string(),
        fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(),
    )


def _spki(public_key: object) -> bytes:
    """SubjectPublicKeyInfo DER of an EC or RSA public key (empty for other kinds)."""
    if not isinstance(public_key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
        return b""
    der = serialization.Encoding.DER
    return public_key.public_bytes(der, serialization.PublicFormat.SubjectPublicKeyInfo)


def _same_key(cert: x509.Certificate, key: PrivateKey) -> bool:
    theirs = _spki(cert.public_key())
    return bool(theirs) and theirs == _spki(key.public_key())


def cert_matches_key(cert_pem: str | bytes, key_pem: str | bytes) -> bool:
    """Whether the certificate holds the public half of the private key.

    Raises :class:`CertificateError` if either input cannot be parsed.
    """
    return _same_key(_load_cert(cert_pem), load_key(key_pem))


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
    not_before = _utc_time(cert, "not_valid_before")
    not_after = _utc_time(cert, "not_valid_after")
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
    cert = _load_cert(cert_pem)
    ca = _load_cert(ca_pem, "CA certificate")
    when = _as_utc(now)
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


# --------------------------------------------------------------------------- local CA


@dataclass(frozen=True)
class IssuedCert:
    """A certificate issued by :class:`LocalCA` (serial lower hex, times tz-aware UTC)."""

    cert_pem: str
    serial: str
    not_before: datetime
    not_after: datetime
    ca_pem: str


def _check_public_key(public_key: object) -> _PublicKey:
    """Refuse weak keys (RSA < 2048), curves other than P-256/384/521 and other key kinds."""
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < _RSA_BITS[0]:
            raise CertificateError(
                f"RSA key of {public_key.key_size} bits is too weak; use at least 2048 bits"
            )
        return public_key
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if public_key.curve.name not in _EC_CURVE_NAMES:
            raise CertificateError(
                f"EC curve {public_key.curve.name} is not allowed; use P-256, P-384 or P-521"
            )
        return public_key
    raise CertificateError(f"unsupported public key type {type(public_key).__name__}; use EC/RSA")


def _check_ttl(ttl_s: int) -> None:
    if not _is_int(ttl_s) or ttl_s < 1:
        raise CertificateError(f"certificate ttl must be whole seconds >= 1, got {ttl_s!r}")


def _key_usage(*, ca: bool, key_encipherment: bool = False) -> x509.KeyUsage:
    """keyCertSign + cRLSign for a CA; digitalSignature (+keyEncipherment for RSA) for a leaf."""
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


class LocalCA:
    """A self-signed CA kept as ``ca.key`` (0600) and ``ca.crt`` (0644) in one directory.

    Thread safety: the object never changes after construction and signing only
    reads the CA key and certificate, so one instance may sign from many threads
    at once. :meth:`load_or_create` holds an exclusive lock on ``.ca.lock`` in
    the directory so that racing threads or processes create a single CA.
    """

    KEY_FILE = "ca.key"
    CERT_FILE = "ca.crt"
    LOCK_FILE = ".ca.lock"

    def __init__(self, key: PrivateKey, cert: x509.Certificate) -> None:
        """Wrap a CA key and its certificate (CertificateError if they do not match)."""
        if not _same_key(cert, key):
            raise CertificateError("CA certificate does not match the CA private key")
        self._key = key
        self._cert = cert
        self._ski = x509.SubjectKeyIdentifier.from_public_key(_check_public_key(key.public_key()))
        self._cert_pem = cert.public_bytes(_PEM).decode("ascii")

    @property
    def cert_pem(self) -> str:
        """The CA certificate, PEM (what clients must trust)."""
        return self._cert_pem

    @property
    def not_after(self) -> datetime:
        """When the CA certificate expires; no certificate it issues outlives it."""
        return _utc_time(self._cert, "not_valid_after")

    @classmethod
    def create(
        cls,
        *,
        key_type: str = "ec",
        key_bits: int | None = None,
        common_name: str = "edge-provision lab CA",
        validity_days: int = 3650,
        now: datetime | None = None,
    ) -> LocalCA:
        """Make a new CA in memory only (for tests and throwaway labs)."""
        key = generate_key(key_type, key_bits)
        return cls(key, _self_signed(key, common_name, validity_days, _as_utc(now)))

    @classmethod
    def load_or_create(
        cls,
        directory: Path,
        *,
        key_type: str = "ec",
        key_bits: int | None = None,
        common_name: str = "edge-provision lab CA",
        validity_days: int = 3650,
        now: datetime | None = None,
    ) -> LocalCA:
        """Load the CA kept in ``directory`` (made 0700), creating what is missing.

        The key is written first, then the certificate, each atomically; a key
        left without certificate (crash in between, or a deleted ca.crt) gets a
        new self-signed certificate. The keyword options only shape what is
        created. CertificateError for unreadable or mismatched files, StoreError
        when the directory cannot be used.
        """
        directory = _fs.ensure_private_dir(directory)
        key_path, cert_path = directory / cls.KEY_FILE, directory / cls.CERT_FILE
        with _fs.exclusive_lock(directory / cls.LOCK_FILE):
            if key_path.exists():
                key = load_key(_read(key_path, "CA private key"))
                _tighten(key_path)
            elif cert_path.exists():
                raise CertificateError(
                    f"{cert_path} exists but ca.key is missing; restore ca.key, or remove "
                    "ca.crt to create a new CA (clients must then trust the new one)"
                )
            else:
                key = generate_key(key_type, key_bits)
                _fs.atomic_write(key_path, key_to_pem(key), mode=_fs.SECRET_MODE)
                logger.info("lab ca key created path=%s", key_path)
            if cert_path.exists():
                cert = _load_cert(_read(cert_path, "CA certificate"), str(cert_path))
                if not _same_key(cert, key):
                    raise CertificateError(
                        f"{cert_path} does not belong to {key_path}; remove ca.crt to "
                        "self-sign a new one for this key"
                    )
            else:
                cert = _self_signed(key, common_name, validity_days, _as_utc(now))
                _fs.atomic_write(cert_path, cert.public_bytes(_PEM), mode=_fs.PUBLIC_MODE)
                logger.info(
                    "lab ca certificate created path=%s serial=%x", cert_path, cert.serial_number
                )
        ca = cls(key, cert)
        if ca.not_after <= _as_utc(now):
            logger.warning(
                "lab ca certificate expired path=%s not_after=%s", cert_path, ca.not_after
            )
        return ca

    def sign_csr(
        self, csr_pem: str | bytes, *, common_name: str, ttl_s: int, now: datetime | None = None
    ) -> IssuedCert:
        """Issue a clientAuth certificate for the key of ``csr_pem``.

        The subject is ``CN=<common_name>`` whatever the CSR asked for; the CSR
        only gives its public key, once its signature proved possession of it.
        """
        try:
            csr = x509.load_pem_x509_csr(_to_bytes(csr_pem))
        except ValueError as exc:
            raise CertificateError(
                "not a valid PEM CSR (expected '-----BEGIN CERTIFICATE REQUEST-----')"
            ) from exc
        try:
            signature_ok, public_key = csr.is_signature_valid, csr.public_key()
        except (ValueError, TypeError) as exc:
            raise CertificateError("CSR signature invalid: it cannot be checked") from exc
        if not signature_ok:
            raise CertificateError("CSR signature invalid; the request was altered or is corrupt")
        return self._issue_for(_check_public_key(public_key), common_name, ttl_s, now)

    def issue(
        self,
        *,
        common_name: str,
        key_type: str,
        key_bits: int | None,
        ttl_s: int,
        now: datetime | None = None,
    ) -> tuple[IssuedCert, str]:
        """Generate a key and a clientAuth certificate for it; return ``(cert, key_pem)``.

        Like the Mainflux Certs service (through Vault) the server makes the
        key. Never log ``key_pem``.
        """
        _cn_name(common_name)
        _check_ttl(ttl_s)
        key = generate_key(key_type, key_bits)
        return self._issue_for(key.public_key(), common_name, ttl_s, now), key_to_pem(key)

    def issue_server_cert(
        self,
        hostnames: Sequence[str],
        ttl_s: int,
        *,
        key_type: str = "ec",
        key_bits: int | None = None,
        now: datetime | None = None,
    ) -> tuple[IssuedCert, str]:
        """Generate a key and a serverAuth certificate; return ``(cert, key_pem)``.

        Each hostname becomes a SAN: IPAddress for literals (``127.0.0.1``,
        ``::1``), DNSName otherwise (``localhost``). The CN is the first one.
        """
        names = tuple(h.strip() for h in ([hostnames] if isinstance(hostnames, str) else hostnames))
        if not names or not all(names):
            raise CertificateError("a server certificate needs at least one non-empty hostname")
        _check_ttl(ttl_s)
        key = generate_key(key_type, key_bits)
        issued = self._issue_for(key.public_key(), names[0][:_CN_MAX_LEN], ttl_s, now, names)
        return issued, key_to_pem(key)

    def _issue_for(
        self,
        public_key: _PublicKey,
        common_name: str,
        ttl_s: int,
        now: datetime | None,
        server_names: tuple[str, ...] = (),
    ) -> IssuedCert:
        subject = _cn_name(common_name)
        _check_ttl(ttl_s)
        when = _as_utc(now)
        not_after = min(when + timedelta(seconds=ttl_s), self.not_after)
        if not_after <= when:
            raise CertificateError(
                f"the CA certificate expired at {self.not_after.isoformat()}; remove ca.key "
                "and ca.crt to create a new CA"
            )
        usage = _key_usage(ca=False, key_encipherment=isinstance(public_key, rsa.RSAPublicKey))
        eku = ExtendedKeyUsageOID.SERVER_AUTH if server_names else ExtendedKeyUsageOID.CLIENT_AUTH
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(self._ski)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            # backdated for clock skew, but never by more than a tenth of the lifetime,
            # so that a certificate of a few seconds is not mostly in the past
            .not_valid_before(when - timedelta(seconds=min(CLOCK_SKEW_S, ttl_s / 10)))
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(aki, critical=False)
        )
        try:
            if server_names:
                san = x509.SubjectAlternativeName([_san(name) for name in server_names])
                builder = builder.add_extension(san, critical=False)
            cert = builder.sign(self._key, hashes.SHA256())
        except ValueError as exc:
            raise CertificateError(f"cannot build the certificate: {exc}") from exc
        serial = format(cert.serial_number, "x")
        logger.debug("certificate issued serial=%s server=%s", serial, bool(server_names))
        return IssuedCert(
            cert_pem=cert.public_bytes(_PEM).decode("ascii"),
            serial=serial,
            not_before=_utc_time(cert, "not_valid_before"),
            not_after=_utc_time(cert, "not_valid_after"),
            ca_pem=self._cert_pem,
        )


def _self_signed(
    key: PrivateKey, common_name: str, validity_days: int, now: datetime
) -> x509.Certificate:
    if not _is_int(validity_days) or validity_days < 1:
        raise CertificateError(f"CA validity_days must be >= 1, got {validity_days!r}")
    name = _cn_name(common_name)
    public_key = _check_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(seconds=CLOCK_SKEW_S))
        .not_valid_after(now + timedelta(days=validity_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(key, hashes.SHA256())
    )


def _read(path: Path, what: str) -> str:
    try:
        return _fs.read_text(path, what)
    except ValueError as exc:
        raise StoreError(str(exc)) from None


def _tighten(path: Path) -> None:
    """Set a CA key file back to 0600 if someone loosened it."""
    try:
        st = path.stat()
        if st.st_mode & 0o077 and st.st_uid == os.geteuid():
            os.chmod(path, _fs.SECRET_MODE)
            logger.warning("ca key mode tightened path=%s mode=0600", path)
    except OSError as exc:
        raise StoreError(f"{path}: cannot check the key file mode: {exc.strerror}") from exc
