"""CertsClient: the lab CSR endpoint and the upstream Certs service shapes (0.12, 0.13, later)."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path

import pytest

from edge_provision.crypto import pki
from edge_provision.errors import ProtocolError, ServiceUnavailable, Unauthorized
from edge_provision.http import AuthScheme, HttpClient
from edge_provision.platform import CertsClient, IssuedCertificate, SignedCertificate
from edge_provision.testing import FakeServer, Reply, ThrowawayCA

THING_ID = "5d0f1c2a-7c1e-4b7e-9a55-0b7f3f0a1e11"
THING_KEY = "e6b3a4c0-2f0e-4e43-8f3f-6b8d1c0c9a22"
TOKEN = "user-token-0f0e"
PEM = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
KEY_PEM = "-----BEGIN RSA PRIVATE KEY-----\nSECRETKEYDATA\n-----END RSA PRIVATE KEY-----\n"


def test_sign_csr_round_trip(server: FakeServer, http: HttpClient, tmp_path: Path) -> None:
    """A CSR is posted with the thing key; the signed certificate and its expiry come back."""
    ca = ThrowawayCA(tmp_path)
    cert_pem, _ = ca.issue_client(THING_ID, 600)
    info = pki.parse_certificate(cert_pem)
    key = pki.generate_key("ec")
    csr = pki.make_csr(key, THING_ID)
    server.add(
        "POST",
        "/certs/csr",
        Reply(
            status=201,
            json={
                "thing_id": THING_ID,
                "client_cert": cert_pem,
                "cert_serial": info.serial,
                "expiration": info.not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "ca_cert": ca.cert_pem,
            },
        ),
    )
    signed = CertsClient(http, auth_scheme=AuthScheme.MODERN).sign_csr(
        THING_ID, THING_KEY, csr, ttl_s=600
    )
    assert isinstance(signed, SignedCertificate)
    assert signed.cert_pem == cert_pem and signed.ca_pem == ca.cert_pem
    assert signed.serial == info.serial
    assert signed.not_after == info.not_after.replace(microsecond=0)
    (req,) = server.requests
    assert req.headers["Authorization"] == f"Thing {THING_KEY}"
    assert req.header_values("Content-Type") == ["application/json"]
    assert req.json() == {"thing_id": THING_ID, "csr": csr, "ttl_s": 600}


def test_sign_csr_go_time_and_vault_serial(server: FakeServer, http: HttpClient) -> None:
    """Nanosecond RFC 3339 times with offsets and colon-separated serials are normalised."""
    server.add(
        "POST",
        "/certs/csr",
        Reply(
            status=201,
            json={
                "client_cert": PEM,
                "cert_serial": "1A:2B:3C",
                "expiration": "2027-01-02T05:04:05.123456789+02:00",
                "ca_cert": PEM,
            },
        ),
    )
    signed = CertsClient(http).sign_csr(THING_ID, THING_KEY, "csr")
    assert signed.serial == "1a2b3c"
    assert signed.not_after == datetime(2027, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc)
    assert "ttl_s" not in server.requests[0].json()  # type: ignore[operator]


def test_sign_csr_missing_expiration(server: FakeServer, http: HttpClient) -> None:
    """A reply without an expiration is a ProtocolError."""
    server.add(
        "POST", "/certs/csr", Reply(status=201, json={"client_cert": PEM, "cert_serial": "01"})
    )
    with pytest.raises(ProtocolError, match="missing 'expiration'"):
        CertsClient(http).sign_csr(THING_ID, THING_KEY, "csr")


def test_sign_csr_refused_key(server: FakeServer, http: HttpClient) -> None:
    """A refused thing key is Unauthorized (no bare retry for MODERN)."""
    server.add(
        "POST",
        "/certs/csr",
        Reply(status=401, json={"error": "missing or invalid bearer entity key"}),
    )
    with pytest.raises(Unauthorized, match="missing or invalid bearer entity key"):
        CertsClient(http, auth_scheme=AuthScheme.MODERN).sign_csr(THING_ID, THING_KEY, "csr")
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (Reply(json={"status": "pass", "csr": True}), True),
        (Reply(json={"status": "pass", "version": "0.13.0"}), False),
        (Reply(json={"status": "pass", "csr": "yes"}), False),
        (Reply(status=404, body=b"404 page not found\n"), False),
        (Reply(body=b"ok"), False),
    ],
)
def test_supports_csr(server: FakeServer, http: HttpClient, reply: Reply, expected: bool) -> None:
    """Only a /health body with "csr": true means the CSR path exists."""
    server.add("GET", "/health", reply)
    assert CertsClient(http).supports_csr() is expected


def test_supports_csr_server_down(server: FakeServer, http: HttpClient) -> None:
    """An unreachable server is not 'no CSR support': it raises ServiceUnavailable."""
    server.add("GET", "/health", Reply(status=503))
    with pytest.raises(ServiceUnavailable):
        CertsClient(http).supports_csr()


def test_issue_012_shape(server: FakeServer, http: HttpClient) -> None:
    """0.12 returns cert/cert_key/ca_cert; both ttl and valid are sent."""
    server.add(
        "POST",
        "/certs",
        Reply(
            status=201,
            json={
                "thing_id": THING_ID,
                "cert": PEM,
                "cert_key": KEY_PEM,
                "cert_serial": "0a:0b",
                "ca_cert": PEM,
            },
        ),
    )
    issued = CertsClient(http, auth_scheme=AuthScheme.BARE).issue(
        THING_ID, TOKEN, "rsa", 2048, "2400h"
    )
    assert isinstance(issued, IssuedCertificate)
    assert (issued.cert_pem, issued.key_pem, issued.ca_pem, issued.serial) == (
        PEM,
        KEY_PEM,
        PEM,
        "0a0b",
    )
    assert issued.not_after is None
    assert "SECRETKEYDATA" not in repr(issued)
    (req,) = server.requests
    assert req.headers["Authorization"] == TOKEN
    assert req.json() == {
        "thing_id": THING_ID,
        "key_type": "rsa",
        "key_bits": 2048,
        "ttl": "2400h",
        "valid": "2400h",
    }


def test_issue_013_has_no_key(server: FakeServer, http: HttpClient) -> None:
    """0.13 returns only the certificate: ProtocolError pointing at the CSR path."""
    server.add(
        "POST",
        "/certs",
        Reply(
            status=201,
            json={
                "thing_id": THING_ID,
                "cert": PEM,
                "cert_serial": "01",
                "expiration": "2027-01-01T00:00:00Z",
            },
        ),
    )
    with pytest.raises(
        ProtocolError, match=r"this Certs service \(0.13\) does not return the private key"
    ):
        CertsClient(http).issue(THING_ID, TOKEN, "ec", 256, 3600)
    assert server.requests[0].json()["ttl"] == "3600s"  # type: ignore[index]
    assert server.requests[0].headers["Authorization"] == f"Bearer {TOKEN}"


def test_issue_later_shape(server: FakeServer, http: HttpClient) -> None:
    """Later Certs (and Magistrala) return client_cert/client_key and an expiration."""
    server.add(
        "POST",
        "/certs",
        Reply(
            status=201,
            json={
                "thing_id": THING_ID,
                "client_cert": PEM,
                "client_key": KEY_PEM,
                "cert_serial": "ff",
                "expiration": "2027-06-01T00:00:00Z",
            },
        ),
    )
    issued = CertsClient(http).issue(THING_ID, TOKEN, "ec", 256, "8760h")
    assert issued.key_pem == KEY_PEM and issued.ca_pem == ""
    assert issued.not_after == datetime(2027, 6, 1, tzinfo=timezone.utc)


def test_issue_vault_down(server: FakeServer, http: HttpClient) -> None:
    """Upstream's empty 500 (no Vault) is ServiceUnavailable."""
    server.add("POST", "/certs", Reply(status=500, headers={"Content-Type": "application/json"}))
    with pytest.raises(ServiceUnavailable):
        CertsClient(http).issue(THING_ID, TOKEN, "rsa", 2048, "2400h")


