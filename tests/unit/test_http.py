"""Pure parts of edge_provision.http: auth header forms, Retry-After, the status table."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

import pytest

from edge_provision.errors import (
    AlreadyProvisioned,
    BadReply,
    ConfigError,
    ProtocolError,
    ProvisioningError,
    Rejected,
    ServiceUnavailable,
    Unauthorized,
)
from edge_provision.http import (
    AuthScheme,
    Credential,
    HttpClient,
    HttpResponse,
    auth_headers,
    error_for_status,
    parse_retry_after,
    path_segment,
)

URL = "http://127.0.0.1:9/mapping"


@pytest.mark.parametrize(
    ("kind", "scheme", "expected"),
    [
        ("user", AuthScheme.MODERN, "Bearer s3cret"),
        ("thing", AuthScheme.MODERN, "Thing s3cret"),
        ("user", AuthScheme.BARE, "s3cret"),
        ("thing", AuthScheme.BARE, "s3cret"),
        ("user", AuthScheme.AUTO, "Bearer s3cret"),
        ("thing", AuthScheme.AUTO, "Thing s3cret"),
    ],
)
def test_auth_headers_forms(kind: str, scheme: AuthScheme, expected: str) -> None:
    """Modern forms carry the Bearer/Thing prefix, bare ones the value alone, AUTO starts modern."""
    assert auth_headers(kind, "s3cret", scheme) == {"Authorization": expected}  # type: ignore[arg-type]


def test_auth_headers_rejects_unknown_kind() -> None:
    """Only 'user' and 'thing' credentials exist."""
    with pytest.raises(ValueError, match="auth kind"):
        auth_headers("admin", "x", AuthScheme.MODERN)  # type: ignore[arg-type]


def test_credential_repr_hides_secret() -> None:
    """A credential printed by mistake does not show the secret."""
    assert "topsecret" not in repr(Credential("user", "topsecret"))


def test_retry_after_seconds_and_date() -> None:
    """Retry-After is read as delta-seconds or as an HTTP-date relative to now."""
    now = datetime(2026, 11, 25, 12, 0, 0, tzinfo=timezone.utc)
    assert parse_retry_after("120", now=now) == 120.0
    assert parse_retry_after(" 1.5 ", now=now) == 1.5
    later = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(later, now=now) == pytest.approx(90.0)
    earlier = format_datetime(now - timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(earlier, now=now) == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "nan", "inf", "-inf"])
def test_retry_after_unparsable_is_none(value: str | None) -> None:
    """Missing or garbage Retry-After values give None, never an exception."""
    assert parse_retry_after(value) is None


def test_retry_after_is_clamped() -> None:
    """Negative delays become 0 and absurd ones are capped at a day."""
    assert parse_retry_after("-5") == 0.0
    assert parse_retry_after("99999999") == 86_400.0


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, Rejected),
        (401, Unauthorized),
        (403, Unauthorized),
        (404, Rejected),
        (405, Rejected),
        (409, AlreadyProvisioned),
        (415, Rejected),
        (422, Rejected),
        (429, ServiceUnavailable),
        (500, ServiceUnavailable),
        (501, Rejected),
        (502, ServiceUnavailable),
        (503, ServiceUnavailable),
        (200, ProtocolError),
        (302, ProtocolError),
    ],
)
def test_status_table(status: int, cls: type[ProvisioningError]) -> None:
    """Each unexpected status maps to exactly the documented error class."""
    err = error_for_status(status, b"", URL, method="POST")
    assert type(err) is cls
    assert URL in str(err)
    assert str(status) in str(err)


def test_retryable_flags_follow_the_table() -> None:
    """429 and 5xx are retryable with retry_after_s; 4xx are not."""
    busy = error_for_status(429, b"", URL, retry_after="30")
    assert isinstance(busy, ServiceUnavailable)
    assert busy.retryable and busy.retry_after_s == 30.0
    assert "retry after 30 s" in str(busy)
    down = error_for_status(503, b"", URL)
    assert isinstance(down, ServiceUnavailable)
    assert down.retry_after_s is None
    assert not error_for_status(400, b"", URL).retryable


def test_server_error_text_is_quoted() -> None:
    """The server's {"error": ...} text appears in the message."""
    err = error_for_status(404, b'{"error":"failed to read bootstrap configuration"}', URL)
    assert "failed to read bootstrap configuration" in str(err)


def test_plain_text_body_is_quoted_briefly() -> None:
    """A non-JSON error body (Go's '404 page not found') is quoted, shortened."""
    err = error_for_status(404, b"404 page not found\n", URL)
    assert "server said: 404 page not found" in str(err)
    long = error_for_status(500, b"x" * 5000, URL)
    assert len(str(long)) < 400


def test_html_error_page_is_quoted_as_text() -> None:
    """An HTML error page (a proxy's, a captive portal's, Python's http.server) is quoted
    as its text, without markup, scripts or styles, and briefly."""
    page = (b"<!DOCTYPE HTML>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            b"<title>Error response</title><style>p { color: red }</style>"
            b"<script>var x = '<p>';</script></head><body><h1>Error response</h1>"
            b"<p>Error code: 501</p><p>Message: Unsupported method (&#x27;POST&#x27;).</p>"
            b"<!-- a comment --></body></html>\n")
    text = str(error_for_status(501, page, URL, method="POST"))
    assert ("server said: Error response Error response Error code: 501 Message: "
            "Unsupported method ('POST').") in text
    assert "<" not in text and "color" not in text and "var x" not in text
    assert "comment" not in text
    long = error_for_status(502, b"<html><body>" + b"<p>word</p>" * 2000 + b"</body></html>", URL)
    assert len(str(long)) < 400 and "<" not in str(long)


