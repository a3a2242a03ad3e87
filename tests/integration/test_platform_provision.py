"""ProvisionClient (POST /mapping) against FakeServer replies shaped like Mainflux 0.12/0.13."""

from __future__ import annotations

import logging

import pytest

from edge_provision.errors import (
    AlreadyProvisioned,
    BadReply,
    ProtocolError,
    Reason,
    Rejected,
    ServiceUnavailable,
    Unauthorized,
)
from edge_provision.http import AuthScheme, HttpClient
from edge_provision.platform import MappingResult, ProvisionClient
from edge_provision.platform.provision import classify_mapping_error
from edge_provision.testing import FakeServer, Reply

EXT_ID = "02:42:ac:11:00:07"
EXT_KEY = "extkey-0d7c1f9e2b"
TOKEN = "api-key-3b9d7e0c"
THING_ID = "5d0f1c2a-7c1e-4b7e-9a55-0b7f3f0a1e11"
THING_KEY = "e6b3a4c0-2f0e-4e43-8f3f-6b8d1c0c9a22"
CTRL_ID = "9a1b2c3d-1111-4a4a-8b8b-0c0c0c0c0c01"
DATA_ID = "9a1b2c3d-2222-4a4a-8b8b-0c0c0c0c0c02"

SUCCESS = {
    "things": [
        {"id": THING_ID, "name": "thing", "key": THING_KEY, "metadata": {"external_id": EXT_ID}}
    ],
    "channels": [
        {"id": CTRL_ID, "name": "control-channel", "metadata": {"type": "control"}},
        {"id": DATA_ID, "name": "data-channel", "metadata": {"type": "data"}},
    ],
    "whitelisted": {THING_ID: True},
}


def _failure(error: str) -> dict[str, object]:
    """The 0.12/0.13 in-run failure body: 201 + things/channels null + error chain."""
    return {"things": None, "channels": None, "error": error}


def test_success_without_token_sends_no_authorization(server: FakeServer, http: HttpClient) -> None:
    """Without a token: no Authorization header; the 201 body is parsed into a MappingResult."""
    server.add("POST", "/mapping", Reply(status=201, json=SUCCESS))
    result = ProvisionClient(http, token=None).create_mapping(EXT_ID, EXT_KEY)
    assert isinstance(result, MappingResult)
    (thing,) = result.things
    assert (thing.id, thing.name, thing.key) == (THING_ID, "thing", THING_KEY)
    assert thing.metadata == {"external_id": EXT_ID}
    assert [c.type for c in result.channels] == ["control", "data"]
    assert result.channel_of_type("data") is not None
    assert result.channel_of_type("export") is None
    assert result.whitelisted == (THING_ID,)
    assert result.client_certs == {} and result.client_keys == {} and result.ca_cert is None
    (req,) = server.requests
    assert "Authorization" not in req.headers
    assert req.header_values("Content-Type") == ["application/json"]
    assert req.json() == {"external_id": EXT_ID, "external_key": EXT_KEY}


def test_name_and_token_are_sent(server: FakeServer, http: HttpClient) -> None:
    """The optional name goes in the body; the token as 'Bearer <token>'."""
    server.add("POST", "/mapping", Reply(status=201, json=SUCCESS))
    ProvisionClient(http, token=TOKEN, auth_scheme=AuthScheme.MODERN).create_mapping(
        EXT_ID, EXT_KEY, name="gw-0007"
    )
    (req,) = server.requests
    assert req.json() == {"external_id": EXT_ID, "external_key": EXT_KEY, "name": "gw-0007"}
    assert req.header_values("Authorization") == [f"Bearer {TOKEN}"]


def test_x509_fields_are_read(server: FakeServer, http: HttpClient) -> None:
    """client_cert/client_key maps and ca_cert are carried over; keys hidden from repr."""
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    key = "-----BEGIN EC PRIVATE KEY-----\nsecretkeymaterial\n-----END EC PRIVATE KEY-----\n"
    body = dict(SUCCESS, client_cert={THING_ID: pem}, client_key={THING_ID: key}, ca_cert=pem)
    server.add("POST", "/mapping", Reply(status=201, json=body))
    result = ProvisionClient(http, token=None).create_mapping(EXT_ID, EXT_KEY)
    assert result.client_certs == {THING_ID: pem}
    assert result.client_keys == {THING_ID: key}
    assert result.ca_cert == pem
    assert "secretkeymaterial" not in repr(result)
    assert THING_KEY not in repr(result)


