"""HttpClient against a real loopback FakeServer: wire format, error mapping, TLS, auth fallback."""

from __future__ import annotations

import gzip
import logging
import socket
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

import pytest

from edge_provision.errors import (
    AlreadyProvisioned,
    BadReply,
    ConfigError,
    ProtocolError,
    Reason,
    Rejected,
    RetryClass,
    ServiceUnavailable,
    Unauthorized,
)
from edge_provision.http import AuthScheme, Credential, HttpClient
from edge_provision.testing import FakeServer, FaultProxy, Reply, ThrowawayCA, free_port

SECRET = "tok-5f1e9a-very-secret"


@pytest.fixture
def server() -> Iterator[FakeServer]:
    """A started plain-HTTP FakeServer."""
    with FakeServer() as srv:
        yield srv


@pytest.fixture
def client(server: FakeServer) -> Iterator[HttpClient]:
    """An HttpClient for the server with short test timeouts."""
    with HttpClient(server.url, connect_timeout_s=1.0, read_timeout_s=0.5) as c:
        yield c


def test_json_body_has_exact_content_type(server: FakeServer, client: HttpClient) -> None:
    """A JSON body goes out as compact UTF-8 with exactly 'Content-Type: application/json'."""
    server.add("POST", "/mapping", Reply(status=201, json={"ok": True}))
    resp = client.request(
        "POST", "/mapping", json_body={"external_id": "aa:bb", "name": "gw-ü"}, expected={201}
    )
    assert resp.status == 201
    assert resp.json() == {"ok": True}
    assert resp.url == server.url + "/mapping"
    (req,) = server.requests
    assert req.header_values("Content-Type") == ["application/json"]
    assert req.body == '{"external_id":"aa:bb","name":"gw-ü"}'.encode()
    assert req.headers["User-Agent"].startswith("edge-provision/")
    assert "Authorization" not in req.headers


def test_request_head_on_the_wire(server: FakeServer, client: HttpClient) -> None:
    """The headers a request carries, in order: requests' defaults with our User-Agent, then
    the body's type and the credential; no cookie is stored or sent back."""
    server.add("POST", "/m", Reply(status=201, json={}, headers={"Set-Cookie": "sid=1"},
                                   repeat=2))  # fmt: skip
    for _ in range(2):
        client.request("POST", "/m", json_body={}, auth=Credential("user", SECRET),
                       auth_scheme=AuthScheme.MODERN, expected={201})  # fmt: skip
    first, second = server.requests
    names = [name.lower() for name, _ in first.raw_headers]
    assert names == ["host", "user-agent", "accept-encoding", "accept", "connection",
                     "content-type", "authorization", "content-length"]  # fmt: skip
    assert first.headers["Accept"] == "*/*" and first.headers["Connection"] == "keep-alive"
    assert "gzip" in first.headers["Accept-Encoding"]
    assert first.headers["Authorization"] == f"Bearer {SECRET}"
    assert first.headers["Content-Length"] == "2"
    assert "Cookie" not in second.headers


@pytest.mark.parametrize(("secret", "scheme"), [("tok\nen-secret", AuthScheme.MODERN),
                                               ("tok\ren-secret", AuthScheme.AUTO),
                                               (" leading-secret", AuthScheme.BARE)])
def test_a_credential_no_header_can_carry_is_a_setting_to_fix(
        server: FakeServer, client: HttpClient, secret: str, scheme: AuthScheme) -> None:
    """A token with a line break (or leading space) is refused before anything is sent, as a
    setting to fix (not a network error), and the message does not quote it."""
    with pytest.raises(ConfigError) as info:
        client.request("GET", "/health", auth=Credential("user", secret), auth_scheme=scheme)
    assert "Authorization header cannot carry this value" in str(info.value)
    assert secret.strip() not in str(info.value)
    assert server.requests == []


def test_get_without_body_has_no_content_type(server: FakeServer, client: HttpClient) -> None:
    """A request without a body does not claim a content type."""
    server.add("GET", "/health", Reply(json={"status": "pass"}))
    assert client.request("GET", "/health").json() == {"status": "pass"}
    assert "Content-Type" not in server.requests[0].headers


