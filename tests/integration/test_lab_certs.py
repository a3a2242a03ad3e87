"""Certificates from the lab CA: X.509 in /mapping, the CSR path, lookup and revocation."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
from _lab_util import lab_settings

from edge_provision.crypto import pki
from edge_provision.errors import CertificateError
from edge_provision.lab.server import TOKEN_FILE, RunningLabServer, start_in_thread

TIMEOUT = 10


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[RunningLabServer]:
    """A lab server with X.509 provisioning on and certificates valid for 5 s."""
    with start_in_thread(lab_settings(tmp_path, x509_provision=True, cert_ttl_s=5)) as server:
        yield server
        assert server.service.internal_errors == 0


@pytest.fixture
def token(tmp_path: Path, lab: RunningLabServer) -> str:
    """The generated API token."""
    return (tmp_path / "lab" / TOKEN_FILE).read_text().strip()


def provision(lab: RunningLabServer, token: str, external_id: str) -> dict[str, object]:
    """POST /mapping and return the 201 body."""
    resp = requests.post(f"{lab.url}/mapping", json={"external_id": external_id,
                                                     "external_key": "k"},
                         headers={"Authorization": token}, timeout=TIMEOUT)
    assert resp.status_code == 201, resp.text
    body: dict[str, object] = resp.json()
    return body


def ca_pem(lab: RunningLabServer) -> str:
    """GET /certs/ca (no authentication)."""
    resp = requests.get(f"{lab.url}/certs/ca", timeout=TIMEOUT)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("application/x-pem-file")
    return resp.text


def send_csr(lab: RunningLabServer, body: object, header: str | None) -> requests.Response:
    """POST /certs/csr."""
    headers = {"Authorization": header} if header is not None else {}
    return requests.post(f"{lab.url}/certs/csr", json=body, headers=headers, timeout=TIMEOUT)


def test_mapping_with_x509(lab: RunningLabServer, token: str) -> None:
    """X.509 on: client_cert/client_key per thing and ca_cert; CN is the thing id, not the key."""
    body = provision(lab, token, "gw-x509")
    thing = body["things"][0]  # type: ignore[index]
    cert, key = body["client_cert"][thing["id"]], body["client_key"][thing["id"]]  # type: ignore[index]
    assert body["ca_cert"] == ca_pem(lab)
    pki.verify_chain(cert, ca_pem(lab))
    assert pki.cert_matches_key(cert, key)
    info = pki.parse_certificate(cert)
    assert info.common_name == thing["id"]
    assert thing["key"] not in info.subject
    remaining = info.not_after - datetime.now(timezone.utc)
    assert timedelta(seconds=3) < remaining <= timedelta(seconds=6)
    assert provision(lab, token, "gw-x509") == body
    bootstrap = requests.get(f"{lab.url}/things/bootstrap/gw-x509", headers={"Authorization": "k"},
                             timeout=TIMEOUT).json()
    assert bootstrap["client_cert"] == cert
    assert bootstrap["client_key"] == key
    assert bootstrap["ca_cert"] == body["ca_cert"]


def test_signed_certificates_are_logged_in_lines_of_many(
        lab: RunningLabServer, token: str, caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    """8 concurrent CSRs: every thing and serial is logged exactly once, thing and serial at
    the same place in a line's lists, in lines of several (one a second at most)."""
    caplog.set_level(logging.INFO, logger="edge_provision.lab.service")
    things = [provision(lab, token, f"gw-log-{n}")["things"][0] for n in range(8)]  # type: ignore[index]
    key = pki.generate_key("ec")
    barrier = threading.Barrier(8, timeout=TIMEOUT)
    answers: list[dict[str, str]] = []

    def sign(thing: dict[str, str]) -> None:
        barrier.wait()
        resp = send_csr(lab, {"thing_id": thing["id"], "csr": pki.make_csr(key, "x")},
                        f"Thing {thing['key']}")  # fmt: skip
        assert resp.status_code == 201, resp.text
        answers.append(resp.json())

    threads = [threading.Thread(target=sign, args=(t,)) for t in things]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT * 3)
    lab.service.flush_log()
    logged: list[tuple[str, str]] = []
    for record in caplog.records:
        line = record.getMessage()
        if line.startswith("certificates issued"):
            ids = json.loads(line.split("thing_ids=")[1].split(" serials=")[0])
            serials = json.loads(line.split("serials=")[1].split(" ttl_s=")[0])
            assert int(line.split("count=")[1].split()[0]) == len(ids) == len(serials)
            assert json.loads(line.split("ttl_s=")[1]) == [5]
            logged += zip(ids, serials)
    assert sorted(logged) == sorted((a["thing_id"], a["cert_serial"]) for a in answers)
    assert len(answers) == 8


