"""BootstrapClient (device endpoints, plain and secure) against FakeServer replies."""

from __future__ import annotations

import json
import logging
import re

import pytest

from edge_provision.crypto import bootstrap_cipher
from edge_provision.errors import (
    BadReply,
    ConfigError,
    ProtocolError,
    Reason,
    ServiceUnavailable,
    Unauthorized,
)
from edge_provision.http import AuthScheme, HttpClient
from edge_provision.platform import BootstrapClient, BootstrapConfig
from edge_provision.testing import FakeServer, Reply

EXT_ID = "aa:bb:cc:16:46:10"
EXT_KEY = "extkey-ed12f00254c8"
THING_ID = "873b3bc1-6a23-4315-9199-9a411a0d8727"
THING_KEY = "7dadde17-ed67-4b89-bcca-3d11d29f02e6"
CTRL = {
    "id": "bb0fa844-e813-438f-a1b4-7d876d92c6ad",
    "name": "control-channel",
    "metadata": {"type": "control"},
}
DATA = {
    "id": "7a32a0ca-e30f-47c6-9acb-e110abaf1b4a",
    "name": "data-channel",
    "metadata": {"type": "data"},
}
CONTENT = json.dumps(
    {"agent": {"mqtt": {"url": "localhost:1883"}, "heartbeat": {"interval": "30s"}}}
)
PATH = f"/things/bootstrap/{EXT_ID}"
SECURE_PATH = f"/things/bootstrap/secure/{EXT_ID}"
ENC_KEY = bootstrap_cipher.parse_encrypt_key(bootstrap_cipher.DEFAULT_ENCRYPT_KEY_HEX)

MAINFLUX_BODY = {
    "mainflux_id": THING_ID,
    "mainflux_key": THING_KEY,
    "mainflux_channels": [DATA, CTRL],
    "content": CONTENT,
}


def _modern(http: HttpClient, **kwargs: object) -> BootstrapClient:
    return BootstrapClient(http, auth_scheme=AuthScheme.MODERN, **kwargs)  # type: ignore[arg-type]


def test_mainflux_fields(server: FakeServer, http: HttpClient) -> None:
    """The 0.12/0.13 field names are read; channels are found by type, not position."""
    server.add("GET", PATH, Reply(json=MAINFLUX_BODY))
    config = _modern(http).fetch(EXT_ID, EXT_KEY)
    assert isinstance(config, BootstrapConfig)
    assert (config.thing_id, config.thing_key) == (THING_ID, THING_KEY)
    assert [c.id for c in config.channels] == [DATA["id"], CTRL["id"]]
    control = config.channel_of_type("control")
    assert control is not None and control.id == CTRL["id"] and control.name == "control-channel"
    assert config.channel_of_type("export") is None
    assert config.content == CONTENT
    assert config.content_json()["agent"] == {
        "mqtt": {"url": "localhost:1883"},
        "heartbeat": {"interval": "30s"},
    }
    assert (config.client_cert, config.client_key, config.ca_cert) == ("", "", "")
    assert config.extra_things == ()
    (req,) = server.requests
    assert req.path == PATH
    assert req.header_values("Authorization") == [f"Thing {EXT_KEY}"]


def test_magistrala_fields_certs_and_extra_things(server: FakeServer, http: HttpClient) -> None:
    """The thing_id/thing_key/channels generation, cert fields and the lab's extra_things."""
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    body = {
        "thing_id": THING_ID,
        "thing_key": THING_KEY,
        "channels": [CTRL],
        "client_cert": pem,
        "client_key": "-----BEGIN PRIVATE KEY-----\nk\n-----END PRIVATE KEY-----\n",
        "ca_cert": pem,
        "extra_things": [
            {"id": "t2", "name": "sensor", "key": "k2", "metadata": {"kind": "modbus"}}
        ],
    }
    server.add("GET", PATH, Reply(json=body))
    config = _modern(http).fetch(EXT_ID, EXT_KEY)
    assert config is not None
    assert (config.thing_id, config.thing_key) == (THING_ID, THING_KEY)
    assert [c.type for c in config.channels] == ["control"]
    assert config.client_cert == pem and config.ca_cert == pem
    assert config.client_key.startswith("-----BEGIN PRIVATE KEY-----")
    (extra,) = config.extra_things
    assert (extra.id, extra.name, extra.key, extra.metadata) == (
        "t2",
        "sensor",
        "k2",
        {"kind": "modbus"},
    )
    assert config.content == "" and config.content_json() == {}