def test_429_retry_after_seconds(server: FakeServer, client: HttpClient) -> None:
    """429 with Retry-After seconds is retryable with retry_after_s set."""
    server.add("POST", "/mapping", Reply(status=429, headers={"Retry-After": "12"}))
    with pytest.raises(ServiceUnavailable) as info:
        client.request("POST", "/mapping", json_body={}, expected={201})
    assert info.value.retryable
    assert info.value.retry_after_s == 12.0
    assert "HTTP 429" in str(info.value) and server.url in str(info.value)


def test_429_retry_after_http_date(server: FakeServer, client: HttpClient) -> None:
    """Retry-After as an HTTP-date becomes the seconds until then."""
    when = datetime.now(timezone.utc) + timedelta(seconds=120)
    server.add(
        "GET", "/x", Reply(status=429, headers={"Retry-After": format_datetime(when, usegmt=True)})
    )
    with pytest.raises(ServiceUnavailable) as info:
        client.request("GET", "/x")
    assert info.value.retry_after_s is not None
    assert 100 <= info.value.retry_after_s <= 121


def test_503_with_error_text(server: FakeServer, client: HttpClient) -> None:
    """503 is ServiceUnavailable and quotes the server's error text."""
    server.add("GET", "/x", Reply(status=503, json={"error": "db down"}))
    with pytest.raises(ServiceUnavailable, match="db down") as info:
        client.request("GET", "/x")
    assert info.value.retry_after_s is None


def test_500_empty_body(server: FakeServer, client: HttpClient) -> None:
    """Mainflux's empty 500 (malformed JSON, Vault down) is retryable."""
    server.add("POST", "/certs", Reply(status=500, headers={"Content-Type": "application/json"}))
    with pytest.raises(ServiceUnavailable, match="server error 500"):
        client.request("POST", "/certs", json_body={}, expected={201})


def test_empty_400(server: FakeServer, client: HttpClient) -> None:
    """An empty 400 is Rejected with the hint about external_id/external_key."""
    server.add("POST", "/mapping", Reply(status=400, headers={"Content-Type": "application/json"}))
    with pytest.raises(Rejected, match=r"without a reason \(empty 400 body\)"):
        client.request("POST", "/mapping", json_body={}, expected={201})


def test_415(server: FakeServer, client: HttpClient) -> None:
    """415 is Rejected and names the content type the server wants."""
    server.add("POST", "/mapping", Reply(status=415, json={"error": "unsupported content type"}))
    with pytest.raises(Rejected, match="unsupported content type"):
        client.request("POST", "/mapping", json_body={}, expected={201})


def test_409_is_already_provisioned(server: FakeServer, client: HttpClient) -> None:
    """A proper 409 (Magistrala style) is AlreadyProvisioned."""
    server.add("POST", "/mapping", Reply(status=409, json={"error": "entity already exists"}))
    with pytest.raises(AlreadyProvisioned, match="entity already exists"):
        client.request("POST", "/mapping", json_body={}, expected={201})


def test_expected_error_status_is_returned(server: FakeServer, client: HttpClient) -> None:
    """A status listed in ``expected`` is returned, not raised."""
    server.add("GET", "/x", Reply(status=404, json={"error": "nope"}))
    resp = client.request("GET", "/x", expected=(200, 404))
    assert resp.status == 404 and resp.error_text == "nope"


def test_unexpected_success_status_is_protocol_error(
    server: FakeServer, client: HttpClient
) -> None:
    """A 200 where only 201 is expected is a ProtocolError."""
    server.add("POST", "/x", Reply(status=200, json={}))
    with pytest.raises(ProtocolError, match="unexpected HTTP 200"):
        client.request("POST", "/x", json_body={}, expected={201})


def test_redirect_not_followed(server: FakeServer, client: HttpClient) -> None:
    """Redirects are reported, not followed (no credential leaks to another URL)."""
    server.add("POST", "/mapping", Reply(status=307, headers={"Location": "http://elsewhere/"}))
    with pytest.raises(BadReply, match=r"redirected to another host \(http://elsewhere/\)"):
        client.request("POST", "/mapping", json_body={}, expected={201})
    assert len(server.requests) == 1


