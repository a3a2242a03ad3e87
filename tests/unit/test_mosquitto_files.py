"""Pure renderers of lab/mosquitto.py: password hashes, ACL, config; and metrics text."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from edge_provision import metrics
from edge_provision.lab import mosquitto


def test_hash_format_is_mosquitto_pbkdf2_sha512() -> None:
    """$7$<iterations>$<b64 salt>$<b64 PBKDF2-SHA512(64)>, as mosquitto_passwd writes it."""
    salt = b"0123456789ab"
    hashed = mosquitto.hash_password("secret", salt=salt)
    _, kind, iterations, b64salt, b64hash = hashed.split("$")
    assert (kind, iterations) == ("7", "101")
    assert base64.b64decode(b64salt) == salt
    assert base64.b64decode(b64hash) == hashlib.pbkdf2_hmac("sha512", b"secret", salt, 101, 64)


def test_known_mosquitto_passwd_line_verifies() -> None:
    """A line produced by mosquitto_passwd 2.0.11 (password "secret") checks out."""
    line = ("$7$101$WjpEKAFSsPUPO42Z$KVZn0dXp8dTyjySSCYhKHkpdyfOXFB9N5zR0w25ShQ750/NOQQmkg2J1"
            "ffgcHimz/fZv5hd+EhRamHCfvgKF3g==")
    assert mosquitto.check_password(line, "secret")
    assert not mosquitto.check_password(line, "Secret")
    assert not mosquitto.check_password("$6$x$y", "secret")
    assert not mosquitto.check_password("$7$101$!!$!!", "secret")


def test_salts_differ() -> None:
    """Two hashes of one password use different salts."""
    assert mosquitto.hash_password("k") != mosquitto.hash_password("k")


def test_password_file_sorted_and_validated() -> None:
    """One user:hash line per user, sorted; names with ':' or spaces are refused."""
    text = mosquitto.render_password_file({"b": "$7$h2", "a": "$7$h1"})
    assert text == "a:$7$h1\nb:$7$h2\n"
    with pytest.raises(ValueError, match="cannot be written"):
        mosquitto.render_password_file({"a:b": "$7$x"})


def test_acl_grants_only_connected_channels() -> None:
    """Each thing gets one readwrite line per channel (messages/# covers messages too)."""
    text = mosquitto.render_acl({"thing-2": ["c1"], "thing-1": ["c2", "c1", "c1"], "idle": []},
                                admin="adm")
    lines = text.splitlines()
    assert lines[1:3] == ["user adm", "topic readwrite channels/#"]
    at = lines.index("user thing-1")
    assert lines[at:at + 3] == ["user thing-1", "topic readwrite channels/c1/messages/#",
                                "topic readwrite channels/c2/messages/#"]
    at = lines.index("user thing-2")
    assert lines[at + 1:] == ["topic readwrite channels/c1/messages/#"]
    assert "user idle" not in lines  # no channel, no line: denied everything
    assert "user adm" not in mosquitto.render_acl({}, admin=None)


def test_config_listeners_and_tls(tmp_path: Path) -> None:
    """Loopback listeners, no anonymous access, no persistence, no Nagle delay on what the
    broker sends (mosquitto's default held deliveries back ~14 ms at the median); with
    client certs: CRL, and the certificate is the identity."""
    text = mosquitto.render_config(tmp_path, host="127.0.0.1", port=1883, tls_port=8883,
                                   require_cert=True, cafile=tmp_path / "ca.crt", user="me")
    lines = text.splitlines()
    for want in ("allow_anonymous false", "persistence false", "set_tcp_nodelay true",
                 "listener 1883 127.0.0.1",
                 "listener 8883 127.0.0.1", "require_certificate true", "user me",
                 "use_identity_as_username true",
                 f"crlfile {tmp_path / 'crl.pem'}", f"password_file {tmp_path / 'passwd'}",
                 f"acl_file {tmp_path / 'acl'}"):
        assert want in lines
    plain = mosquitto.render_config(tmp_path, host="127.0.0.1", port=1, tls_port=None,
                                    require_cert=False, cafile=tmp_path / "ca.crt", user=None)
    assert "certfile" not in plain and "crlfile" not in plain and "use_identity" not in plain


def test_metrics_render_exposition_format() -> None:
    """HELP/TYPE lines, sorted escaped labels, integers without a decimal point."""
    text = metrics.render(metrics.agent_metrics(
        cert_expiry={"t2": 200.0, "t1": 100.5}, last_renewal_ts=50.0, renewals_total=3,
        failures_by_class={"MqttAuthError": 2}, generation=4))
    assert "# TYPE edge_provision_certificate_expiry_timestamp_seconds gauge" in text
    assert 'edge_provision_certificate_expiry_timestamp_seconds{thing_id="t1"} 100.5' in text
    assert "edge_provision_renewals_total 3\n" in text
    assert 'edge_provision_failures_total{class="MqttAuthError"} 2' in text
    assert text.index('thing_id="t1"') < text.index('thing_id="t2"')
    assert text.endswith("\n")


def test_metrics_label_escaping_and_empty() -> None:
    """Quotes, backslashes and newlines in labels are escaped; no families -> empty text."""
    text = metrics.render([metrics.Metric("m", "h", "gauge", [({"l": 'a"b\\c\nd'}, 1.0)])])
    assert 'm{l="a\\"b\\\\c\\nd"} 1' in text
    assert metrics.render([]) == ""


def test_metrics_textfile_atomic(tmp_path: Path) -> None:
    """write_textfile replaces the file whole, mode 0644."""
    path = tmp_path / "edge.prom"
    metrics.write_textfile(path, "a 1\n")
    metrics.write_textfile(path, "a 2\n")
    assert path.read_text() == "a 2\n"
    assert path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["edge.prom"]


def test_counter_set() -> None:
    """Counters add up per label set."""
    counters = metrics.CounterSet()
    counters.inc("req", status="200")
    counters.inc("req", 2, status="200")
    counters.inc("req", status="404")
    assert counters.value("req", status="200") == 3
    assert counters.samples("req") == [({"status": "200"}, 3.0), ({"status": "404"}, 1.0)]


def test_lab_metrics_families() -> None:
    """The lab's families exist even at zero; HTTP requests are labelled by status."""
    counters = metrics.CounterSet()
    counters.inc("mappings_total")
    counters.inc("http_requests_total", status="201")
    text = metrics.render(metrics.lab_metrics(counters))
    assert "edge_provision_lab_mappings_total 1\n" in text
    assert "edge_provision_lab_bootstrap_fetches_total 0\n" in text
    assert 'edge_provision_lab_http_requests_total{status="201"} 1' in text