def test_repr_hides_secrets(server: FakeServer, http: HttpClient) -> None:
    """Thing key, private key and content are not in the repr."""
    server.add("GET", PATH, Reply(json=dict(MAINFLUX_BODY, client_key="PRIVATEKEYBYTES")))
    config = _modern(http).fetch(EXT_ID, EXT_KEY)
    text = repr(config)
    assert THING_KEY not in text and "PRIVATEKEYBYTES" not in text and "heartbeat" not in text
    assert THING_ID in text


def test_null_channels_and_dict_content(server: FakeServer, http: HttpClient) -> None:
    """mainflux_channels null gives no channels; a content object is re-serialised."""
    body = {
        "mainflux_id": THING_ID,
        "mainflux_key": THING_KEY,
        "mainflux_channels": None,
        "content": {"b": 1},
    }
    server.add("GET", PATH, Reply(json=body))
    config = _modern(http).fetch(EXT_ID, EXT_KEY)
    assert config is not None
    assert config.channels == ()
    assert config.content_json() == {"b": 1}


def test_unknown_external_id_is_none(server: FakeServer, http: HttpClient) -> None:
    """404 'failed to read bootstrap configuration' means no config: None."""
    server.add(
        "GET", PATH, Reply(status=404, json={"error": "failed to read bootstrap configuration"})
    )
    assert _modern(http).fetch(EXT_ID, EXT_KEY) is None
    assert len(server.requests) == 1


def test_unknown_external_id_under_auto(server: FakeServer, http: HttpClient) -> None:
    """AUTO: a plain 404 (unknown id under either form) is not retried bare: one request."""
    server.add(
        "GET",
        PATH,
        Reply(status=404, json={"error": "failed to read bootstrap configuration"}, repeat=2),
    )
    assert BootstrapClient(http).fetch(EXT_ID, EXT_KEY) is None
    assert [r.headers["Authorization"] for r in server.requests] == [f"Thing {EXT_KEY}"]
    assert http.scheme_for("thing") is None


def test_auto_both_forms_refused_reports_modern_answer(
    server: FakeServer, http: HttpClient
) -> None:
    """AUTO: 403 to the modern form, 401 to the bare one: the 403 (wrong key) is reported."""
    wrong = {"error": "failed to get bootstrap configuration for given external key"}
    server.add("GET", PATH, Reply(status=403, json=wrong))
    server.add(
        "GET", PATH, Reply(status=401, json={"error": "missing or invalid bearer entity key"})
    )
    with pytest.raises(Unauthorized, match="external_key does not match"):
        BootstrapClient(http).fetch(EXT_ID, EXT_KEY)
    assert len(server.requests) == 2
    assert http.scheme_for("thing") is None


def test_auto_against_012_falls_back_to_bare(server: FakeServer, http: HttpClient) -> None:
    """0.12 reads 'Thing <key>' as the key (404 wrong key); AUTO retries bare and remembers it."""
    server.add(
        "GET",
        PATH,
        Reply(
            status=404,
            json={"error": "failed to get bootstrap configuration for given external key"},
        ),
    )
    server.add("GET", PATH, Reply(json=MAINFLUX_BODY, repeat=2))
    client = BootstrapClient(http, auth_scheme=AuthScheme.AUTO)
    config = client.fetch(EXT_ID, EXT_KEY)
    assert config is not None and config.thing_id == THING_ID
    assert len(server.requests) == 2
    assert http.scheme_for("thing") is AuthScheme.BARE
    client.fetch(EXT_ID, EXT_KEY)
    assert len(server.requests) == 3
    assert server.requests[2].headers["Authorization"] == EXT_KEY


def test_wrong_key_403(server: FakeServer, http: HttpClient) -> None:
    """403 (0.13 wrong key) says the external_key does not match the platform's."""
    server.add(
        "GET",
        PATH,
        Reply(
            status=403,
            json={"error": "failed to get bootstrap configuration for given external key"},
        ),
    )
    with pytest.raises(Unauthorized, match="external_key does not match the one the platform has") \
            as info:
        _modern(http).fetch(EXT_ID, EXT_KEY)
    assert info.value.reason is Reason.KEY_MISMATCH