def test_read_timeout(server: FakeServer) -> None:
    """No answer within the read timeout is ServiceUnavailable mentioning the timeout."""
    server.add("GET", "/slow", Reply(delay_s=1.0))
    with (
        HttpClient(server.url, connect_timeout_s=0.5, read_timeout_s=0.2) as c,
        pytest.raises(ServiceUnavailable, match=r"no answer within 0.2 s"),
    ):
        c.request("GET", "/slow")


def test_connection_refused() -> None:
    """Nothing listening is ServiceUnavailable that says so in words a technician reads:
    the address, "connection refused", what to check; not urllib3's retry wording (which
    pushed the reason past the cut)."""
    port = free_port()
    with (
        HttpClient(f"http://127.0.0.1:{port}", connect_timeout_s=0.5) as c,
        pytest.raises(ServiceUnavailable, match="cannot reach the server") as info,
    ):
        c.request("GET", "/health")
    text = str(info.value)
    assert f"127.0.0.1:{port}: connection refused" in text
    assert "nothing listens there" in text
    assert "Max retries" not in text and "NewConnectionError" not in text
    assert info.value.retryable


def test_connection_reset(server: FakeServer, client: HttpClient) -> None:
    """A connection dropped without a reply is ServiceUnavailable that says so."""
    server.add("POST", "/mapping", Reply(close_without_reply=True))
    with pytest.raises(ServiceUnavailable) as info:
        client.request("POST", "/mapping", json_body={}, expected={201})
    assert info.value.retryable
    assert "lost the connection to the server at 127.0.0.1:" in str(info.value)
    assert "reset" in str(info.value)