def test_csr_issuance_and_revocation(lab: RunningLabServer, token: str) -> None:
    """A CSR signed for a thing verifies against the CA; lookup and revocation work."""
    thing = provision(lab, token, "gw-csr")["things"][0]  # type: ignore[index]
    key = pki.generate_key("ec")
    csr = pki.make_csr(key, "anything")
    resp = send_csr(lab, {"thing_id": thing["id"], "csr": csr, "ttl_s": 2},
                    f"Thing {thing['key']}")
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert set(body) == {"thing_id", "client_cert", "cert_serial", "expiration", "ca_cert"}
    assert body["ca_cert"] == ca_pem(lab)
    pki.verify_chain(body["client_cert"], body["ca_cert"])
    assert pki.cert_matches_key(body["client_cert"], pki.key_to_pem(key))
    info = pki.parse_certificate(body["client_cert"])
    assert info.common_name == thing["id"]
    assert info.serial == body["cert_serial"]
    expiration = datetime.strptime(body["expiration"], "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=timezone.utc)
    assert abs((expiration - info.not_after).total_seconds()) < 1
    with pytest.raises(CertificateError):
        pki.verify_chain(body["client_cert"], body["ca_cert"],
                         now=datetime.now(timezone.utc) + timedelta(seconds=4))
    auth = {"Authorization": f"Bearer {token}"}
    looked_up = requests.get(f"{lab.url}/certs/{body['cert_serial']}", headers=auth,
                             timeout=TIMEOUT).json()
    assert looked_up["cert"] == body["client_cert"]
    assert looked_up["thing_id"] == thing["id"]
    assert looked_up["revoked"] is False
    assert looked_up["expiration"] == body["expiration"]
    revoked = requests.delete(f"{lab.url}/certs/{thing['id']}", headers=auth, timeout=TIMEOUT)
    assert revoked.status_code == 200
    assert body["cert_serial"] in revoked.json()["revoked"]
    assert requests.get(f"{lab.url}/certs/{body['cert_serial']}", headers=auth,
                        timeout=TIMEOUT).json()["revoked"] is True
    again = requests.delete(f"{lab.url}/certs/{thing['id']}", headers=auth, timeout=TIMEOUT)
    assert again.json() == {"revoked": []}


def test_csr_certificate_revokes_the_server_made_one(lab: RunningLabServer, token: str) -> None:
    """Once a thing has a CSR-issued certificate, the server-made one (key from /mapping) is
    revoked, the CSR-issued ones never are, and the broker is told (a ``revoke`` event)."""
    events: list[str] = []
    lab.service.add_listener(lambda event, _thing_id: events.append(event))
    body = provision(lab, token, "gw-own-key")
    thing = body["things"][0]  # type: ignore[index]
    server_made = pki.parse_certificate(body["client_cert"][thing["id"]]).serial  # type: ignore[index]
    auth = {"Authorization": f"Bearer {token}"}

    def revoked(serial: str) -> bool:
        resp = requests.get(f"{lab.url}/certs/{serial}", headers=auth, timeout=TIMEOUT)
        assert resp.status_code == 200, resp.text
        return bool(resp.json()["revoked"])

    assert revoked(server_made) is False
    serials = []
    for _ in range(2):
        resp = send_csr(lab, {"thing_id": thing["id"],
                              "csr": pki.make_csr(pki.generate_key("ec"), "x")},
                        f"Thing {thing['key']}")
        assert resp.status_code == 201, resp.text
        serials.append(resp.json()["cert_serial"])
    assert revoked(server_made) is True
    assert [revoked(s) for s in serials] == [False, False]
    assert events == ["mapping", "revoke"]  # the second CSR had nothing left to revoke
    other = provision(lab, token, "gw-untouched")
    other_thing = other["things"][0]  # type: ignore[index]
    other_serial = pki.parse_certificate(other["client_cert"][other_thing["id"]]).serial  # type: ignore[index]
    assert revoked(other_serial) is False


def test_csr_ttl_is_capped(lab: RunningLabServer, token: str) -> None:
    """A requested ttl_s above the configured validity is lowered to it."""
    thing = provision(lab, token, "gw-cap")["things"][0]  # type: ignore[index]
    csr = pki.make_csr(pki.generate_key("ec"), "x")
    resp = send_csr(lab, {"thing_id": thing["id"], "csr": csr, "ttl_s": 10**9}, thing["key"])
    assert resp.status_code == 201
    info = pki.parse_certificate(resp.json()["client_cert"])
    assert info.not_after - datetime.now(timezone.utc) <= timedelta(seconds=6)


def test_csr_errors(lab: RunningLabServer, token: str) -> None:
    """Wrong or missing thing key gives 401; a bad CSR or ttl_s gives 400 saying why."""
    thing = provision(lab, token, "gw-csr-err")["things"][0]  # type: ignore[index]
    csr = pki.make_csr(pki.generate_key("ec"), "x")
    good = {"thing_id": thing["id"], "csr": csr}
    for header in (None, "", "Thing wrong", token):
        resp = send_csr(lab, good, header)
        assert resp.status_code == 401, resp.text
        assert "Thing" in resp.json()["error"]
    unknown = send_csr(lab, {"thing_id": "no-such-thing", "csr": csr}, thing["key"])
    assert unknown.status_code == 401
    bad = send_csr(lab, {"thing_id": thing["id"], "csr": "not a csr"}, thing["key"])
    assert bad.status_code == 400
    assert "CSR" in bad.json()["error"] or "csr" in bad.json()["error"].lower()
    for ttl in (0, -5, "10", 1.5, True):
        resp = send_csr(lab, {**good, "ttl_s": ttl}, thing["key"])
        assert resp.status_code == 400, ttl
        assert "ttl_s" in resp.json()["error"]
    whole = send_csr(lab, {**good, "ttl_s": 3.0}, thing["key"])  # JSON Schema's integer
    assert whole.status_code == 201, whole.text
    missing = send_csr(lab, {"thing_id": thing["id"]}, thing["key"])
    assert missing.status_code == 400
    assert "csr" in missing.json()["error"]


def test_cert_lookup_and_listing_need_the_token(lab: RunningLabServer, token: str) -> None:
    """GET /certs and /certs/{serial} need the operator token; unknown serials are 404."""
    assert requests.get(f"{lab.url}/certs", timeout=TIMEOUT).status_code == 401
    assert requests.get(f"{lab.url}/certs/abcd", timeout=TIMEOUT).status_code == 401
    assert requests.delete(f"{lab.url}/certs/abcd", timeout=TIMEOUT).status_code == 401
    auth = {"Authorization": token}
    missing = requests.get(f"{lab.url}/certs/abcd", headers=auth, timeout=TIMEOUT)
    assert missing.status_code == 404
    assert "abcd" in missing.json()["error"]
    provision(lab, token, "gw-list")
    listing = requests.get(f"{lab.url}/certs?limit=5", headers=auth, timeout=TIMEOUT).json()
    assert listing["total"] == 1
    (cert,) = listing["certs"]
    assert set(cert) == {"thing_id", "cert_serial", "not_before", "expiration", "revoked"}