def test_wrong_key_012_404(server: FakeServer, http: HttpClient) -> None:
    """0.12 answers a wrong key with 404 and a telling text: Unauthorized, not 'no config'."""
    server.add(
        "GET",
        PATH,
        Reply(
            status=404,
            json={"error": "failed to get bootstrap configuration for given external key"},
        ),
    )
    with pytest.raises(Unauthorized, match="external_key does not match") as info:
        BootstrapClient(http, auth_scheme=AuthScheme.BARE).fetch(EXT_ID, EXT_KEY)
    assert info.value.reason is Reason.KEY_MISMATCH


def test_401_mentions_header_form(server: FakeServer, http: HttpClient) -> None:
    """401 (header form not accepted) is Unauthorized with a hint about the auth scheme."""
    server.add(
        "GET", PATH, Reply(status=401, json={"error": "missing or invalid bearer entity key"})
    )
    with pytest.raises(Unauthorized, match="auth scheme") as info:
        BootstrapClient(http, auth_scheme=AuthScheme.BARE).fetch(EXT_ID, EXT_KEY)
    assert info.value.reason is Reason.REFUSED


def test_server_error_is_transient(server: FakeServer, http: HttpClient) -> None:
    """500 from bootstrap is ServiceUnavailable."""
    server.add(
        "GET", PATH, Reply(status=500, json={"error": "failed to read bootstrap configuration"})
    )
    with pytest.raises(ServiceUnavailable):
        _modern(http).fetch(EXT_ID, EXT_KEY)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[]", "expected a JSON object"),
        (json.dumps({"mainflux_key": THING_KEY}).encode(), "missing 'mainflux_id' or 'thing_id'"),
        (
            json.dumps({"mainflux_id": THING_ID, "mainflux_key": 5}).encode(),
            "'mainflux_key' must be a string",
        ),
        (
            json.dumps(
                {"mainflux_id": "t", "mainflux_key": "k", "mainflux_channels": [{"name": "x"}]}
            ).encode(),
            r"channels\[0\]: missing field 'id'",
        ),
    ],
)
def test_malformed_replies(server: FakeServer, http: HttpClient, body: bytes, message: str) -> None:
    """Unusable 200 bodies are ProtocolErrors that say what is wrong."""
    server.add("GET", PATH, Reply(body=body, headers={"Content-Type": "application/json"}))
    with pytest.raises(ProtocolError, match=message):
        _modern(http).fetch(EXT_ID, EXT_KEY)


def test_a_reply_that_is_not_json_is_a_bad_reply(server: FakeServer, http: HttpClient) -> None:
    """A 200 body that is not JSON at all is not the platform's answer: transient."""
    server.add("GET", PATH, Reply(body=b"not json", headers={"Content-Type": "application/json"}))
    with pytest.raises(BadReply, match="reply is not JSON"):
        _modern(http).fetch(EXT_ID, EXT_KEY)


def test_bad_content_json(server: FakeServer, http: HttpClient) -> None:
    """content that is not a JSON object fails only when it is parsed."""
    server.add("GET", PATH, Reply(json=dict(MAINFLUX_BODY, content="{nope")))
    config = _modern(http).fetch(EXT_ID, EXT_KEY)
    assert config is not None
    with pytest.raises(ProtocolError, match="not valid JSON"):
        config.content_json()


def test_external_id_is_quoted(server: FakeServer, http: HttpClient) -> None:
    """Colons stay; spaces, slashes and '?' are percent-encoded into one path segment."""
    server.add("GET", re.compile(r"/things/bootstrap/.*"), Reply(status=404, repeat=None))
    client = _modern(http)
    assert client.fetch("gw 1/x?y", EXT_KEY) is None
    assert client.fetch(EXT_ID, EXT_KEY) is None
    assert [r.path for r in server.requests] == ["/things/bootstrap/gw%201%2Fx%3Fy", PATH]


def test_secure_round_trip(server: FakeServer, http: HttpClient) -> None:
    """Secure variant: encrypted key in the header, raw encrypted body decrypted with the key."""
    blob = bootstrap_cipher.encrypt(ENC_KEY, json.dumps(MAINFLUX_BODY).encode())
    server.add("GET", SECURE_PATH, Reply(body=blob, headers={"Content-Type": "application/json"}))
    config = _modern(http, encrypt_key=ENC_KEY).fetch(EXT_ID, EXT_KEY, secure=True)
    assert config is not None and config.thing_key == THING_KEY
    assert config.channel_of_type("data") is not None
    (req,) = server.requests
    header = req.headers["Authorization"]
    assert header.startswith("Thing ")
    token = header[len("Thing ") :]
    assert EXT_KEY not in token
    assert bootstrap_cipher.decrypt_external_key_header(ENC_KEY, token) == EXT_KEY