def test_201_with_409_conflict_is_already_provisioned(server: FakeServer, http: HttpClient) -> None:
    """Mainflux's duplicate external_id (201 + '409 Conflict') is AlreadyProvisioned."""
    server.add(
        "POST",
        "/mapping",
        Reply(
            status=201,
            json=_failure(
                "failed to create bootstrap config : failed to create entity : 409 Conflict"
            ),
        ),
    )
    with pytest.raises(
        AlreadyProvisioned, match="external_id '02:42:ac:11:00:07' already provisioned"
    ) as info:
        ProvisionClient(http, token=None).create_mapping(EXT_ID, EXT_KEY)
    assert info.value.reason is Reason.CONFLICT


@pytest.mark.parametrize(
    "error",
    [
        "failed to create thing : failed to create entity : 401 Unauthorized",
        "failed to create access token : failed to create entity : 404 Not Found",
        "missing credentials",
        "unauthorized access",
    ],
)
def test_201_with_auth_error_is_unauthorized(
    server: FakeServer, http: HttpClient, error: str
) -> None:
    """Auth failures inside the run (201 + error) are Unauthorized and quote the chain."""
    server.add("POST", "/mapping", Reply(status=201, json=_failure(error)))
    with pytest.raises(Unauthorized) as info:
        ProvisionClient(http, token=None).create_mapping(EXT_ID, EXT_KEY)
    assert error in str(info.value)
    assert len(server.requests) == 1


def test_201_with_other_error_is_rejected(server: FakeServer, http: HttpClient) -> None:
    """Any other in-run failure is Rejected with the upstream text."""
    server.add(
        "POST", "/mapping", Reply(status=201, json=_failure("things list in configuration empty"))
    )
    with pytest.raises(Rejected, match="things list in configuration empty"):
        ProvisionClient(http, token=None).create_mapping(EXT_ID, EXT_KEY)


def test_201_with_unreachable_upstream_is_transient(server: FakeServer, http: HttpClient) -> None:
    """An in-run failure caused by an unreachable service is retryable."""
    text = 'failed to create thing : Post "http://things:8182/things": dial tcp: connection refused'
    server.add("POST", "/mapping", Reply(status=201, json=_failure(text)))
    with pytest.raises(ServiceUnavailable):
        ProvisionClient(http, token=None).create_mapping(EXT_ID, EXT_KEY)


def test_things_null_without_error_is_failure(server: FakeServer, http: HttpClient) -> None:
    """201 with things null and no error text is not a success."""
    server.add("POST", "/mapping", Reply(status=201, json={"things": None, "channels": None}))
    with pytest.raises(ProtocolError, match="'things' is null"):
        ProvisionClient(http, token=None).create_mapping(EXT_ID, EXT_KEY)


def test_empty_things_list_is_failure(server: FakeServer, http: HttpClient) -> None:
    """A success body must name at least one thing."""
    server.add("POST", "/mapping", Reply(status=201, json={"things": [], "channels": []}))
    with pytest.raises(ProtocolError, match="non-empty 'things'"):
        ProvisionClient(http, token=None).create_mapping(EXT_ID, EXT_KEY)


def test_malformed_thing_is_protocol_error(server: FakeServer, http: HttpClient) -> None:
    """A thing without a key cannot be used and is reported with its position."""
    server.add("POST", "/mapping", Reply(status=201, json={"things": [{"id": THING_ID}]}))
    with pytest.raises(ProtocolError, match=r"things\[0\]: missing field 'key'"):
        ProvisionClient(http, token=None).create_mapping(EXT_ID, EXT_KEY)


def test_non_json_201_is_a_bad_reply(server: FakeServer, http: HttpClient) -> None:
    """A 201 that is not JSON is not the platform's answer: a transient BadReply."""
    server.add("POST", "/mapping", Reply(status=201, body=b"created!"))
    with pytest.raises(BadReply, match="reply is not JSON"):
        ProvisionClient(http, token=None).create_mapping(EXT_ID, EXT_KEY)


def test_empty_400_and_415(server: FakeServer, http: HttpClient) -> None:
    """Mainflux validation failures (empty 400, 415) are Rejected with a useful hint."""
    empty = {"Content-Type": "application/json"}
    server.add("POST", "/mapping", Reply(status=400, headers=empty))
    server.add("POST", "/mapping", Reply(status=415, headers=empty))
    client = ProvisionClient(http, token=None)
    with pytest.raises(Rejected, match="check external_id/external_key and Content-Type"):
        client.create_mapping(EXT_ID, EXT_KEY)
    with pytest.raises(Rejected, match="'Content-Type: application/json'"):
        client.create_mapping(EXT_ID, EXT_KEY)


