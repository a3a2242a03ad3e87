"""The lab server with the mainflux backend, over HTTP, against the fake Mainflux.

Calls counted on /metrics, errors as the lab's clients see them (the platform's trouble
is never the client's 401), certificates signed by the lab CA with their records kept
in the state directory, and the settings that stop a start.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from _lab_util import lab_settings

from edge_provision.crypto import pki
from edge_provision.errors import ConfigError
from edge_provision.lab.server import TOKEN_FILE, RunningLabServer, start_in_thread
from edge_provision.testing.mainflux import ADMIN_EMAIL, ADMIN_PASSWORD, FakeMainflux

TIMEOUT = 10
EXT_ID = "02:42:ac:11:00:31"
EXT_KEY = "serve-mainflux-key-31"
UPSTREAM = "edge_provision_lab_upstream_requests_total"


def mainflux_env(fake: FakeMainflux, *, login: bool = False,
                 api_key: str | None = None) -> dict[str, str]:
    """Upstream Provision's variables pointing at ``fake`` (an API key, or a login)."""
    env = {"EDGE_PROVISION_LAB_BACKEND": "mainflux",
           "MF_PROVISION_THINGS_LOCATION": fake.things_url,
           "MF_PROVISION_BS_SVC_URL": fake.bootstrap_url + "/things"}
    if login:
        env.update(MF_PROVISION_USERS_LOCATION=fake.users_url, MF_PROVISION_USER=ADMIN_EMAIL,
                   MF_PROVISION_PASS=ADMIN_PASSWORD)
    else:
        env["MF_PROVISION_API_KEY"] = api_key if api_key is not None else fake.api_key()
    return env


@pytest.fixture(params=["0.12", "0.13"])
def fake(request: pytest.FixtureRequest) -> Iterator[FakeMainflux]:
    """A started fake Mainflux of each generation."""
    with FakeMainflux(generation=request.param) as f:
        yield f


def start(tmp_path: Path, env: dict[str, str], **overrides: object) -> RunningLabServer:
    """A lab server on 127.0.0.1:0 with ``env`` (state in ``tmp_path/lab``)."""
    return start_in_thread(lab_settings(tmp_path, env=env, **overrides))


@pytest.fixture
def lab(tmp_path: Path, fake: FakeMainflux) -> Iterator[RunningLabServer]:
    """The lab in front of ``fake``, logged in with user and password (token generated)."""
    with start(tmp_path, mainflux_env(fake, login=True)) as server:
        yield server
        assert server.service.internal_errors == 0


@pytest.fixture
def auth(tmp_path: Path, lab: RunningLabServer) -> dict[str, str]:
    """The lab's own operator token as a header."""
    return {"Authorization": f"Bearer {(tmp_path / 'lab' / TOKEN_FILE).read_text().strip()}"}


def post_mapping(lab: RunningLabServer, headers: dict[str, str], external_id: str = EXT_ID,
                 external_key: str = EXT_KEY) -> requests.Response:
    """POST /mapping for one gateway."""
    return requests.post(f"{lab.url}/mapping", headers=headers, timeout=TIMEOUT,
                         json={"external_id": external_id, "external_key": external_key})


def upstream_calls(lab: RunningLabServer) -> dict[tuple[str, str, str], float]:
    """The lab's upstream request counter from /metrics: (service, endpoint, status) -> n."""
    text = requests.get(f"{lab.url}/metrics", timeout=TIMEOUT).text
    found = {}
    for labels, value in re.findall(rf"^{UPSTREAM}\{{(.*)\}} (\S+)$", text, re.M):
        parts = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        found[(parts["service"], parts["endpoint"], parts["status"])] = float(value)
    return found


def delta(after: dict[tuple[str, str, str], float],
          before: dict[tuple[str, str, str], float]) -> dict[tuple[str, str, str], float]:
    """What was counted between two readings (the /metrics scrape's own 3 calls excluded)."""
    scrape = {("things", "GET /things"), ("things", "GET /channels"),
              ("bootstrap", "GET /things/configs")}
    out = {}
    for key, value in after.items():
        grown = value - before.get(key, 0.0)
        if key[:2] in scrape:
            grown -= 1  # each reading counts things, channels and configs once
        if grown:
            out[key] = grown
    return out


def test_health_and_banner_name_the_backend(lab: RunningLabServer) -> None:
    """/health says mainflux and that the lab CA signs; the service info says where things are."""
    body = requests.get(f"{lab.url}/health", timeout=TIMEOUT).json()
    assert (body["status"], body["backend"], body["certs"]) == ("pass", "mainflux", "lab-ca")
    info = lab.service.info
    assert info.backend == "mainflux" and info.db_path.name == "certs.db"
    assert any(line.startswith("backend: mainflux, things http://127.0.0.1:")
               and "login as admin@example.com" in line for line in info.backend_banner)