def test_secure_bare_header(server: FakeServer, http: HttpClient) -> None:
    """With the bare scheme the secure header is the hex token alone."""
    blob = bootstrap_cipher.encrypt(ENC_KEY, json.dumps(MAINFLUX_BODY).encode())
    server.add("GET", SECURE_PATH, Reply(body=blob))
    BootstrapClient(http, auth_scheme=AuthScheme.BARE, encrypt_key=ENC_KEY).fetch(
        EXT_ID, EXT_KEY, secure=True
    )
    token = server.requests[0].headers["Authorization"]
    assert bootstrap_cipher.decrypt_external_key_header(ENC_KEY, token) == EXT_KEY


def test_secure_with_other_key_is_protocol_error(server: FakeServer, http: HttpClient) -> None:
    """A body encrypted under another key decrypts to garbage: ProtocolError naming the key."""
    other = bytes(range(16))
    blob = bootstrap_cipher.encrypt(other, json.dumps(MAINFLUX_BODY).encode())
    server.add("GET", SECURE_PATH, Reply(body=blob))
    with pytest.raises(ProtocolError, match="MF_BOOTSTRAP_ENCRYPT_KEY"):
        _modern(http, encrypt_key=ENC_KEY).fetch(EXT_ID, EXT_KEY, secure=True)


def test_secure_key_not_decryptable_by_server(server: FakeServer, http: HttpClient) -> None:
    """'...for given encrypted external key' means the encryption keys differ: Unauthorized."""
    server.add(
        "GET",
        SECURE_PATH,
        Reply(
            status=404,
            json={
                "error": "failed to get bootstrap configuration for given encrypted external key"
            },
        ),
    )
    with pytest.raises(Unauthorized, match="encryption key differs"):
        _modern(http, encrypt_key=ENC_KEY).fetch(EXT_ID, EXT_KEY, secure=True)


def test_secure_without_key_is_config_error(server: FakeServer, http: HttpClient) -> None:
    """Asking for the secure variant without an encryption key fails before any request."""
    with pytest.raises(ConfigError, match="encryption key"):
        _modern(http).fetch(EXT_ID, EXT_KEY, secure=True)
    assert server.requests == []


def test_no_secret_in_logs(
    server: FakeServer, http: HttpClient, caplog: pytest.LogCaptureFixture
) -> None:
    """External key, thing key and content never reach the log, on failure or success."""
    caplog.set_level(logging.DEBUG)
    server.add(
        "GET",
        PATH,
        Reply(
            status=403,
            json={"error": "failed to get bootstrap configuration for given external key"},
        ),
    )
    server.add("GET", PATH, Reply(json=MAINFLUX_BODY))
    client = _modern(http)
    with pytest.raises(Unauthorized) as info:
        client.fetch(EXT_ID, EXT_KEY)
    client.fetch(EXT_ID, EXT_KEY)
    assert THING_ID in caplog.text
    for secret in (EXT_KEY, THING_KEY, "heartbeat"):
        assert secret not in caplog.text
    assert EXT_KEY not in str(info.value)


def test_the_external_id_is_percent_encoded_as_one_segment(server: FakeServer,
                                                           http: HttpClient) -> None:
    """'?', '#', '%' and '/' in an id cannot change the path or start a query."""
    server.add("GET", "/things/bootstrap/gw%3Fx%23y%25z%2F1",
               Reply(404, json={"error": "failed to read bootstrap configuration"}))
    assert _modern(http).fetch("gw?x#y%z/1", EXT_KEY) is None
    assert [r.path for r in server.requests] == ["/things/bootstrap/gw%3Fx%23y%25z%2F1"]


@pytest.mark.parametrize("bad", [".", ".."])
def test_dot_ids_are_refused_before_sending(server: FakeServer, http: HttpClient,
                                            bad: str) -> None:
    """'.' and '..' would fetch another resource ('..' the list of things)."""
    with pytest.raises(ConfigError, match="one URL path segment"):
        _modern(http).fetch(bad, EXT_KEY)
    assert server.requests == []
