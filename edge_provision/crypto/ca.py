"""The small local CA of the lab server: :class:`LocalCA` and the :class:`IssuedCert` it returns."""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from edge_provision import fileio
from edge_provision.crypto._x509 import (
    CN_MAX_LEN,
    EC_CURVE_NAMES,
    PEM,
    RSA_BITS,
    PrivateKey,
    PublicKey,
    as_utc,
    cn_name,
    is_int,
    load_cert,
    same_key,
    to_bytes,
    utc_time,
)
from edge_provision.crypto.keys import generate_key, key_to_pem, load_key
from edge_provision.errors import CertificateError, StoreError

__all__ = ["CLOCK_SKEW_S", "IssuedCert", "LocalCA"]

logger = logging.getLogger("edge_provision.crypto.pki")  # the name it always logged under

CLOCK_SKEW_S = 60
"""Issued certificates start this many seconds in the past (slow device clocks)."""


@dataclass(frozen=True)
class IssuedCert:
    """A certificate issued by :class:`LocalCA` (serial lower hex, times tz-aware UTC)."""

    cert_pem: str
    serial: str
    not_before: datetime
    not_after: datetime
    ca_pem: str


def _check_public_key(public_key: object) -> PublicKey:
    """Refuse weak keys (RSA < 2048), curves other than P-256/384/521 and other key kinds."""
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < RSA_BITS[0]:
            raise CertificateError(
                f"RSA key of {public_key.key_size} bits is too weak; use at least 2048 bits"
            )
        return public_key
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if public_key.curve.name not in EC_CURVE_NAMES:
            raise CertificateError(
                f"EC curve {public_key.curve.name} is not allowed; use P-256, P-384 or P-521"
            )
        return public_key
    raise CertificateError(f"unsupported public key type {type(public_key).__name__}; use EC/RSA")


def _check_ttl(ttl_s: int) -> None:
    if not is_int(ttl_s) or ttl_s < 1:
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
        if not same_key(cert, key):
            raise CertificateError("CA certificate does not match the CA private key")
        self._key = key
        self._cert = cert
        self._ski = x509.SubjectKeyIdentifier.from_public_key(_check_public_key(key.public_key()))
        self._cert_pem = cert.public_bytes(PEM).decode("ascii")

    @property
    def cert_pem(self) -> str:
        """The CA certificate, PEM (what clients must trust)."""
        return self._cert_pem

    @property
    def not_after(self) -> datetime:
        """When the CA certificate expires; no certificate it issues outlives it."""
        return utc_time(self._cert, "not_valid_after")

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
        return cls(key, _self_signed(key, common_name, validity_days, as_utc(now)))

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
        directory = fileio.ensure_private_dir(directory)
        key_path, cert_path = directory / cls.KEY_FILE, directory / cls.CERT_FILE
        with fileio.exclusive_lock(directory / cls.LOCK_FILE):
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
                fileio.atomic_write(key_path, key_to_pem(key), mode=fileio.SECRET_MODE)
                logger.info("lab ca key created path=%s", key_path)
            if cert_path.exists():
                cert = load_cert(_read(cert_path, "CA certificate"), str(cert_path))
                if not same_key(cert, key):
                    raise CertificateError(
                        f"{cert_path} does not belong to {key_path}; remove ca.crt to "
                        "self-sign a new one for this key"
                    )
            else:
                cert = _self_signed(key, common_name, validity_days, as_utc(now))
                fileio.atomic_write(cert_path, cert.public_bytes(PEM), mode=fileio.PUBLIC_MODE)
                logger.info(
                    "lab ca certificate created path=%s serial=%x", cert_path, cert.serial_number
                )
        ca = cls(key, cert)
        if ca.not_after <= as_utc(now):
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
            csr = x509.load_pem_x509_csr(to_bytes(csr_pem))
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
        cn_name(common_name)
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
        issued = self._issue_for(key.public_key(), names[0][:CN_MAX_LEN], ttl_s, now, names)
        return issued, key_to_pem(key)

    def crl_pem(self, revoked: Iterable[str], *, now: datetime | None = None,
                validity_days: int = 365) -> str:  # fmt: skip
        """A PEM CRL signed by this CA listing the (hex, any case) serials in ``revoked``.

        Dated a minute back (clock skew), valid ``validity_days``; the lab broker's
        ``crlfile``. CertificateError for a serial that is not hex.
        """
        when = as_utc(now)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self._cert.subject)
            .last_update(when - timedelta(minutes=1))
            .next_update(when + timedelta(days=validity_days))
        )
        for serial in sorted({s.lower() for s in revoked}):
            try:
                number = int(serial, 16)
            except ValueError:
                raise CertificateError(f"serial {serial[:80]!r} is not hexadecimal") from None
            entry = (
                x509.RevokedCertificateBuilder()
                .serial_number(number)
                .revocation_date(when - timedelta(minutes=1))
                .build()
            )
            builder = builder.add_revoked_certificate(entry)
        crl = builder.sign(self._key, hashes.SHA256())
        return crl.public_bytes(PEM).decode("ascii")

    def _issue_for(
        self,
        public_key: PublicKey,
        common_name: str,
        ttl_s: int,
        now: datetime | None,
        server_names: tuple[str, ...] = (),
    ) -> IssuedCert:
        subject = cn_name(common_name)
        _check_ttl(ttl_s)
        when = as_utc(now)
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
            cert_pem=cert.public_bytes(PEM).decode("ascii"),
            serial=serial,
            not_before=utc_time(cert, "not_valid_before"),
            not_after=utc_time(cert, "not_valid_after"),
            ca_pem=self._cert_pem,
        )


def _self_signed(
    key: PrivateKey, common_name: str, validity_days: int, now: datetime
) -> x509.Certificate:
    if not is_int(validity_days) or validity_days < 1:
        raise CertificateError(f"CA validity_days must be >= 1, got {validity_days!r}")
    name = cn_name(common_name)
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
        return fileio.read_text(path, what)
    except ValueError as exc:
        raise StoreError(str(exc)) from None


def _tighten(path: Path) -> None:
    """Set a CA key file back to 0600 if someone loosened it."""
    try:
        st = path.stat()
        if st.st_mode & 0o077 and st.st_uid == os.geteuid():
            os.chmod(path, fileio.SECRET_MODE)
            logger.warning("ca key mode tightened path=%s mode=0600", path)
    except OSError as exc:
        raise StoreError(f"{path}: cannot check the key file mode: {exc.strerror}") from exc
