"""The lab server's Provision API (``/mapping``, ``/health``, errors), over real HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from _lab_util import lab_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_provision import __version__
from edge_provision.crypto import bootstrap_cipher
from edge_provision.crypto.pki import LocalCA
from edge_provision.lab.backends.embedded import EmbeddedBackend
from edge_provision.lab.http.app import create_app
from edge_provision.lab.models import CertIssuer, MappingRecord
from edge_provision.lab.server import TOKEN_FILE, RunningLabServer, start_in_thread
from edge_provision.lab.service import LabService, ServiceInfo
from edge_provision.layout import Plan, default_layout

TIMEOUT = 10
MULTI_LAYOUT = """
[bootstrap]
  provision = true
  autowhite_list = true
  [bootstrap.content.agent.heartbeat]
    interval = "30s"

[[things]]
  name = "sensor"
  [things.metadata]
    model = "th-100"

[[things]]
  name = "gateway"
  [things.metadata]
    external_id = "placeholder"

[[channels]]
  name = "data-channel"
  [channels.metadata]
    type = "data"

[[channels]]
  name = "events"

[[channels]]
  name = "control-channel"
  [channels.metadata]
    type = "control"
"""


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[RunningLabServer]:
    """A lab server with a generated token (header required)."""
    server = start_in_thread(lab_settings(tmp_path))
    yield server
    server.stop()
    assert server.service.internal_errors == 0


@pytest.fixture
def token(tmp_path: Path, lab: RunningLabServer) -> str:
    """The generated API token."""
    return (tmp_path / "lab" / TOKEN_FILE).read_text().strip()


def post(lab: RunningLabServer, body: object, token: str | None, **kw: object
         ) -> requests.Response:
    """POST /mapping with a JSON body and ``Authorization: Bearer <token>``."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.post(f"{lab.url}/mapping", json=body, headers=headers, timeout=TIMEOUT,
                         **kw)  # type: ignore[arg-type]


def assert_error(resp: requests.Response, status: int, *words: str) -> None:
    """The upstream error shape with an actionable message."""
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"] == "application/json"
    body = resp.json()
    assert list(body) == ["error"]
    for word in words:
        assert word in body["error"], body["error"]


# ------------------------------------------------------------------- success shapes


def test_health(lab: RunningLabServer) -> None:
    """GET /health answers the upstream HealthInfo shape plus the csr flag, backend and signer."""
    resp = requests.get(f"{lab.url}/health", timeout=TIMEOUT)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.json() == {"status": "pass", "version": __version__, "commit": "",
                           "description": "edge-provision lab provision service",
                           "build_time": "", "csr": True, "backend": "embedded",
                           "certs": "lab-ca"}
    head = requests.head(f"{lab.url}/health", timeout=TIMEOUT)
    assert head.status_code == 200
    assert head.content == b""


def test_default_layout_mapping(lab: RunningLabServer, token: str) -> None:
    """The default layout gives one thing, control + data channels and a whitelist entry."""
    resp = post(lab, {"external_id": "02:42:ac:11:00:07", "external_key": "k-1"}, token)
    assert resp.status_code == 201
    body = resp.json()
    assert set(body) == {"things", "channels", "whitelisted"}
    (thing,) = body["things"]
    assert set(thing) == {"id", "name", "key", "metadata"}
    assert thing["name"] == "thing"
    assert thing["metadata"] == {"external_id": "02:42:ac:11:00:07"}
    assert [(c["name"], c["metadata"]) for c in body["channels"]] == [
        ("control-channel", {"type": "control"}), ("data-channel", {"type": "data"})]
    assert all(set(c) == {"id", "name", "metadata"} for c in body["channels"])
    assert body["whitelisted"] == {thing["id"]: True}


def test_name_override(lab: RunningLabServer, token: str) -> None:
    """The optional name becomes the thing's name."""
    resp = post(lab, {"external_id": "gw-name", "external_key": "k", "name": "my-gateway"}, token)
    assert resp.status_code == 201
    assert [t["name"] for t in resp.json()["things"]] == ["my-gateway"]