def test_a_mapping_costs_five_calls_a_repeat_two(lab: RunningLabServer, fake: FakeMainflux,
                                                 auth: dict[str, str]) -> None:
    """/metrics counts what the platform received: 5 calls for a new gateway, 2 for a repeat."""
    assert post_mapping(lab, auth, "warm-up").status_code == 201  # login, header form settled
    before = upstream_calls(lab)
    fake.reset_calls()
    first = post_mapping(lab, auth)
    assert first.status_code == 201, first.text
    counted = delta(upstream_calls(lab), before)
    assert sum(counted.values()) == 5
    assert {(s, e) for s, e, _st in counted} == {
        ("things", "GET /things"), ("things", "POST /things/bulk"),
        ("things", "POST /channels/bulk"), ("bootstrap", "POST /things/configs"),
        ("bootstrap", "PUT /things/state/{id}")}
    received = fake.call_counts()
    fake.reset_calls()
    before = upstream_calls(lab)
    again = post_mapping(lab, auth)
    assert again.status_code == 201 and again.json() == first.json()
    assert sum(delta(upstream_calls(lab), before).values()) == 2
    assert sum(received.values()) - 3 == 5  # the fake agrees (minus one /metrics scrape)
    thing = first.json()["things"][0]
    on_platform = [t for t in fake.things() if t["id"] == thing["id"]]
    assert len(on_platform) == 1 and on_platform[0]["key"] == thing["key"]


def test_another_key_is_a_409_with_an_error(lab: RunningLabServer, fake: FakeMainflux,
                                            auth: dict[str, str]) -> None:
    """The same external_id with another key: 409 {"error"}, nothing new on the platform."""
    assert post_mapping(lab, auth).status_code == 201
    before = fake.counts()
    resp = post_mapping(lab, auth, external_key="another-key")
    assert resp.status_code == 409
    assert set(resp.json()) == {"error"} and "different external_key" in resp.json()["error"]
    assert fake.counts() == before


def test_delete_thing_removes_it_from_the_platform(lab: RunningLabServer, fake: FakeMainflux,
                                                  auth: dict[str, str]) -> None:
    """DELETE /things/{id}: config and thing gone on the platform; the gateway maps again."""
    first = post_mapping(lab, auth)
    assert first.status_code == 201, first.text
    gateway = first.json()["things"][0]["id"]
    assert any(c["mainflux_id"] == gateway for c in fake.configs())
    resp = requests.delete(f"{lab.url}/things/{gateway}", headers=auth, timeout=TIMEOUT)
    assert resp.status_code == 204, resp.text
    assert gateway not in {t["id"] for t in fake.things()}
    assert not any(c["mainflux_id"] == gateway for c in fake.configs())
    again = requests.delete(f"{lab.url}/things/{gateway}", headers=auth, timeout=TIMEOUT)
    assert again.status_code == 204  # unknown ids too, as upstream
    second = post_mapping(lab, auth)
    assert second.status_code == 201, second.text
    assert second.json()["things"][0]["id"] != gateway


def test_platform_down_is_503_with_retry_after(lab: RunningLabServer, fake: FakeMainflux,
                                               auth: dict[str, str]) -> None:
    """A 503 from Things mid-mapping: the lab answers 503 + Retry-After and leaves nothing."""
    assert post_mapping(lab, auth, "warm-up").status_code == 201
    before = fake.counts()
    fake.fail("POST /channels/bulk", status=503)
    resp = post_mapping(lab, auth)
    assert resp.status_code == 503
    assert int(resp.headers["Retry-After"]) >= 1
    message = resp.json()["error"]
    assert "unavailable" in message and fake.things_url not in message
    assert fake.counts() == before  # the things made before the failure were deleted
    fake.fail("GET /things", status=503)
    boot = requests.get(f"{lab.url}/things/bootstrap/{EXT_ID}", timeout=TIMEOUT,
                        headers={"Authorization": f"Thing {EXT_KEY}"})
    assert boot.status_code == 503 and "Retry-After" in boot.headers
    assert post_mapping(lab, auth).status_code == 201  # and it works once the platform is back


def test_metrics_answer_while_the_platform_is_down(lab: RunningLabServer,
                                                  fake: FakeMainflux) -> None:
    """/metrics stays 200 when the platform cannot be counted, and shows the failing calls."""
    fake.fail("GET /things", status=503, times=3)
    resp = requests.get(f"{lab.url}/metrics", timeout=TIMEOUT)
    assert resp.status_code == 200
    assert 'endpoint="GET /things",service="things",status="503"} 1' in resp.text
    assert "edge_provision_lab_certificates 0" in resp.text
    assert "edge_provision_lab_things " not in resp.text  # unknown, not a made-up 0