def test_magistrala_style_status_codes(server: FakeServer, http: HttpClient) -> None:
    """Proper 409/503 answers map to AlreadyProvisioned/ServiceUnavailable."""
    server.add("POST", "/mapping", Reply(status=409, json={"error": "entity already exists"}))
    server.add("POST", "/mapping", Reply(status=503, headers={"Retry-After": "5"}))
    client = ProvisionClient(http, token=None)
    with pytest.raises(AlreadyProvisioned):
        client.create_mapping(EXT_ID, EXT_KEY)
    with pytest.raises(ServiceUnavailable) as info:
        client.create_mapping(EXT_ID, EXT_KEY)
    assert info.value.retry_after_s == 5.0


def test_auto_falls_back_to_bare_on_201_with_401(server: FakeServer, http: HttpClient) -> None:
    """0.12 passes 'Bearer X' on as the token and fails with 401 inside a 201; AUTO retries bare."""
    server.add(
        "POST",
        "/mapping",
        Reply(
            status=201,
            json=_failure("failed to create thing : failed to create entity : 401 Unauthorized"),
        ),
    )
    server.add("POST", "/mapping", Reply(status=201, json=SUCCESS, repeat=2))
    client = ProvisionClient(http, token=TOKEN, auth_scheme=AuthScheme.AUTO)
    assert client.create_mapping(EXT_ID, EXT_KEY).things[0].id == THING_ID
    assert [r.headers["Authorization"] for r in server.requests] == [f"Bearer {TOKEN}", TOKEN]
    assert http.scheme_for("user") is AuthScheme.BARE
    client.create_mapping("other-id", EXT_KEY)
    assert len(server.requests) == 3
    assert server.requests[2].headers["Authorization"] == TOKEN


def test_auto_fallback_failing_twice_reports_unauthorized(
    server: FakeServer, http: HttpClient
) -> None:
    """When the bare form fails too, the auth error is reported and nothing is remembered."""
    failure = _failure("failed to create thing : failed to create entity : 401 Unauthorized")
    server.add("POST", "/mapping", Reply(status=201, json=failure, repeat=2))
    with pytest.raises(Unauthorized):
        ProvisionClient(http, token=TOKEN).create_mapping(EXT_ID, EXT_KEY)
    assert len(server.requests) == 2
    assert http.scheme_for("user") is None


def test_auto_modern_success_is_remembered(server: FakeServer, http: HttpClient) -> None:
    """A modern success settles the scheme: one request, 'Bearer' remembered."""
    server.add("POST", "/mapping", Reply(status=201, json=SUCCESS))
    ProvisionClient(http, token=TOKEN).create_mapping(EXT_ID, EXT_KEY)
    assert len(server.requests) == 1
    assert http.scheme_for("user") is AuthScheme.MODERN


def test_no_retry_on_timeout(server: FakeServer) -> None:
    """A read timeout is ServiceUnavailable after exactly one request (no blind re-POST)."""
    server.add("POST", "/mapping", Reply(status=201, json=SUCCESS, delay_s=1.0))
    with (
        HttpClient(server.url, read_timeout_s=0.2) as http,
        pytest.raises(ServiceUnavailable, match="may still have processed"),
    ):
        ProvisionClient(http, token=TOKEN).create_mapping(EXT_ID, EXT_KEY)
    assert len(server.requests) == 1


def test_empty_identity_is_refused_locally(http: HttpClient, server: FakeServer) -> None:
    """An empty external_id or key is refused before any request."""
    with pytest.raises(Rejected):
        ProvisionClient(http, token=None).create_mapping("", EXT_KEY)
    assert server.requests == []


def test_no_secret_in_logs(
    server: FakeServer, http: HttpClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Token, external_key and thing key never reach the log, on failure or success."""
    caplog.set_level(logging.DEBUG)
    server.add(
        "POST", "/mapping", Reply(status=201, json=_failure("missing credentials"), repeat=2)
    )
    client = ProvisionClient(http, token=TOKEN)
    with pytest.raises(Unauthorized) as info:
        client.create_mapping(EXT_ID, EXT_KEY)
    server.add("POST", "/mapping", Reply(status=201, json=SUCCESS))
    client.create_mapping(EXT_ID, EXT_KEY)
    assert EXT_ID in caplog.text
    for secret in (TOKEN, EXT_KEY, THING_KEY):
        assert secret not in caplog.text
        assert secret not in str(info.value)


def test_classify_mapping_error_order() -> None:
    """'409 Conflict' wins over auth words; unknown text is Rejected."""
    url = "http://x/mapping"
    assert isinstance(
        classify_mapping_error("unauthorized : 409 Conflict", "id", url), AlreadyProvisioned
    )
    assert isinstance(classify_mapping_error("failed to whitelist", "id", url), Rejected)