def test_multi_thing_layout(tmp_path: Path) -> None:
    """A layout file with several things and channels is served as written."""
    layout = tmp_path / "provision.toml"
    layout.write_text(MULTI_LAYOUT)
    with start_in_thread(lab_settings(tmp_path, env={"MF_PROVISION_API_KEY": "op"},
                                      layout_file=layout)) as lab:
        resp = post(lab, {"external_id": "gw-m", "external_key": "k", "name": "site1"}, None)
        assert resp.status_code == 201, resp.text
        body = resp.json()
        assert [t["name"] for t in body["things"]] == ["site1-sensor", "site1"]
        assert body["things"][1]["metadata"] == {"external_id": "gw-m"}
        assert [c["name"] for c in body["channels"]] == [
            "data-channel", "events", "control-channel"]
        assert set(body["whitelisted"]) == {t["id"] for t in body["things"]}
        content = requests.get(f"{lab.url}/mapping", headers={"Authorization": "op"},
                               timeout=TIMEOUT)
        assert content.status_code == 200
        assert content.json() == {"agent": {"heartbeat": {"interval": "30s"}}}
        assert lab.service.internal_errors == 0


def test_get_mapping_default_content(lab: RunningLabServer, token: str) -> None:
    """GET /mapping with the token returns the (empty) bootstrap content; without it 401."""
    resp = requests.get(f"{lab.url}/mapping", headers={"Authorization": token}, timeout=TIMEOUT)
    assert resp.status_code == 200
    assert resp.json() == {}
    assert_error(requests.get(f"{lab.url}/mapping", timeout=TIMEOUT), 401, "Authorization")


# -------------------------------------------------------------------- idempotency


def test_repeat_is_idempotent_and_other_key_conflicts(lab: RunningLabServer, token: str) -> None:
    """Same id + key gives the same 201 body; another key gives 409."""
    first = post(lab, {"external_id": "gw-rep", "external_key": "k"}, token)
    again = post(lab, {"external_id": "gw-rep", "external_key": "k"}, token)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert_error(post(lab, {"external_id": "gw-rep", "external_key": "other"}, token), 409,
                 "gw-rep", "already provisioned")


def test_concurrent_duplicates_create_one_set(lab: RunningLabServer, token: str) -> None:
    """16 identical concurrent requests all succeed with one and the same set of entities."""
    results: list[requests.Response] = []
    lock = threading.Lock()
    barrier = threading.Barrier(16, timeout=TIMEOUT)

    def worker() -> None:
        barrier.wait()
        resp = post(lab, {"external_id": "gw-conc", "external_key": "k"}, token)
        with lock:
            results.append(resp)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=TIMEOUT * 3)
    assert len(results) == 16
    assert {r.status_code for r in results} == {201}
    assert len({json.dumps(r.json(), sort_keys=True) for r in results}) == 1
    things = requests.get(f"{lab.url}/things", headers={"Authorization": token}, timeout=TIMEOUT)
    channels = requests.get(f"{lab.url}/channels", headers={"Authorization": token},
                            timeout=TIMEOUT)
    assert things.json()["total"] == 1
    assert channels.json()["total"] == 2


def test_created_mappings_are_logged_in_lines_of_many(
        lab: RunningLabServer, token: str, caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    """16 concurrent new mappings: every external_id is logged exactly once, in lines of many
    (at most one per write batch; one a second), with the things and channels created."""
    caplog.set_level(logging.INFO, logger="edge_provision.lab.service")
    batches = lab.service.backend.stats.batches  # type: ignore[attr-defined]
    barrier = threading.Barrier(16, timeout=TIMEOUT)
    statuses: list[int] = []

    def worker(n: int) -> None:
        barrier.wait()
        statuses.append(post(lab, {"external_id": f"gw-log-{n}", "external_key": "k"},
                             token).status_code)  # fmt: skip

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=TIMEOUT * 3)
    assert statuses == [201] * 16
    post(lab, {"external_id": "gw-log-0", "external_key": "k"}, token)  # a repeat: not logged
    lab.service.flush_log()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("mappings ")]
    logged: list[str] = []
    for line in lines:
        head, _, ids = line.partition(" external_ids=")
        count = int(head.split("count=")[1].split()[0])
        assert f"things={count} channels={2 * count}" in head
        logged += json.loads(ids)
    assert sorted(logged) == sorted(f"gw-log-{n}" for n in range(16))
    assert 1 <= len(lines) <= lab.service.backend.stats.batches - batches  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- auth