def test_connection_closed_without_an_answer() -> None:
    """A server that reads the whole request and closes cleanly (FIN, no reply) is
    ServiceUnavailable saying it closed the connection without an answer."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve_once() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk

        thread = threading.Thread(target=serve_once, daemon=True)
        thread.start()
        with (
            HttpClient(f"http://127.0.0.1:{port}", connect_timeout_s=2, read_timeout_s=5) as c,
            pytest.raises(ServiceUnavailable) as info,
        ):
            c.request("GET", "/health")
        thread.join(timeout=5)
    assert f"the server at 127.0.0.1:{port} closed the connection without an answer" in str(
        info.value)
    assert info.value.retryable


def test_truncated_body(server: FakeServer, client: HttpClient) -> None:
    """A body shorter than its Content-Length is ServiceUnavailable (incomplete read)."""
    server.add("GET", "/t", Reply(json={"mainflux_id": "x" * 100}, truncate_to=10))
    with pytest.raises(ServiceUnavailable, match="incomplete body"):
        client.request("GET", "/t")


def test_oversized_body_by_content_length(server: FakeServer) -> None:
    """A declared Content-Length over the cap is refused before reading."""
    server.add("GET", "/big", Reply(body=b"x" * 2048))
    with (
        HttpClient(server.url, max_body_bytes=1024) as c,
        pytest.raises(BadReply, match="response larger than 1024 bytes"),
    ):
        c.request("GET", "/big")


def test_oversized_body_after_decompression(server: FakeServer) -> None:
    """The cap counts decoded bytes, so a small gzip bomb is refused too."""
    bomb = gzip.compress(b"{" + b" " * 200_000 + b"}")
    assert len(bomb) < 1024
    server.add("GET", "/bomb", Reply(body=bomb, headers={"Content-Encoding": "gzip"}))
    with (
        HttpClient(server.url, max_body_bytes=4096) as c,
        pytest.raises(BadReply, match="response larger than 4096 bytes"),
    ):
        c.request("GET", "/bomb")


def test_non_json_body(server: FakeServer, client: HttpClient) -> None:
    """A 200 that is not JSON raises a transient BadReply from .json()."""
    server.add("GET", "/x", Reply(body=b"<html>hi</html>", headers={"Content-Type": "text/html"}))
    resp = client.request("GET", "/x")
    with pytest.raises(BadReply, match="reply is not JSON"):
        resp.json()


def test_auto_falls_back_to_bare_once_and_remembers(server: FakeServer, client: HttpClient) -> None:
    """AUTO: 401 to the modern form, retry bare once, then use bare directly."""
    server.add("GET", "/things/bootstrap/gw", Reply(status=401, json={"error": "missing"}))
    server.add("GET", "/things/bootstrap/gw", Reply(status=200, json={"ok": 1}, repeat=2))
    cred = Credential("thing", SECRET)
    assert client.request("GET", "/things/bootstrap/gw", auth=cred).json() == {"ok": 1}
    first = server.requests
    assert len(first) == 2
    assert first[0].header_values("Authorization") == [f"Thing {SECRET}"]
    assert first[1].header_values("Authorization") == [SECRET]
    assert client.scheme_for("thing") is AuthScheme.BARE
    assert client.scheme_for("user") is None
    client.request("GET", "/things/bootstrap/gw", auth=cred)
    assert len(server.requests) == 3
    assert server.requests[2].header_values("Authorization") == [SECRET]


def test_auto_modern_success_is_remembered(server: FakeServer, client: HttpClient) -> None:
    """AUTO: a working modern form is remembered; no fallback request is made."""
    server.add("GET", "/x", Reply(json={}, repeat=None))
    client.request("GET", "/x", auth=Credential("user", SECRET))
    assert client.scheme_for("user") is AuthScheme.MODERN
    assert len(server.requests) == 1
    assert server.requests[0].headers["Authorization"] == f"Bearer {SECRET}"


def test_auto_both_forms_fail_reports_modern_answer(server: FakeServer, client: HttpClient) -> None:
    """AUTO: when the bare retry fails too, the modern answer is reported; nothing remembered."""
    server.add("GET", "/x", Reply(status=403, json={"error": "wrong key (modern)"}))
    server.add("GET", "/x", Reply(status=401, json={"error": "bare refused"}))
    with pytest.raises(Unauthorized, match=r"wrong key \(modern\)"):
        client.request("GET", "/x", auth=Credential("thing", SECRET))
    assert len(server.requests) == 2
    assert client.scheme_for("thing") is None


def test_explicit_scheme_never_falls_back(server: FakeServer, client: HttpClient) -> None:
    """MODERN and BARE are used as given: one request, no retry."""
    server.add("GET", "/x", Reply(status=401, repeat=2))
    for scheme in (AuthScheme.MODERN, AuthScheme.BARE):
        with pytest.raises(Unauthorized):
            client.request("GET", "/x", auth=Credential("user", SECRET), auth_scheme=scheme)
    assert [r.headers["Authorization"] for r in server.requests] == [f"Bearer {SECRET}", SECRET]


def test_no_secret_in_logs_or_errors(
    server: FakeServer, client: HttpClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Neither a failing nor a succeeding call logs the secret or the body."""
    caplog.set_level(logging.DEBUG)
    body_secret = "body-secret-key-77"
    server.add("POST", "/m", Reply(status=401, json={"error": "unauthorized"}, repeat=2))
    with pytest.raises(Unauthorized) as info:
        client.request(
            "POST", "/m", json_body={"external_key": body_secret}, auth=Credential("user", SECRET)
        )
    server.add("POST", "/m", Reply(status=201, json={"key": body_secret}))
    client.request(
        "POST",
        "/m",
        json_body={"external_key": body_secret},
        auth=Credential("user", SECRET),
        auth_scheme=AuthScheme.MODERN,
        expected={201},
    )
    assert caplog.records, "debug logging of requests is expected"
    assert SECRET not in caplog.text and body_secret not in caplog.text
    assert SECRET not in str(info.value) and body_secret not in str(info.value)


# --------------------------------------------------------------------------- TLS


@pytest.fixture
def tls_ca(tmp_path: Path) -> ThrowawayCA:
    """A throwaway CA for HTTPS servers."""
    return ThrowawayCA(tmp_path)


def test_tls_verification_fails_without_ca_bundle(tls_ca: ThrowawayCA) -> None:
    """An HTTPS server signed by an unknown CA is refused: Unauthorized, not retryable."""
    cert, key = tls_ca.issue_server()
    with FakeServer(certfile=cert, keyfile=key) as srv, HttpClient(srv.url) as c:
        srv.add("GET", "/health", Reply(json={"status": "pass"}))
        with pytest.raises(Unauthorized, match="server certificate is not trusted") as info:
            c.request("GET", "/health")
        assert not info.value.retryable
        assert srv.requests == []


