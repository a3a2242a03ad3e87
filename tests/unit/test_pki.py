"""Tests for keys, CSRs, certificate checks and the local CA."""

from __future__ import annotations

import stat
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge_provision.crypto.pki import (
    CLOCK_SKEW_S,
    LocalCA,
    cert_matches_key,
    generate_key,
    key_to_pem,
    load_key,
    make_csr,
    parse_certificate,
    verify_chain,
)
from edge_provision.errors import CertificateError

NOW = datetime(2030, 1, 1, 12, 0, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    """One persisted EC CA shared by the tests of this module."""
    return LocalCA.load_or_create(tmp_path_factory.mktemp("pki") / "ca", now=NOW)


def _cert(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --------------------------------------------------------------------------- keys


@pytest.mark.parametrize(
    ("key_bits", "curve"),
    [(None, ec.SECP256R1), (256, ec.SECP256R1), (384, ec.SECP384R1), (521, ec.SECP521R1)],
)
def test_generate_ec_keys(key_bits: int | None, curve: type[ec.EllipticCurve]) -> None:
    """EC keys use P-256 by default and the curve matching 384/521."""
    key = generate_key("ec", key_bits)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, curve)


@pytest.mark.parametrize("key_bits", [None, 2048, 3072, 4096])
def test_generate_rsa_keys(key_bits: int | None) -> None:
    """RSA keys have the requested size (2048 by default) and e=65537."""
    key = generate_key("rsa", key_bits)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == (key_bits or 2048)
    assert key.public_key().public_numbers().e == 65537


def test_generate_default_is_p256() -> None:
    """generate_key() with no arguments makes a P-256 key."""
    key = generate_key()
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"


@pytest.mark.parametrize(
    ("key_type", "key_bits", "allowed"),
    [
        ("ec", 224, "256, 384 or 521"),
        ("ec", 2048, "256, 384 or 521"),
        ("rsa", 1024, "2048, 3072 or 4096"),
        ("rsa", 256, "2048, 3072 or 4096"),
        ("dsa", None, "'ec' or 'rsa'"),
        ("ed25519", None, "'ec' or 'rsa'"),
    ],
)
def test_generate_rejects_other_values(key_type: str, key_bits: int | None, allowed: str) -> None:
    """Unsupported key types and sizes raise CertificateError naming the allowed values."""
    with pytest.raises(CertificateError) as info:
        generate_key(key_type, key_bits)
    assert allowed in str(info.value)


def test_key_pem_round_trip() -> None:
    """key_to_pem writes unencrypted PKCS#8 that load_key reads back."""
    key = generate_key("ec")
    pem = key_to_pem(key)
    assert pem.startswith("-----BEGIN PRIVATE KEY-----")
    loaded = load_key(pem)
    assert key_to_pem(loaded) == pem
    assert key_to_pem(load_key(pem.encode())) == pem


@pytest.mark.parametrize(
    "garbage", ["", "hello", "-----BEGIN PRIVATE KEY-----\nAAAA\n", b"\x00\x01"]
)
def test_load_key_garbage(garbage: str | bytes) -> None:
    """load_key raises CertificateError on anything that is not a PEM key."""
    with pytest.raises(CertificateError, match="not a valid PEM private key"):
        load_key(garbage)


def test_load_key_encrypted() -> None:
    """An encrypted key is refused with a hint to remove the passphrase."""
    pem = generate_key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    with pytest.raises(CertificateError, match="encrypted"):
        load_key(pem)


def test_make_csr() -> None:
    """make_csr returns a valid SHA-256 CSR with the given CN and the key's public key."""
    key = generate_key("ec")
    csr = x509.load_pem_x509_csr(make_csr(key, "device-1").encode())
    assert csr.is_signature_valid
    assert isinstance(csr.signature_hash_algorithm, hashes.SHA256)
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "device-1"
    assert csr.public_key() == key.public_key()


@pytest.mark.parametrize("name", ["", "x" * 65])
def test_make_csr_bad_common_name(name: str) -> None:
    """A common name that is empty or longer than 64 characters is a CertificateError."""
    with pytest.raises(CertificateError, match="common name"):
        make_csr(generate_key(), name)


# --------------------------------------------------------------------------- inspection


def test_parse_certificate(ca: LocalCA) -> None:
    """parse_certificate reports subject, CN, lower-hex serial, UTC times and fingerprint."""
    issued, _ = ca.issue(common_name="thing-key", key_type="ec", key_bits=None, ttl_s=3600, now=NOW)
    info = parse_certificate(issued.cert_pem)
    cert = _cert(issued.cert_pem)
    assert info.subject == "CN=thing-key"
    assert info.common_name == "thing-key"
    assert info.serial == format(cert.serial_number, "x") == issued.serial
    assert info.serial == info.serial.lower() and not info.serial.startswith("0x")
    assert info.issuer == "CN=edge-provision lab CA"
    assert info.not_before == NOW - timedelta(seconds=CLOCK_SKEW_S) == issued.not_before
    assert info.not_after == NOW + timedelta(seconds=3600) == issued.not_after
    assert info.not_after.tzinfo is not None and info.not_after.utcoffset() == timedelta(0)
    assert info.fingerprint_sha256 == cert.fingerprint(hashes.SHA256()).hex()
    assert len(info.fingerprint_sha256) == 64


@pytest.mark.parametrize(
    "garbage", ["", "not a cert", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"]
)
def test_parse_certificate_bad_pem(garbage: str) -> None:
    """A bad PEM certificate raises CertificateError."""
    with pytest.raises(CertificateError, match="not a valid PEM certificate"):
        parse_certificate(garbage)


def test_cert_matches_key(ca: LocalCA) -> None:
    """cert_matches_key is true for the issued key and false for another key."""
    issued, key_pem = ca.issue(common_name="m", key_type="ec", key_bits=256, ttl_s=60, now=NOW)
    assert cert_matches_key(issued.cert_pem, key_pem) is True
    assert cert_matches_key(issued.cert_pem, key_to_pem(generate_key("ec"))) is False
    assert cert_matches_key(issued.cert_pem, key_to_pem(generate_key("rsa"))) is False


def test_cert_matches_key_object(ca: LocalCA) -> None:
    """cert_matches_key takes the key object itself as well as its PEM."""
    key = generate_key("ec")
    issued = ca.sign_csr(make_csr(key, "obj"), common_name="obj", ttl_s=60, now=NOW)
    assert cert_matches_key(issued.cert_pem, key) is True
    assert cert_matches_key(issued.cert_pem, generate_key("ec")) is False
    assert cert_matches_key(issued.cert_pem, generate_key("rsa")) is False


def test_cert_matches_key_bad_input(ca: LocalCA) -> None:
    """cert_matches_key raises CertificateError when an input cannot be parsed."""
    with pytest.raises(CertificateError):
        cert_matches_key(ca.cert_pem, "garbage")
    with pytest.raises(CertificateError):
        cert_matches_key("garbage", key_to_pem(generate_key()))


# --------------------------------------------------------------------------- chains


def test_csr_signed_by_ca_verifies(ca: LocalCA) -> None:
    """A CSR signed by LocalCA.sign_csr passes verify_chain and matches its key."""
    key = generate_key("ec", 384)
    issued = ca.sign_csr(make_csr(key, "device-1"), common_name="device-1", ttl_s=86400, now=NOW)
    verify_chain(issued.cert_pem, ca.cert_pem, now=NOW + timedelta(hours=1))
    assert issued.ca_pem == ca.cert_pem
    assert cert_matches_key(issued.cert_pem, key_to_pem(key))


def test_rsa_csr_gets_key_encipherment(ca: LocalCA) -> None:
    """An RSA leaf gets digitalSignature + keyEncipherment; an EC leaf only digitalSignature."""
    rsa_cert = _cert(
        ca.sign_csr(make_csr(generate_key("rsa"), "r"), common_name="r", ttl_s=60, now=NOW).cert_pem
    )
    ec_cert = _cert(
        ca.sign_csr(make_csr(generate_key("ec"), "e"), common_name="e", ttl_s=60, now=NOW).cert_pem
    )
    rsa_usage = rsa_cert.extensions.get_extension_for_class(x509.KeyUsage).value
    ec_usage = ec_cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert rsa_usage.digital_signature and rsa_usage.key_encipherment
    assert ec_usage.digital_signature and not ec_usage.key_encipherment


def test_verify_chain_other_ca_different_name(ca: LocalCA) -> None:
    """A cert from a CA with another name fails verify_chain on the issuer name."""
    other = LocalCA.create(common_name="other CA", now=NOW)
    issued, _ = other.issue(common_name="x", key_type="ec", key_bits=None, ttl_s=60, now=NOW)
    with pytest.raises(CertificateError, match="not signed by the given CA") as info:
        verify_chain(issued.cert_pem, ca.cert_pem, now=NOW)
    assert "CN=other CA" in str(info.value)


def test_verify_chain_other_ca_same_name(ca: LocalCA) -> None:
    """A cert from an impostor CA with the same name fails on the signature."""
    impostor = LocalCA.create(now=NOW)
    issued, _ = impostor.issue(common_name="x", key_type="ec", key_bits=None, ttl_s=60, now=NOW)
    with pytest.raises(CertificateError, match="not signed by the given CA: the signature"):
        verify_chain(issued.cert_pem, ca.cert_pem, now=NOW)


def test_verify_chain_rsa_ca() -> None:
    """An RSA CA issues certificates that verify against it."""
    rsa_ca = LocalCA.create(key_type="rsa", key_bits=2048, now=NOW)
    issued, _ = rsa_ca.issue(common_name="x", key_type="ec", key_bits=None, ttl_s=60, now=NOW)
    verify_chain(issued.cert_pem, rsa_ca.cert_pem, now=NOW)
    assert parse_certificate(issued.cert_pem).issuer == "CN=edge-provision lab CA"


def test_verify_chain_expired(ca: LocalCA) -> None:
    """A 1-second certificate checked later fails with 'expired at'."""
    issued, _ = ca.issue(common_name="short", key_type="ec", key_bits=None, ttl_s=1, now=NOW)
    verify_chain(issued.cert_pem, ca.cert_pem, now=NOW)
    with pytest.raises(CertificateError, match="certificate expired at 2030-01-01T12:00:01"):
        verify_chain(issued.cert_pem, ca.cert_pem, now=NOW + timedelta(seconds=10))


def test_verify_chain_not_yet_valid(ca: LocalCA) -> None:
    """A certificate checked before its not_before (minus skew) is not yet valid."""
    issued, _ = ca.issue(common_name="early", key_type="ec", key_bits=None, ttl_s=3600, now=NOW)
    verify_chain(issued.cert_pem, ca.cert_pem, now=NOW - timedelta(seconds=CLOCK_SKEW_S - 1))
    with pytest.raises(CertificateError, match="not yet valid"):
        verify_chain(issued.cert_pem, ca.cert_pem, now=NOW - timedelta(hours=1))


def test_verify_chain_naive_now_is_utc(ca: LocalCA) -> None:
    """A naive ``now`` is taken as UTC."""
    issued, _ = ca.issue(common_name="n", key_type="ec", key_bits=None, ttl_s=1, now=NOW)
    with pytest.raises(CertificateError, match="expired"):
        verify_chain(issued.cert_pem, ca.cert_pem, now=datetime(2030, 1, 1, 12, 0, 30))


def test_verify_chain_leaf_is_not_a_ca(ca: LocalCA) -> None:
    """A certificate really signed by a leaf's key fails: the leaf is not a CA."""
    leaf, leaf_key_pem = ca.issue(
        common_name="leaf", key_type="ec", key_bits=None, ttl_s=60, now=NOW
    )
    leaf_cert = _cert(leaf.cert_pem)
    child = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "child")]))
        .issuer_name(leaf_cert.subject)
        .public_key(generate_key().public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(minutes=1))
        .not_valid_after(NOW + timedelta(minutes=1))
        .sign(load_key(leaf_key_pem), hashes.SHA256())
    )
    child_pem = child.public_bytes(serialization.Encoding.PEM).decode()
    with pytest.raises(CertificateError, match="is not a CA"):
        verify_chain(child_pem, leaf.cert_pem, now=NOW)