@pytest.mark.parametrize("login", [False, True], ids=["api-key", "login"])
def test_refused_lab_credentials_are_not_the_clients_401(tmp_path: Path, fake: FakeMainflux,
                                                         login: bool) -> None:
    """The platform refusing the LAB's key or password: 503 naming the setting, never 401."""
    if login:
        fake.add_user(ADMIN_EMAIL, "the-password-was-changed")
        env = mainflux_env(fake, login=True)
        setting = "MF_PROVISION_USER/MF_PROVISION_PASS"
    else:
        env = mainflux_env(fake, api_key="revoked-or-mistyped-api-key")
        setting = "MF_PROVISION_API_KEY"
    with start(tmp_path, env) as lab:
        token = (tmp_path / "lab" / TOKEN_FILE) if login else None
        header = (token.read_text().strip() if token is not None
                  else "revoked-or-mistyped-api-key")
        replies = [
            post_mapping(lab, {"Authorization": f"Bearer {header}"}),
            requests.get(f"{lab.url}/things/bootstrap/{EXT_ID}", timeout=TIMEOUT,
                         headers={"Authorization": f"Thing {EXT_KEY}"}),
            requests.post(f"{lab.url}/certs/csr", timeout=TIMEOUT,
                          headers={"Authorization": "Thing some-thing-key"},
                          json={"thing_id": "some-thing",
                                "csr": pki.make_csr(pki.generate_key(), "x")}),
        ]
        for resp in replies:
            assert resp.status_code == 503, resp.text
            assert "WWW-Authenticate" not in resp.headers and int(resp.headers["Retry-After"]) > 1
            assert setting in resp.json()["error"] and "lab operator" in resp.json()["error"]
        assert lab.service.internal_errors == 0
    assert fake.counts()["things"] == 0


def test_csr_certificates_are_kept_by_the_lab(tmp_path: Path, fake: FakeMainflux) -> None:
    """POST /certs/csr: thing checked at the platform, signed by the lab CA, recorded in
    certs.db (0600); lookup, listing and revocation work, and survive a restart."""
    env = mainflux_env(fake)
    headers = {"Authorization": f"Bearer {env['MF_PROVISION_API_KEY']}"}
    with start(tmp_path, env) as lab:
        thing = post_mapping(lab, headers).json()["things"][0]
        csr = pki.make_csr(pki.generate_key(), "ignored")
        wrong = requests.post(f"{lab.url}/certs/csr", timeout=TIMEOUT, json={
            "thing_id": thing["id"], "csr": csr}, headers={"Authorization": "Thing wrong-key"})
        assert wrong.status_code == 401  # the client's own credential: its 401
        signed = requests.post(f"{lab.url}/certs/csr", timeout=TIMEOUT,
                               json={"thing_id": thing["id"], "csr": csr},
                               headers={"Authorization": f"Thing {thing['key']}"})
        assert signed.status_code == 201, signed.text
        serial = signed.json()["cert_serial"]
        assert signed.json()["ca_cert"] == requests.get(f"{lab.url}/certs/ca",
                                                        timeout=TIMEOUT).text
        record = requests.get(f"{lab.url}/certs/{serial}", headers=headers, timeout=TIMEOUT)
        assert record.json()["thing_id"] == thing["id"] and record.json()["revoked"] is False
        listing = requests.get(f"{lab.url}/certs", headers=headers, timeout=TIMEOUT).json()
        assert listing["total"] == 1 and listing["certs"][0]["cert_serial"] == serial
    store = tmp_path / "lab" / "certs.db"
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    with start(tmp_path, env) as again:
        revoked = requests.delete(f"{again.url}/certs/{thing['id']}", headers=headers,
                                  timeout=TIMEOUT)
        assert revoked.json() == {"revoked": [serial]}
        record = requests.get(f"{again.url}/certs/{serial}", headers=headers, timeout=TIMEOUT)
        assert record.json()["revoked"] is True
        text = requests.get(f"{again.url}/metrics", timeout=TIMEOUT).text
        assert "edge_provision_lab_certificates 1" in text