def test_tls_succeeds_with_ca_bundle(tls_ca: ThrowawayCA) -> None:
    """With the CA bundle the same server is trusted."""
    cert, key = tls_ca.issue_server()
    with (
        FakeServer(certfile=cert, keyfile=key) as srv,
        HttpClient(srv.url, ca_bundle=tls_ca.ca_path) as c,
    ):
        srv.add("GET", "/health", Reply(json={"status": "pass"}))
        assert c.request("GET", "/health").json() == {"status": "pass"}


def test_tls_hostname_mismatch_is_refused(tls_ca: ThrowawayCA) -> None:
    """A trusted certificate for another host name is refused."""
    cert, key = tls_ca.issue_server(["gateway.example"])
    with (
        FakeServer(certfile=cert, keyfile=key) as srv,
        HttpClient(srv.url, ca_bundle=tls_ca.ca_path) as c,
        pytest.raises(Unauthorized, match="not trusted"),
    ):
        c.request("GET", "/health")


def test_insecure_skips_verification_and_warns(
    tls_ca: ThrowawayCA, caplog: pytest.LogCaptureFixture
) -> None:
    """insecure=True works against an untrusted server and logs one warning."""
    cert, key = tls_ca.issue_server()
    caplog.set_level(logging.WARNING, logger="edge_provision.http")
    with FakeServer(certfile=cert, keyfile=key) as srv, HttpClient(srv.url, insecure=True) as c:
        srv.add("GET", "/health", Reply(json={"status": "pass"}, repeat=2))
        c.request("GET", "/health")
        c.request("GET", "/health")
    warnings = [r for r in caplog.records if "tls verification disabled" in r.getMessage()]
    assert len(warnings) == 1


def test_mutual_tls_client_certificate(tls_ca: ThrowawayCA) -> None:
    """With a client certificate the mTLS server answers; without one we get Unauthorized."""
    cert, key = tls_ca.issue_server()
    client_cert, client_key = tls_ca.write_client("thing-1")
    with FakeServer(certfile=cert, keyfile=key, client_ca=tls_ca.ca_path) as srv:
        srv.add("GET", "/health", Reply(json={"status": "pass"}))
        with HttpClient(
            srv.url, ca_bundle=tls_ca.ca_path, client_cert=client_cert, client_key=client_key
        ) as c:
            assert c.request("GET", "/health").json() == {"status": "pass"}
        with (
            HttpClient(srv.url, ca_bundle=tls_ca.ca_path, read_timeout_s=1.0) as c,
            pytest.raises((Unauthorized, ServiceUnavailable)) as info,
        ):
            c.request("GET", "/health")
        if isinstance(info.value, Unauthorized):
            assert "client certificate" in str(info.value)


def test_plain_http_port_with_https_url(server: FakeServer) -> None:
    """https:// to a plain HTTP port is Rejected with a hint to use http://."""
    with (
        HttpClient(server.url.replace("http://", "https://"), insecure=True) as c,
        pytest.raises(Rejected, match="plain HTTP"),
    ):
        c.request("GET", "/health")