def test_ttl_capped_at_ca_expiry() -> None:
    """A leaf never outlives its CA."""
    short_ca = LocalCA.create(validity_days=1, now=NOW)
    issued, _ = short_ca.issue(
        common_name="x", key_type="ec", key_bits=None, ttl_s=10 * 86400, now=NOW
    )
    assert issued.not_after == short_ca.not_after == NOW + timedelta(days=1)


def test_expired_ca_refuses_to_sign() -> None:
    """Issuing after the CA expired raises CertificateError."""
    short_ca = LocalCA.create(validity_days=1, now=NOW)
    with pytest.raises(CertificateError, match="CA certificate expired"):
        short_ca.issue(
            common_name="x", key_type="ec", key_bits=None, ttl_s=60, now=NOW + timedelta(days=2)
        )


@pytest.mark.parametrize("ttl_s", [0, -5])
def test_bad_ttl(ca: LocalCA, ttl_s: int) -> None:
    """A ttl below one second is a CertificateError."""
    with pytest.raises(CertificateError, match="ttl"):
        ca.issue(common_name="x", key_type="ec", key_bits=None, ttl_s=ttl_s)


# --------------------------------------------------------------------------- leaf contents


def test_common_name_forced(ca: LocalCA) -> None:
    """sign_csr ignores the CSR's subject and uses the given common name only."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, "admin"),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Evil Corp"),
                ]
            )
        )
        .sign(generate_key(), hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )
    issued = ca.sign_csr(csr, common_name="thing-key-123", ttl_s=60, now=NOW)
    assert _cert(issued.cert_pem).subject.rfc4514_string() == "CN=thing-key-123"


def test_client_cert_extensions(ca: LocalCA) -> None:
    """Client certs carry clientAuth EKU, ca=False, digitalSignature, AKI = CA SKI."""
    issued, _ = ca.issue(common_name="c", key_type="ec", key_bits=None, ttl_s=60, now=NOW)
    cert = _cert(issued.cert_pem)
    ext = cert.extensions
    assert list(ext.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    basic = ext.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca is False
    usage = ext.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
    ca_ski = _cert(ca.cert_pem).extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ca_ski.value.digest
    assert cert.serial_number.bit_length() <= 159


def test_ca_cert_extensions(ca: LocalCA) -> None:
    """The CA is self-signed with critical BasicConstraints(ca, 0) and keyCertSign/cRLSign."""
    cert = _cert(ca.cert_pem)
    assert cert.subject == cert.issuer
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca is True and basic.value.path_length == 0
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    assert cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    verify_chain(ca.cert_pem, ca.cert_pem, now=NOW)


def test_issue_returns_matching_key(ca: LocalCA) -> None:
    """issue() generates the requested key type and returns its PEM."""
    issued, key_pem = ca.issue(common_name="r", key_type="rsa", key_bits=3072, ttl_s=60, now=NOW)
    key = load_key(key_pem)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 3072
    assert cert_matches_key(issued.cert_pem, key_pem)


def test_serials_unique(ca: LocalCA) -> None:
    """Every issued certificate gets a distinct serial."""
    serials = {
        ca.issue(common_name="s", key_type="ec", key_bits=None, ttl_s=60, now=NOW)[0].serial
        for _ in range(20)
    }
    assert len(serials) == 20


def test_server_cert_sans(ca: LocalCA) -> None:
    """Server certs carry serverAuth and DNS/IP SANs for localhost, 127.0.0.1 and ::1."""
    issued, key_pem = ca.issue_server_cert(["localhost", "127.0.0.1", "::1"], 3600, now=NOW)
    cert = _cert(issued.cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH
    ]
    assert parse_certificate(issued.cert_pem).common_name == "localhost"
    assert cert_matches_key(issued.cert_pem, key_pem)
    verify_chain(issued.cert_pem, ca.cert_pem, now=NOW)


def test_server_cert_needs_hostnames(ca: LocalCA) -> None:
    """issue_server_cert with no hostnames is a CertificateError."""
    with pytest.raises(CertificateError, match="hostname"):
        ca.issue_server_cert([], 60)


# --------------------------------------------------------------------------- CSR checks


def test_bad_csr_pem(ca: LocalCA) -> None:
    """A CSR that is not PEM is a CertificateError."""
    with pytest.raises(CertificateError, match="not a valid PEM CSR"):
        ca.sign_csr("garbage", common_name="x", ttl_s=60)


def test_tampered_csr_rejected(ca: LocalCA) -> None:
    """A CSR whose signature was altered is rejected with 'CSR signature invalid'."""
    csr = x509.load_pem_x509_csr(make_csr(generate_key("rsa"), "t").encode())
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # last byte of the RSA signature
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM).decode()
    with pytest.raises(CertificateError, match="CSR signature invalid"):
        ca.sign_csr(tampered, common_name="t", ttl_s=60)


def test_rsa_1024_csr_rejected(ca: LocalCA) -> None:
    """A CSR with a 1024-bit RSA key is refused as too weak."""
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(CertificateError, match="1024 bits is too weak"):
        ca.sign_csr(make_csr(weak, "w"), common_name="w", ttl_s=60)


def test_other_curve_csr_rejected(ca: LocalCA) -> None:
    """A CSR on a curve other than P-256/384/521 (secp256k1) is refused."""
    key = ec.generate_private_key(ec.SECP256K1())
    with pytest.raises(CertificateError, match="secp256k1 is not allowed"):
        ca.sign_csr(make_csr(key, "k"), common_name="k", ttl_s=60)


# --------------------------------------------------------------------------- persistence


def test_load_or_create_persists(tmp_path: Path) -> None:
    """Loading twice gives the same CA; files are 0600/0644 in a 0700 directory."""
    directory = tmp_path / "state" / "ca"
    first = LocalCA.load_or_create(directory)
    second = LocalCA.load_or_create(directory)
    assert first.cert_pem == second.cert_pem
    assert _mode(directory) == 0o700
    assert _mode(directory / "ca.key") == 0o600
    assert _mode(directory / "ca.crt") == 0o644
    assert (directory / "ca.crt").read_text() == first.cert_pem
    assert cert_matches_key(first.cert_pem, (directory / "ca.key").read_text())
    issued, _ = first.issue(common_name="p", key_type="ec", key_bits=None, ttl_s=60)
    verify_chain(issued.cert_pem, second.cert_pem)


def test_load_or_create_options(tmp_path: Path) -> None:
    """key_type, key_bits, common_name and validity_days shape a new CA."""
    ca = LocalCA.load_or_create(
        tmp_path, key_type="rsa", key_bits=3072, common_name="My CA", validity_days=10, now=NOW
    )
    info = parse_certificate(ca.cert_pem)
    assert info.subject == "CN=My CA"
    assert info.not_after == NOW + timedelta(days=10)
    key = load_key((tmp_path / "ca.key").read_text())
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 3072


def test_missing_cert_regenerated_from_key(tmp_path: Path) -> None:
    """If ca.crt is lost, a new one is self-signed for the same key; old leaves still verify."""
    ca = LocalCA.load_or_create(tmp_path)
    issued, _ = ca.issue(common_name="x", key_type="ec", key_bits=None, ttl_s=600)
    key_before = (tmp_path / "ca.key").read_text()
    (tmp_path / "ca.crt").unlink()
    again = LocalCA.load_or_create(tmp_path)
    assert (tmp_path / "ca.key").read_text() == key_before
    assert again.cert_pem != ca.cert_pem
    assert _mode(tmp_path / "ca.crt") == 0o644
    verify_chain(issued.cert_pem, again.cert_pem)


def test_cert_without_key_refused(tmp_path: Path) -> None:
    """A ca.crt without its ca.key is an error rather than a silent new CA."""
    LocalCA.load_or_create(tmp_path)
    (tmp_path / "ca.key").unlink()
    with pytest.raises(CertificateError, match=r"ca\.key is missing"):
        LocalCA.load_or_create(tmp_path)


def test_mismatched_cert_refused(tmp_path: Path) -> None:
    """A ca.crt that belongs to another key is refused."""
    LocalCA.load_or_create(tmp_path / "a")
    LocalCA.load_or_create(tmp_path / "b")
    (tmp_path / "a" / "ca.crt").write_text((tmp_path / "b" / "ca.crt").read_text())
    with pytest.raises(CertificateError, match="does not belong"):
        LocalCA.load_or_create(tmp_path / "a")


def test_corrupt_key_file_refused(tmp_path: Path) -> None:
    """A garbage ca.key is a CertificateError."""
    tmp_path.joinpath("ca.key").write_text("garbage")
    with pytest.raises(CertificateError, match="not a valid PEM private key"):
        LocalCA.load_or_create(tmp_path)


def test_loose_key_mode_tightened(tmp_path: Path) -> None:
    """A ca.key someone made world-readable is set back to 0600 on load."""
    LocalCA.load_or_create(tmp_path)
    (tmp_path / "ca.key").chmod(0o644)
    LocalCA.load_or_create(tmp_path)
    assert _mode(tmp_path / "ca.key") == 0o600


def test_concurrent_load_or_create_makes_one_ca(tmp_path: Path) -> None:
    """Threads racing to create the CA all end up with the same certificate."""
    results: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        ca = LocalCA.load_or_create(tmp_path / "ca")
        with lock:
            results.append(ca.cert_pem)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(results) == 6
    assert len(set(results)) == 1


def test_concurrent_signing(ca: LocalCA) -> None:
    """One LocalCA signs from several threads at once; every cert verifies."""
    issued: list[str] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        for j in range(5):
            csr = make_csr(generate_key(), f"t{i}-{j}")
            cert = ca.sign_csr(csr, common_name=f"t{i}-{j}", ttl_s=60, now=NOW)
            with lock:
                issued.append(cert.cert_pem)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(issued) == 20
    for pem in issued:
        verify_chain(pem, ca.cert_pem, now=NOW)
    assert len({parse_certificate(p).serial for p in issued}) == 20


def test_short_certificates_are_backdated_by_at_most_a_tenth_of_their_lifetime() -> None:
    """A 10 s certificate starts 1 s in the past, not 60 s (renewal is computed from it)."""
    ca = LocalCA.create(now=NOW)
    issued, _ = ca.issue(common_name="short", key_type="ec", key_bits=None, ttl_s=10, now=NOW)
    assert issued.not_before == NOW - timedelta(seconds=1)
    assert issued.not_after == NOW + timedelta(seconds=10)
    long_lived, _ = ca.issue(common_name="long", key_type="ec", key_bits=None, ttl_s=3600,
                             now=NOW)
    assert long_lived.not_before == NOW - timedelta(seconds=CLOCK_SKEW_S)


def _crypto_sources() -> dict[str, str]:
    """Module name -> source text of every module in edge_provision/crypto."""
    import edge_provision.crypto as crypto_pkg

    folder = Path(crypto_pkg.__file__).parent
    return {p.stem: p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.py"))}


def test_crl_signed_by_the_ca_lists_the_revoked_serials() -> None:
    """crl_pem: signed by the CA, issued by its subject, exactly the given serials (any case)."""
    ca = LocalCA.create(now=NOW)
    crl = x509.load_pem_x509_crl(ca.crl_pem(["1A2B", "ff", "1a2b"], now=NOW).encode())
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.encode())
    assert crl.is_signature_valid(ca_cert.public_key())  # type: ignore[arg-type]
    assert crl.issuer == ca_cert.subject
    assert sorted(r.serial_number for r in crl) == [0xFF, 0x1A2B]
    next_update = getattr(crl, "next_update_utc", None)  # cryptography >= 42
    if next_update is None:  # pragma: no cover - cryptography < 42
        next_update = crl.next_update.replace(tzinfo=timezone.utc)
    assert next_update == NOW + timedelta(days=365)
    assert list(x509.load_pem_x509_crl(ca.crl_pem([], now=NOW).encode())) == []
    with pytest.raises(CertificateError, match="not hexadecimal"):
        ca.crl_pem(["xyz"])


def test_crypto_modules_import_no_private_name_of_a_sibling() -> None:
    """ca, pki and keys share helpers through the private module _x509, not _names."""
    import ast

    offenders = []
    for name, source in _crypto_sources().items():
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "edge_provision.crypto"
            ):
                offenders += [f"{name}: {a.name}" for a in node.names if a.name.startswith("_")]
    assert offenders == []
    assert "_x509" in _crypto_sources()


def test_crypto_package_init_imports_nothing() -> None:
    """Importing edge_provision.crypto (e.g. for bootstrap_cipher's siblings) costs nothing."""
    import ast

    tree = ast.parse(_crypto_sources()["__init__"])
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]


def test_pki_still_offers_what_agent_and_lab_callers_use() -> None:
    """Callers keep importing keys, CSRs, inspection and the CA from pki alone."""
    from edge_provision.crypto import ca, keys, pki

    assert pki.generate_key is keys.generate_key
    assert pki.make_csr is keys.make_csr
    assert pki.LocalCA is ca.LocalCA
    assert pki.IssuedCert is ca.IssuedCert
    for name in ("parse_certificate", "verify_chain", "cert_matches_key", "key_to_pem",
                 "load_key", "CertInfo", "CLOCK_SKEW_S"):
        assert name in pki.__all__