@pytest.mark.parametrize("form", ["Bearer {}", "bearer  {}", "Token {}", "ApiKey {}", "{}"])
def test_header_forms(lab: RunningLabServer, token: str, form: str) -> None:
    """Bare, Bearer, Token and ApiKey headers are all accepted."""
    resp = requests.post(f"{lab.url}/mapping", json={"external_id": f"gw-{form[:3]}",
                                                     "external_key": "k"},
                         headers={"Authorization": form.format(token)}, timeout=TIMEOUT)
    assert resp.status_code == 201, resp.text


def test_generated_token_requires_header(lab: RunningLabServer, token: str) -> None:
    """With a generated token the header is required and must match."""
    assert_error(post(lab, {"external_id": "a", "external_key": "k"}, None), 401,
                 "missing Authorization", "Bearer")
    assert_error(post(lab, {"external_id": "a", "external_key": "k"}, "nope"), 401, "wrong")
    resp = requests.post(f"{lab.url}/mapping", json={"external_id": "a", "external_key": "k"},
                         headers={"Authorization": f"Basic {token}"}, timeout=TIMEOUT)
    assert_error(resp, 401, "unreadable")
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_configured_token_makes_header_optional(tmp_path: Path) -> None:
    """With MF_PROVISION_API_KEY set no header is needed, but a header given must match."""
    with start_in_thread(lab_settings(tmp_path, env={"MF_PROVISION_API_KEY": "op-key"})) as lab:
        assert post(lab, {"external_id": "a", "external_key": "k"}, None).status_code == 201
        assert post(lab, {"external_id": "b", "external_key": "k"}, "op-key").status_code == 201
        assert_error(post(lab, {"external_id": "c", "external_key": "k"}, "bad"), 401)
        assert not (tmp_path / "lab" / TOKEN_FILE).exists()


# ------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"{\"external_id\": \"x\", \"external_key\": ", ["not valid JSON", "line 1"]),
        (b"", ["empty"]),
        (b"[1, 2]", ["JSON object", "array"]),
        (b"{}", ["external_id", "missing"]),
        (b'{"external_key": "k"}', ["external_id", "missing"]),
        (b'{"external_id": "x"}', ["external_key", "missing"]),
        (b'{"external_id": "", "external_key": "k"}', ["external_id", "empty"]),
        (b'{"external_id": 123, "external_key": "k"}', ["external_id", "string", "number"]),
        (b'{"external_id": "x", "external_key": ["k"]}', ["external_key", "string", "array"]),
        (b'{"external_id": "x", "external_key": "k", "name": 5}', ["name", "string"]),
        (b'{"external_id": "\\ud800", "external_key": "k"}', ["external_id", "surrogate"]),
        (b"\xff\xfe\x00garbage", ["JSON"]),
        (b"[" * 50_000, ["JSON"]),
    ],
)
def test_bad_bodies_are_400(lab: RunningLabServer, token: str, body: bytes,
                            words: list[str]) -> None:
    """Malformed JSON, missing/empty fields and wrong types get 400 naming the problem."""
    resp = requests.post(f"{lab.url}/mapping", data=body, timeout=TIMEOUT,
                         headers={"Authorization": token, "Content-Type": "application/json"})
    assert_error(resp, 400, *words)


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/jsonx",
                                          "application/x-www-form-urlencoded"])
def test_wrong_content_type_is_415(lab: RunningLabServer, token: str,
                                   content_type: str | None) -> None:
    """Anything but application/json gets 415."""
    headers = {"Authorization": token}
    if content_type:
        headers["Content-Type"] = content_type
    resp = requests.post(f"{lab.url}/mapping", data=b'{"external_id":"x","external_key":"k"}',
                         headers=headers, timeout=TIMEOUT)
    assert_error(resp, 415, "application/json")