def test_ca_bundle_wins_over_requests_ca_bundle_env(
    tls_ca: ThrowawayCA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An explicit ca_bundle is used even when REQUESTS_CA_BUNDLE names another bundle."""
    other = ThrowawayCA(tmp_path / "other")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(other.ca_path))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(other.ca_path))
    cert, key = tls_ca.issue_server()
    with (
        FakeServer(certfile=cert, keyfile=key) as srv,
        HttpClient(srv.url, ca_bundle=tls_ca.ca_path) as c,
    ):
        srv.add("GET", "/health", Reply(json={"status": "pass"}))
        assert c.request("GET", "/health").json() == {"status": "pass"}


def test_netrc_credentials_are_not_sent(
    server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ~/.netrc entry for the host does not add an Authorization header."""
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password hunter2\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HOME", str(tmp_path))
    server.add("POST", "/mapping", Reply(status=201, json={}))
    with HttpClient(server.url) as c:
        c.request("POST", "/mapping", json_body={}, expected={201})
    assert "Authorization" not in server.requests[0].headers


# ------------------------------------------------------------------ TLS: why, and whom to trust


def _tls_refusal(url: str, **client: object) -> Unauthorized:
    with HttpClient(url, **client) as c, pytest.raises(Unauthorized) as info:  # type: ignore[arg-type]
        c.request("GET", "/health")
    return info.value


def test_self_signed_and_hostname_mismatch_read_differently(tls_ca: ThrowawayCA) -> None:
    """Each names its own verification reason, in full, and what to do about it."""
    ca_dir = tls_ca.directory / "ca"
    with FakeServer(certfile=ca_dir / "ca.crt", keyfile=ca_dir / "ca.key") as srv:
        self_signed = _tls_refusal(srv.url)
    cert, key = tls_ca.issue_server(["gateway.example"])
    with FakeServer(certfile=cert, keyfile=key) as srv:
        mismatch = _tls_refusal(srv.url, ca_bundle=tls_ca.ca_path)
    assert self_signed.reason is mismatch.reason is Reason.UNTRUSTED
    assert "self-signed certificate" in self_signed.message
    assert "mismatch, certificate is not valid for '127.0.0.1'" in mismatch.message
    assert "self-signed" not in mismatch.message and "mismatch" not in self_signed.message
    hint = self_signed.hint or ""
    assert "--ca-bundle" in hint and "EDGE_PROVISION_CA_BUNDLE" in hint
    assert "server.ca_bundle" in hint
    assert "host name" in (mismatch.hint or "")


def test_an_unknown_issuer_is_named(tls_ca: ThrowawayCA) -> None:
    """A server certificate from a CA nobody told us about: the reason says so."""
    cert, key = tls_ca.issue_server()
    with FakeServer(certfile=cert, keyfile=key) as srv:
        refused = _tls_refusal(srv.url)
    assert "unable to get local issuer certificate" in refused.message
    assert refused.retry_class is RetryClass.NEEDS_PERSON and refused.exit_code == 77


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def test_environment_ca_bundles_do_not_change_what_is_trusted(
        tls_ca: ThrowawayCA, monkeypatch: pytest.MonkeyPatch, variable: str) -> None:  # fmt: skip
    """Trust comes only from the agent's own settings, not from requests' variables."""
    monkeypatch.setenv(variable, str(tls_ca.ca_path))
    cert, key = tls_ca.issue_server()
    with FakeServer(certfile=cert, keyfile=key) as srv:
        srv.add("GET", "/health", Reply(json={"status": "pass"}))
        refused = _tls_refusal(srv.url)
        assert srv.requests == []
    assert refused.reason is Reason.UNTRUSTED


def test_an_unreachable_proxy_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy from the environment that refuses the connection is named as the proxy, with
    where it comes from; the server's address is not blamed for it."""
    proxy_port, server_port = free_port(), free_port()
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy_port}")
    for name in ("http_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with (
        HttpClient(f"http://127.0.0.1:{server_port}", connect_timeout_s=1) as c,
        pytest.raises(ServiceUnavailable) as info,
    ):
        c.request("GET", "/health")
    text = str(info.value)
    assert (f"cannot reach the proxy 127.0.0.1:{proxy_port} (for 127.0.0.1:{server_port}): "
            "connection refused (nothing listens there)") in text
    assert "HTTP_PROXY" in text and "NO_PROXY" in text
    assert info.value.retryable


def test_proxies_from_the_environment_are_honoured(server: FakeServer,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP_PROXY carries the request (absolute form); NO_PROXY takes a host off it."""
    server.add("GET", "/health", Reply(json={"status": "pass"}, repeat=2))
    with FaultProxy(server.url) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.delenv("http_proxy", raising=False)
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        with HttpClient("http://platform.invalid:8190") as c:
            assert c.request("GET", "/health").json() == {"status": "pass"}
        assert [(s.path, s.proxied) for s in proxy.seen] == [("/health", True)]
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        with HttpClient(server.url) as c:
            assert c.request("GET", "/health").json() == {"status": "pass"}
        assert len(proxy.seen) == 1  # the second request went straight to the server