def test_issue_not_pem(server: FakeServer, http: HttpClient) -> None:
    """A certificate field that is not PEM is a ProtocolError."""
    server.add(
        "POST", "/certs", Reply(status=201, json={"client_cert": "abc", "client_key": KEY_PEM})
    )
    with pytest.raises(ProtocolError, match="not a PEM string"):
        CertsClient(http).issue(THING_ID, TOKEN, "rsa", 2048, "2400h")


def test_no_secret_in_logs(
    server: FakeServer, http: HttpClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Thing key, token and private key never reach the log."""
    caplog.set_level(logging.DEBUG)
    server.add("POST", "/certs/csr", Reply(status=403, json={"error": "nope"}))
    server.add(
        "POST",
        "/certs",
        Reply(status=201, json={"client_cert": PEM, "client_key": KEY_PEM, "cert_serial": "01"}),
    )
    client = CertsClient(http, auth_scheme=AuthScheme.MODERN)
    with pytest.raises(Unauthorized):
        client.sign_csr(THING_ID, THING_KEY, "csr")
    client.issue(THING_ID, TOKEN, "ec", 256, "1h")
    assert "certificate issued" in caplog.text
    for secret in (THING_KEY, TOKEN, "SECRETKEYDATA"):
        assert secret not in caplog.text