def test_charset_parameter_is_accepted(lab: RunningLabServer, token: str) -> None:
    """application/json with a charset parameter is fine (upstream says 415)."""
    resp = requests.post(f"{lab.url}/mapping", data=b'{"external_id":"cs","external_key":"k"}',
                         headers={"Authorization": token,
                                  "Content-Type": "Application/JSON; charset=utf-8"},
                         timeout=TIMEOUT)
    assert resp.status_code == 201, resp.text


def test_oversized_body_is_413(lab: RunningLabServer, token: str) -> None:
    """A body over 64 KiB gets 413, declared by Content-Length or streamed chunked."""
    big = json.dumps({"external_id": "x", "external_key": "k", "pad": "a" * 70_000}).encode()
    headers = {"Authorization": token, "Content-Type": "application/json"}
    resp = requests.post(f"{lab.url}/mapping", data=big, headers=headers, timeout=TIMEOUT)
    assert_error(resp, 413, "65536")
    chunked = requests.post(f"{lab.url}/mapping", data=iter([big[:40_000], big[40_000:]]),
                            headers=headers, timeout=TIMEOUT)
    assert "Content-Length" not in chunked.request.headers
    assert_error(chunked, 413, "larger than")


def test_unknown_route_and_method(lab: RunningLabServer) -> None:
    """Unknown routes give 404 and wrong methods 405, both in the JSON error shape."""
    assert_error(requests.get(f"{lab.url}/nowhere", timeout=TIMEOUT), 404, "/nowhere")
    resp = requests.put(f"{lab.url}/mapping", json={}, timeout=TIMEOUT)
    assert_error(resp, 405, "PUT", "POST")
    assert "POST" in resp.headers["Allow"]
    assert_error(requests.post(f"{lab.url}/health", timeout=TIMEOUT), 405)


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("PUT", "/mapping", "GET, POST"),
    ("DELETE", "/mapping", "GET, POST"),
    ("POST", "/health", "GET, HEAD"),
    ("PATCH", "/certs/0a1b", "DELETE, GET"),
    ("PUT", "/certs/ca", "GET"),  # a concrete path shadows /certs/{id}
    ("DELETE", "/certs/ca", "GET"),
    ("GET", "/certs/csr", "POST"),
    ("POST", "/things/bootstrap/gw-1", "GET"),
])
def test_405_allow_lists_every_method_of_the_path(lab: RunningLabServer, method: str, path: str,
                                                  allow: str) -> None:
    """The Allow header of a 405 lists every method the path answers, not only one route's."""
    resp = requests.request(method, f"{lab.url}{path}", timeout=TIMEOUT)
    assert_error(resp, 405, method, allow)
    assert resp.headers["Allow"] == allow


def test_trailing_slash_redirects(lab: RunningLabServer) -> None:
    """A served path with a trailing slash added (or removed) answers 307 to the served one."""
    resp = requests.get(f"{lab.url}/health/?x=1", timeout=TIMEOUT, allow_redirects=False)
    assert resp.status_code == 307
    assert resp.headers["Location"] == "/health?x=1"
    assert requests.get(f"{lab.url}/health/", timeout=TIMEOUT).json()["status"] == "pass"
    assert_error(requests.get(f"{lab.url}/nowhere/", timeout=TIMEOUT), 404)


@pytest.mark.parametrize("path", ["/mapping", "/certs/csr"])
def test_aborted_upload_is_not_an_error(lab: RunningLabServer, token: str, path: str,
                                        caplog: pytest.LogCaptureFixture) -> None:
    """A client that closes mid-body gets no 500 on any endpoint, and the server goes on:
    one debug line, nothing above debug."""
    caplog.set_level(logging.DEBUG, logger="edge_provision")
    host, port = lab.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: lab\r\nAuthorization: {token}\r\n"
                     "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                     '{"external_id": '.encode())
    assert requests.get(f"{lab.url}/health", timeout=TIMEOUT).status_code == 200
    lab.stop()  # graceful: waits for the aborted request to be handled
    assert lab.service.internal_errors == 0
    assert "Traceback" not in caplog.text
    ours = [r for r in caplog.records if r.name.startswith("edge_provision.lab.http")]
    assert [(r.levelno, r.getMessage()) for r in ours] == [
        (logging.DEBUG, f"client went away before its body arrived method=POST path={path}")]


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=10,
)
_bodies = st.one_of(
    st.binary(max_size=200),
    _json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({}, optional={
        "external_id": _json_values, "external_key": _json_values, "name": _json_values,
    }).map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"external_id": st.text(max_size=30),
                           "external_key": st.text(max_size=30)}).map(
        lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass")),
)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_bodies, content_type=st.sampled_from(
    ["application/json", "application/json; charset=utf-8", "text/plain", ""]),
       auth=st.sampled_from(["token", "", "Bearer", "Thing x", "Basic a b", "ApiKey token"]))