def test_501_is_for_a_person() -> None:
    """A server that does not implement the request will not by retrying: not retryable,
    and the hint points at the URL."""
    err = error_for_status(501, b"", URL, method="POST")
    assert isinstance(err, Rejected) and not err.retryable
    assert "does not implement this request" in str(err)
    assert "check that the URL points at the provisioning/bootstrap service" in str(err)


def test_empty_400_has_the_hint() -> None:
    """An empty 400 body (Mainflux validation) explains what to check."""
    err = error_for_status(400, b"", URL)
    assert "the server rejected the request without a reason (empty 400 body)" in str(err)
    assert "check external_id/external_key and Content-Type" in str(err)


def test_415_names_the_content_type() -> None:
    """A 415 tells exactly which Content-Type the server wants."""
    assert "'Content-Type: application/json'" in str(error_for_status(415, b"", URL))


def test_response_json_helpers() -> None:
    """HttpResponse.json parses (not JSON: a transient BadReply), json_object wants an object."""
    ok = HttpResponse(200, {"content-type": "application/json"}, b'{"a": 1}', URL)
    assert ok.json_object() == {"a": 1}
    assert ok.header("Content-Type") == "application/json"
    assert ok.header("missing") is None
    with pytest.raises(ProtocolError, match="JSON object"):
        HttpResponse(200, {}, b"[1]", URL).json_object()
    with pytest.raises(BadReply, match="reply is not JSON"):
        HttpResponse(200, {}, b"<html>", URL).json()
    assert HttpResponse(404, {}, b'{"error": "nope"}', URL).error_text == "nope"
    assert HttpResponse(404, {}, b"nope", URL).error_text is None


def test_response_repr_hides_body() -> None:
    """The body (which may be a bootstrap config with keys) is not in the repr."""
    assert "secretkey" not in repr(HttpResponse(200, {}, b'{"k":"secretkey"}', URL))


@pytest.mark.parametrize("url", ["ftp://host/", "127.0.0.1:8190", "http://", "http://h/?q=1"])
def test_bad_base_url_is_config_error(url: str) -> None:
    """Only absolute http(s) base URLs without query are accepted."""
    with pytest.raises(ConfigError):
        HttpClient(url)


def test_missing_tls_files_are_config_errors(tmp_path: Path) -> None:
    """A CA bundle or client cert that does not exist or is not PEM fails at construction."""
    with pytest.raises(ConfigError, match="CA bundle not found"):
        HttpClient("https://127.0.0.1:1", ca_bundle=tmp_path / "nope.pem")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a pem\n")
    with pytest.raises(ConfigError, match="CA bundle"):
        HttpClient("https://127.0.0.1:1", ca_bundle=junk)
    with pytest.raises(ConfigError, match="client certificate"):
        HttpClient("https://127.0.0.1:1", client_cert=junk, client_key=junk)
    with pytest.raises(ConfigError, match="client_key given without client_cert"):
        HttpClient("https://127.0.0.1:1", client_key=junk)


def test_bad_limits_are_config_errors() -> None:
    """Non-positive timeouts and size caps are refused."""
    with pytest.raises(ConfigError):
        HttpClient("http://127.0.0.1:1", read_timeout_s=0)
    with pytest.raises(ConfigError):
        HttpClient("http://127.0.0.1:1", max_body_bytes=0)


def test_url_joining() -> None:
    """Base URL and path are joined with exactly one slash, keeping a path prefix."""
    with HttpClient("http://127.0.0.1:1/api/") as client:
        assert client.base_url == "http://127.0.0.1:1/api"
        assert client.url_for("/mapping") == "http://127.0.0.1:1/api/mapping"
        assert client.url_for("health") == "http://127.0.0.1:1/api/health"


def test_remember_scheme_refuses_auto() -> None:
    """Only a concrete scheme can be remembered."""
    with HttpClient("http://127.0.0.1:1") as client:
        assert client.scheme_for("user") is None
        client.remember_scheme("user", AuthScheme.BARE)
        assert client.scheme_for("user") is AuthScheme.BARE
        with pytest.raises(ValueError, match="concrete"):
            client.remember_scheme("thing", AuthScheme.AUTO)


@pytest.mark.parametrize(("value", "segment"), [
    ("02:42:ac:11:00:07", "02:42:ac:11:00:07"),
    ("gw@site", "gw@site"),
    ("a/b", "a%2Fb"),
    ("gw?x#y", "gw%3Fx%23y"),
    ("100%", "100%25"),
    ("gw 1", "gw%201"),
    ("...", "..."),
    ("ü", "%C3%BC"),
])
def test_path_segment_encodes_everything_but_pchars(value: str, segment: str) -> None:
    """One segment: '/', '?', '#', '%', spaces and non-ASCII are percent-encoded."""
    assert path_segment(value) == segment


@pytest.mark.parametrize("value", ["", ".", ".."])
def test_path_segment_refuses_what_no_encoding_can_carry(value: str) -> None:
    """'', '.' and '..' would change the path itself (servers resolve %2E too)."""
    with pytest.raises(ConfigError, match="cannot be one URL path segment"):
        path_segment(value, "external_id")