def test_x509_at_mapping_goes_into_the_config_and_the_records(
    tmp_path: Path, fake: FakeMainflux
) -> None:
    """MF_PROVISION_X509_PROVISIONING: the lab CA's key and certificate reach the gateway through
    the bootstrap config on the platform; the lab keeps the record, not the key; a CSR-signed
    certificate revokes the server-made one."""
    env = {**mainflux_env(fake), "MF_PROVISION_X509_PROVISIONING": "true",
           "EDGE_PROVISION_LAB_KEY_TYPE": "ec", "MF_PROVISION_CERTS_RSA_BITS": "256"}
    headers = {"Authorization": f"Bearer {env['MF_PROVISION_API_KEY']}"}
    with start(tmp_path, env) as lab:
        made = post_mapping(lab, headers).json()
        thing_id = made["things"][0]["id"]
        assert set(made["client_cert"]) == {thing_id} and made["ca_cert"] == lab.service.ca_pem
        boot = requests.get(f"{lab.url}/things/bootstrap/{EXT_ID}", timeout=TIMEOUT,
                            headers={"Authorization": f"Thing {EXT_KEY}"}).json()
        assert boot["client_cert"] == made["client_cert"][thing_id]
        assert boot["client_key"] == made["client_key"][thing_id]
        certs = requests.get(f"{lab.url}/certs", headers=headers, timeout=TIMEOUT).json()
        assert [c["thing_id"] for c in certs["certs"]] == [thing_id]
        server_made = certs["certs"][0]["cert_serial"]
        signed = requests.post(f"{lab.url}/certs/csr", timeout=TIMEOUT, json={
            "thing_id": thing_id, "csr": pki.make_csr(pki.generate_key(), thing_id)},
            headers={"Authorization": f"Thing {made['things'][0]['key']}"})
        assert signed.status_code == 201, signed.text
        old = requests.get(f"{lab.url}/certs/{server_made}", headers=headers, timeout=TIMEOUT)
        new = requests.get(f"{lab.url}/certs/{signed.json()['cert_serial']}", headers=headers,
                           timeout=TIMEOUT)
        assert old.json()["revoked"] is True  # the key the lab made is no longer trusted
        assert new.json()["revoked"] is False
    assert b"PRIVATE KEY" not in (tmp_path / "lab" / "certs.db").read_bytes()


def test_leftovers_are_counted_on_metrics(lab: RunningLabServer, fake: FakeMainflux,
                                          auth: dict[str, str]) -> None:
    """A thing the failed run could not delete is counted in upstream_leftovers_total."""
    assert post_mapping(lab, auth, "warm-up").status_code == 201
    fake.fail("POST /things/configs", status=500)
    fake.fail("DELETE /things/{id}", status=500)
    assert post_mapping(lab, auth).status_code == 503
    text = requests.get(f"{lab.url}/metrics", timeout=TIMEOUT).text
    assert 'edge_provision_lab_upstream_leftovers_total{kind="things"} 1' in text
    assert 'endpoint="DELETE /things/{id}",service="things",status="500"} 1' in text


# ------------------------------------------------------------------ start-up


def test_missing_platform_settings_stop_the_start(tmp_path: Path) -> None:
    """--backend mainflux without URLs or credentials: one ConfigError naming every variable."""
    with pytest.raises(ConfigError) as err:
        start(tmp_path, {"EDGE_PROVISION_LAB_BACKEND": "mainflux",
                         "MF_PROVISION_USER": "someone@example.com"})
    text = str(err.value)
    for name in ("MF_PROVISION_THINGS_LOCATION", "MF_PROVISION_BS_SVC_URL", "MF_PROVISION_PASS"):
        assert name in text


def test_settings_the_backend_cannot_use_stop_the_start(tmp_path: Path) -> None:
    """A lab mosquitto, or a layout without a bootstrap config: refused before serving."""
    env = {"EDGE_PROVISION_LAB_BACKEND": "mainflux", "MF_PROVISION_API_KEY": "some-key",
           "MF_PROVISION_THINGS_LOCATION": "http://127.0.0.1:9", "MF_PROVISION_BS_SVC_URL":
           "http://127.0.0.1:9/things"}
    with pytest.raises(ConfigError, match="MQTT adapter"):
        start(tmp_path, {**env, "EDGE_PROVISION_LAB_MQTT": "true"})
    with pytest.raises(ConfigError, match=r"bootstrap\.provision"):
        start(tmp_path, {**env, "MF_PROVISION_BS_CONFIG_PROVISIONING": "false"})


def test_the_embedded_backend_never_loads_the_mainflux_one(tmp_path: Path) -> None:
    """Backends are imported lazily: an embedded lab does not load the mainflux subpackage."""
    code = ("import sys\nfrom edge_provision.lab.server import build_service\n"
            "from edge_provision.settings import load_lab_settings\n"
            f"s = build_service(load_lab_settings({{'state_dir': {str(tmp_path)!r}}}, env={{}}))\n"
            "s.close()\n"
            "print(sorted(m for m in sys.modules if m.startswith('edge_provision.lab.backends')))")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MF_", "EDGE_PROVISION_"))}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env=env, check=False)
    assert done.returncode == 0, done.stderr
    loaded = done.stdout.strip()
    assert "edge_provision.lab.backends.embedded" in loaded and "mainflux" not in loaded