def test_fuzzed_requests_never_500(lab: RunningLabServer, token: str, body: bytes,
                                   content_type: str, auth: str) -> None:
    """Random bodies, content types and headers never make the server answer 500."""
    headers = {"Content-Type": content_type} if content_type else {}
    if auth:
        headers["Authorization"] = auth.replace("token", token)
    resp = requests.post(f"{lab.url}/mapping", data=body, headers=headers, timeout=TIMEOUT)
    assert resp.status_code in (201, 400, 401, 409, 415), resp.text
    assert "error" in resp.json() or resp.status_code == 201
    assert lab.service.internal_errors == 0


def test_storage_failure_is_503(lab: RunningLabServer, token: str) -> None:
    """A backend that cannot write answers 503 with Retry-After, not 500."""
    lab.service.backend.close()
    resp = post(lab, {"external_id": "gw-503", "external_key": "k"}, token)
    assert_error(resp, 503, "try again")
    assert resp.headers["Retry-After"] == "1"


class _ExplodingBackend(EmbeddedBackend):
    """A real backend whose provision() has a bug."""

    async def provision(self, plan: Plan, *, owner: str, issue_certs: CertIssuer | None = None
                        ) -> MappingRecord:
        raise RuntimeError("simulated bug")


def test_unexpected_error_is_logged_500(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A bug becomes 500 with the generic JSON error; the traceback goes to the log only."""
    service = LabService(
        backend=_ExplodingBackend(tmp_path / "lab.db"), ca=LocalCA.create(),
        layout=default_layout(), token="op", header_required=False,
        encrypt_key=bootstrap_cipher.parse_encrypt_key(bootstrap_cipher.DEFAULT_ENCRYPT_KEY_HEX),
        info=ServiceInfo("<built-in>", 1, 2, tmp_path / "lab.db", tmp_path / "ca.crt",
                         "token from test", False),
    )
    try:
        app = create_app(service)
        status, headers, body = asyncio.run(_call(app, "POST", "/mapping",
                                                  b'{"external_id": "x", "external_key": "k"}'))
        assert status == 500
        assert json.loads(body) == {"error": "internal error; see server log"}
        assert headers[b"content-type"] == b"application/json"
        assert service.internal_errors == 1
        assert "simulated bug" in caplog.text
        assert asyncio.run(_call(app, "GET", "/health", b""))[0] == 200
    finally:
        service.close()


async def _call(app: object, method: str, path: str, body: bytes
                ) -> tuple[int, dict[bytes, bytes], bytes]:
    """Send one HTTP request straight into an ASGI app; return status, headers, body."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": method, "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "scheme": "http", "server": ("127.0.0.1", 80),
             "client": ("127.0.0.1", 1234),
             "headers": [(b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())]}
    sent: list[dict[str, object]] = []
    delivered = False

    async def receive() -> dict[str, object]:
        nonlocal delivered
        if delivered:
            await asyncio.sleep(3600)
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    await app(scope, receive, send)  # type: ignore[operator]
    start = next(m for m in sent if m["type"] == "http.response.start")
    headers = dict(start["headers"])  # type: ignore[call-overload]
    content = b"".join(m.get("body", b"") for m in sent  # type: ignore[misc]
                       if m["type"] == "http.response.body")
    return int(start["status"]), headers, content  # type: ignore[call-overload]
