"""The lab server's device-facing Bootstrap endpoints (plain and secure), and restarts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from _lab_util import lab_settings

from edge_provision.crypto import bootstrap_cipher
from edge_provision.lab.server import TOKEN_FILE, RunningLabServer, start_in_thread

TIMEOUT = 10
LAYOUT = """
[bootstrap]
  [bootstrap.content.agent.mqtt]
    url = "tcp://127.0.0.1:1883"

[[things]]
  name = "sensor"

[[things]]
  name = "gateway"
  [things.metadata]
    external_id = ""

[[channels]]
  name = "data-channel"
  [channels.metadata]
    type = "data"

[[channels]]
  name = "control-channel"
  [channels.metadata]
    type = "control"
"""
NOT_FOUND = {"error": "no bootstrap configuration for this external_id and key"}
ENC_KEY_HEX = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[RunningLabServer]:
    """A lab server with the built-in layout."""
    with start_in_thread(lab_settings(tmp_path)) as server:
        yield server
        assert server.service.internal_errors == 0


def token_of(tmp_path: Path) -> str:
    """The token the lab server generated."""
    return (tmp_path / "lab" / TOKEN_FILE).read_text().strip()


def provision(lab: RunningLabServer, token: str, external_id: str, key: str
              ) -> dict[str, object]:
    """POST /mapping and return the 201 body."""
    resp = requests.post(f"{lab.url}/mapping", json={"external_id": external_id,
                                                     "external_key": key},
                         headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT)
    assert resp.status_code == 201, resp.text
    body: dict[str, object] = resp.json()
    return body


def fetch(lab: RunningLabServer, external_id: str, header: str | None,
          secure: bool = False) -> requests.Response:
    """GET the device bootstrap endpoint."""
    path = "secure/" if secure else ""
    headers = {"Authorization": header} if header is not None else {}
    return requests.get(f"{lab.url}/things/bootstrap/{path}{external_id}", headers=headers,
                        timeout=TIMEOUT)


@pytest.mark.parametrize("form", ["{}", "Thing {}", "thing  {}"])
def test_plain_bootstrap(lab: RunningLabServer, tmp_path: Path, form: str) -> None:
    """The external key (bare or Thing) returns 0.12 and newer field names side by side."""
    mapping = provision(lab, token_of(tmp_path), "aa:bb:cc:00:00:01", "ext-key")
    resp = fetch(lab, "aa:bb:cc:00:00:01", form.format("ext-key"))
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/json"
    body = resp.json()
    thing = mapping["things"][0]  # type: ignore[index]
    assert body["mainflux_id"] == body["thing_id"] == thing["id"]
    assert body["mainflux_key"] == body["thing_key"] == thing["key"]
    assert body["mainflux_channels"] == body["channels"] == mapping["channels"]
    assert body["mainflux_channels"][0]["metadata"]["type"] == "control"
    assert isinstance(body["content"], str)
    assert json.loads(body["content"]) == {}
    for absent in ("client_cert", "client_key", "ca_cert", "extra_things"):
        assert absent not in body


def test_multi_thing_bootstrap_orders_control_first(tmp_path: Path) -> None:
    """Control channel first, content as a JSON string, other things as extra_things."""
    layout = tmp_path / "layout.toml"
    layout.write_text(LAYOUT)
    with start_in_thread(lab_settings(tmp_path, layout_file=layout)) as lab:
        mapping = provision(lab, token_of(tmp_path), "gw-multi", "k")
        body = fetch(lab, "gw-multi", "Thing k").json()
        things = mapping["things"]
        assert body["mainflux_id"] == things[1]["id"]  # type: ignore[index]
        assert [c["name"] for c in body["mainflux_channels"]] == ["control-channel",
                                                                  "data-channel"]
        assert json.loads(body["content"]) == {"agent": {"mqtt": {"url": "tcp://127.0.0.1:1883"}}}
        assert body["extra_things"] == [things[0]]  # type: ignore[index]


def test_wrong_key_and_unknown_id_look_the_same(lab: RunningLabServer, tmp_path: Path) -> None:
    """A wrong key and an unknown external_id get identical 404 answers."""
    provision(lab, token_of(tmp_path), "gw-known", "right")
    wrong = fetch(lab, "gw-known", "Thing wrong")
    unknown = fetch(lab, "gw-unknown", "Thing right")
    for resp in (wrong, unknown):
        assert resp.status_code == 404
        assert resp.json() == NOT_FOUND
        assert resp.headers["Content-Type"] == "application/json"
    assert wrong.content == unknown.content


def test_missing_header_is_401(lab: RunningLabServer) -> None:
    """No Authorization header on the device endpoints gets 401 naming the expected form."""
    for secure in (False, True):
        resp = fetch(lab, "gw-x", None, secure=secure)
        assert resp.status_code == 401
        assert "Thing" in resp.json()["error"]


def test_secure_bootstrap(tmp_path: Path) -> None:
    """Encrypted key in, raw iv||AES-CFB(json) out, with the configured key."""
    key = bootstrap_cipher.parse_encrypt_key(ENC_KEY_HEX)
    with start_in_thread(lab_settings(tmp_path, encrypt_key_hex=ENC_KEY_HEX)) as lab:
        provision(lab, token_of(tmp_path), "gw-sec", "sec-key")
        plain = fetch(lab, "gw-sec", "Thing sec-key").json()
        for form in ("Thing {}", "{}"):
            header = form.format(bootstrap_cipher.encrypt_external_key_header(key, "sec-key"))
            resp = fetch(lab, "gw-sec", header, secure=True)
            assert resp.status_code == 200
            assert resp.headers["Content-Type"] == "application/json"
            assert json.loads(bootstrap_cipher.decrypt(key, resp.content)) == plain
        header = bootstrap_cipher.encrypt_external_key_header(key, "no")
        wrong = fetch(lab, "gw-sec", "Thing " + header,
                      secure=True)
        unknown = fetch(lab, "gw-none",
                        "Thing " + bootstrap_cipher.encrypt_external_key_header(key, "sec-key"),
                        secure=True)
        other_key = bootstrap_cipher.parse_encrypt_key(bootstrap_cipher.DEFAULT_ENCRYPT_KEY_HEX)
        foreign = fetch(lab, "gw-sec", "Thing " + bootstrap_cipher.encrypt_external_key_header(
            other_key, "sec-key"), secure=True)
        assert wrong.status_code == unknown.status_code == foreign.status_code == 404
        assert wrong.json() == unknown.json() == foreign.json() == NOT_FOUND
        not_hex = fetch(lab, "gw-sec", "Thing sec-key", secure=True)
        assert not_hex.status_code == 401
        assert "hex" in not_hex.json()["error"]
        assert lab.service.internal_errors == 0


def test_restart_keeps_state_and_token(tmp_path: Path) -> None:
    """After a restart on the same state dir, bootstrap works and the token file is reused."""
    settings = lab_settings(tmp_path)
    with start_in_thread(settings) as lab:
        token = token_of(tmp_path)
        mapping = provision(lab, token, "gw-restart", "k")
    assert (tmp_path / "lab" / TOKEN_FILE).stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "lab").stat().st_mode & 0o777 == 0o700
    with start_in_thread(settings) as lab:
        assert token_of(tmp_path) == token
        assert fetch(lab, "gw-restart", "k").json()["mainflux_id"] == mapping["things"][0]["id"]  # type: ignore[index]
        again = provision(lab, token, "gw-restart", "k")
        assert again == mapping
        things = requests.get(f"{lab.url}/things", headers={"Authorization": token},
                              timeout=TIMEOUT).json()
        assert things["total"] == 1
