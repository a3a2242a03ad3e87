"""Hostile and impossible identities at ``POST /mapping`` and ``POST /certs/csr``, over real HTTP.

Control characters (U+0000-U+001F, U+007F) in ids, keys and names are refused
with a 400 naming the field; so are identities that could never bootstrap (an
external_key with whitespace or outside Latin-1, an external_id with ``/`` or a
dot segment). A NUL never reaches the database, and the database keeps any
value whole (no round trip through SQLite's JSON functions).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from _lab_util import lab_settings, operator_auth, serving

from edge_provision.lab.server import RunningLabServer

TIMEOUT = 10
CONTROLS = ["\x00", "\x01", "\t", "\n", "\r", "\x1b", "\x1f", "\x7f"]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[RunningLabServer]:
    """A lab server with a generated token."""
    with serving(lab_settings(tmp_path)) as server:
        yield server


@pytest.fixture
def auth(tmp_path: Path, lab: RunningLabServer) -> dict[str, str]:
    """The operator's Authorization header."""
    return operator_auth(tmp_path)


def _map(lab: RunningLabServer, auth: dict[str, str], body: dict[str, object]
         ) -> requests.Response:
    return requests.post(f"{lab.url}/mapping", json=body, headers=auth, timeout=TIMEOUT)


def _error(resp: requests.Response, *words: str) -> str:
    """The 400's message, which must contain every one of ``words``."""
    assert resp.status_code == 400, resp.text
    message: str = resp.json()["error"]
    for word in words:
        assert word in message, message
    return message


def _total(lab: RunningLabServer, auth: dict[str, str], path: str) -> int:
    resp = requests.get(f"{lab.url}{path}", headers=auth, timeout=TIMEOUT)
    assert resp.status_code == 200
    return int(resp.json()["total"])


@pytest.mark.parametrize("field", ["external_id", "external_key", "name"])
@pytest.mark.parametrize("char", CONTROLS)
def test_control_characters_are_refused_naming_the_field(
    lab: RunningLabServer, auth: dict[str, str], field: str, char: str
) -> None:
    """A control character anywhere in external_id, external_key or name is a 400 naming it."""
    body = {"external_id": "gw", "external_key": "k", field: f"gw{char}evil"}
    message = _error(_map(lab, auth, body), f"'{field}'", "control character",
                     f"U+{ord(char):04X}")
    assert char not in message
    assert _total(lab, auth, "/things") == 0


def test_concurrent_nul_requests_never_take_another_record(
    lab: RunningLabServer, auth: dict[str, str]
) -> None:
    """50 concurrent ``gw\\u0000evil`` requests: all 400, no thing-set, ``gw`` stays its own."""
    barrier = threading.Barrier(50, timeout=TIMEOUT)

    def attack(_: int) -> int:
        barrier.wait()
        body = {"external_id": "gw\u0000evil", "external_key": "attacker"}
        return _map(lab, auth, body).status_code

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(attack, range(50), timeout=TIMEOUT * 3))
    assert results == [400] * 50
    assert _total(lab, auth, "/things") == 0
    assert _total(lab, auth, "/things/configs") == 0

    real = _map(lab, auth, {"external_id": "gw", "external_key": "owner-key"})
    assert real.status_code == 201, real.text
    again = _map(lab, auth, {"external_id": "gw\u0000evil", "external_key": "owner-key"})
    _error(again, "'external_id'", "U+0000")
    boot = requests.get(f"{lab.url}/things/bootstrap/gw", timeout=TIMEOUT,
                        headers={"Authorization": "Thing owner-key"})
    assert boot.status_code == 200
    assert boot.json()["thing_id"] == real.json()["things"][0]["id"]


@pytest.mark.parametrize(("body", "words"), [
    ({"external_id": "gw", "external_key": "two words"},
     ["'external_key'", "space", "Authorization"]),
    ({"external_id": "gw", "external_key": "tab\there"}, ["'external_key'", "U+0009"]),
    ({"external_id": "gw", "external_key": "ключ"}, ["'external_key'", "Latin-1", "U+043A"]),
    ({"external_id": "gw", "external_key": "key\u2028"}, ["'external_key'", "Latin-1"]),
    ({"external_id": "site/gw-1", "external_key": "k"}, ["'external_id'", "'/'", "path"]),
    ({"external_id": "..", "external_key": "k"}, ["'external_id'", "'..'"]),
    ({"external_id": ".", "external_key": "k"}, ["'external_id'", "'.'"]),
])
def test_identities_that_can_never_bootstrap_are_refused(
    lab: RunningLabServer, auth: dict[str, str], body: dict[str, str], words: list[str]
) -> None:
    """Keys a header cannot carry and ids a path cannot carry are refused with the reason."""
    _error(_map(lab, auth, body), *words)
    assert _total(lab, auth, "/things") == 0


@pytest.mark.parametrize(("external_id", "external_key"), [
    ("gw:ü-1", "clé-ñ"), ("gw?x=1#frag", "k&y=%41"), ("gw 1", "\u00a0nbsp\u00ff"),
])
def test_unusual_but_usable_identities_bootstrap(
    lab: RunningLabServer, auth: dict[str, str], external_id: str, external_key: str
) -> None:
    """What is accepted does bootstrap: Latin-1 keys, ids with spaces, ``?``, ``#``, non-ASCII."""
    created = _map(lab, auth, {"external_id": external_id, "external_key": external_key})
    assert created.status_code == 201, created.text
    path = requests.utils.quote(external_id, safe=":@")
    boot = requests.get(f"{lab.url}/things/bootstrap/{path}", timeout=TIMEOUT,
                        headers={"Authorization": f"Thing {external_key}".encode("latin-1")})
    assert boot.status_code == 200, boot.text
    assert boot.json()["thing_id"] == created.json()["things"][0]["id"]


@pytest.mark.parametrize("field", ["thing_id", "csr"])
def test_csr_fields_with_control_characters_are_refused(
    lab: RunningLabServer, auth: dict[str, str], field: str
) -> None:
    """A NUL in thing_id or csr is a 400 naming the field; the PEM's line breaks are fine."""
    thing = _map(lab, auth, {"external_id": "gw-csr", "external_key": "k"}).json()["things"][0]
    body = {"thing_id": thing["id"], "csr": "-----BEGIN CERTIFICATE REQUEST-----\nAA==\n"}
    body[field] += "\x00"
    resp = requests.post(f"{lab.url}/certs/csr", data=json.dumps(body), timeout=TIMEOUT,
                         headers={"Authorization": f"Thing {thing['key']}",
                                  "Content-Type": "application/json"})
    _error(resp, f"'{field}'", "U+0000")
