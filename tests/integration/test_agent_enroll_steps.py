"""Enrollment steps against the scripted FakeServer (real HTTP on 127.0.0.1).

The step runner alone, with in-memory ports: tests/unit/test_enroll.py.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from edge_provision.agent import wiring
from edge_provision.agent.enroll import EnrollResult, StepEvent, Verifier, enroll
from edge_provision.agent.enroll.ports import Verified
from edge_provision.agent.store import Generation, Phase, Store
from edge_provision.crypto import bootstrap_cipher
from edge_provision.errors import (
    AlreadyProvisioned,
    BadReply,
    CertificateError,
    IdentityError,
    MqttAuthError,
    Reason,
    Rejected,
    RetryClass,
    ServiceUnavailable,
    Unauthorized,
)
from edge_provision.settings import AgentSettings, load_agent_settings
from edge_provision.testing import FakeServer, Reply, ThrowawayCA

EXT_ID = "02:42:ac:11:00:07"
EXT_KEY = "external-key-0007-secret"
TOKEN = "operator-token-abcdef"
THING = {"id": "5d0f1c2a-7c1e-4b7e-9a55-0b7f3f0a1e11", "name": "gw-0007",
         "key": "e6b3a4c0-2f0e-4e43-8f3f-6b8d1c0c9a22", "metadata": {"external_id": EXT_ID}}
CONTROL = {"id": "9a1b2c3d-1111-4a4a-8b8b-0c0c0c0c0c01", "name": "control-channel",
           "metadata": {"type": "control"}}
DATA = {"id": "9a1b2c3d-2222-4a4a-8b8b-0c0c0c0c0c02", "name": "data-channel",
        "metadata": {"type": "data"}}
MAPPING = {"things": [THING], "channels": [CONTROL, DATA], "whitelisted": {THING["id"]: True}}
CONTENT = '{"agent":{"heartbeat":{"interval":"30s"}}}'
BOOTSTRAP = {"mainflux_id": THING["id"], "mainflux_key": THING["key"],
             "mainflux_channels": [DATA, CONTROL], "content": CONTENT}
LOOKUP = f"/things/bootstrap/{EXT_ID}"


@pytest.fixture
def server() -> Iterator[FakeServer]:
    """A scripted server standing in for provision, bootstrap and certs."""
    with FakeServer() as fake:
        yield fake


def make_settings(tmp_path: Path, server: FakeServer, **flags: object) -> AgentSettings:
    """Agent settings pointing at ``server`` with a fixed identity and a short timeout."""
    base: dict[str, object] = {
        "state_dir": tmp_path / "agent", "provision_url": server.url, "external_id": EXT_ID,
        "external_key": EXT_KEY, "token": TOKEN, "auth_scheme": "modern",
        "read_timeout_s": 1.0, "mqtt_verify": "never",
    }
    base.update(flags)
    return load_agent_settings(base, env={})


def run(settings: AgentSettings, *, force: bool = False, verifier: Verifier | None = None,
        events: list[StepEvent] | None = None) -> EnrollResult:
    """One enrollment with clients built by the composition root."""
    with wiring.build_clients(settings) as clients:
        return enroll(settings, Store(settings.state_dir), clients, verifier=verifier,
                      force=force, progress=None if events is None else events.append)


def script_fresh(server: FakeServer, *, health: object = None) -> None:
    """Lookup 404, mapping 201, bootstrap 200, health without CSR."""
    server.add("GET", LOOKUP, Reply(404, json={"error": "failed to read bootstrap configuration"}))
    server.add("POST", "/mapping", Reply(201, json=MAPPING))
    server.add("GET", LOOKUP, Reply(200, json=BOOTSTRAP))
    server.add("GET", "/health", Reply(200, json=health or {"status": "pass"}, repeat=None))


def paths(server: FakeServer) -> list[str]:
    """``METHOD path`` of every request the server saw, in order."""
    return [f"{r.method} {r.path}" for r in server.requests]


def test_fresh_enrollment_maps_once_and_stores_a_generation(tmp_path: Path,
                                                            server: FakeServer) -> None:
    """Lookup finds nothing, /mapping once, bootstrap fetch, generation 1 made current."""
    script_fresh(server)
    events: list[StepEvent] = []
    result = run(make_settings(tmp_path, server), events=events)
    assert paths(server) == [f"GET {LOOKUP}", "POST /mapping", f"GET {LOOKUP}", "GET /health"]
    assert server.requests[1].json() == {"external_id": EXT_ID, "external_key": EXT_KEY}
    assert server.requests[1].headers["Authorization"] == f"Bearer {TOKEN}"
    assert server.requests[0].headers["Authorization"] == f"Thing {EXT_KEY}"
    assert result.created_mapping and result.changed and result.generation == 1
    assert result.thing_id == THING["id"]
    assert [c.type for c in result.credentials.channels] == ["control", "data"]
    store = Store(tmp_path / "agent")
    gen = store.current_generation()
    assert gen is not None and gen.number == 1 and gen.bootstrap_content == CONTENT
    assert gen.gateway_thing.key == THING["key"] and gen.gateway_thing.name == "gw-0007"
    state = store.load_state()
    assert state.phase is Phase.PROVISIONED and not state.mapping_in_flight
    assert state.next_action == "check" and state.last_error is None
    assert state.counters["mappings_created"] == 1
    steps = [(e.step, e.status) for e in events if e.status != "started"]
    assert steps[:4] == [("identity", "done"), ("lookup", "done"), ("mapping", "done"),
                         ("bootstrap", "done")]
    started = [e for e in events if e.step == "mapping" and e.status == "started"]
    assert started and started[0].url == f"{server.url}/mapping"


def test_journal_records_mapping_before_the_request(tmp_path: Path, server: FakeServer) -> None:
    """The journal holds 'mapping started' ahead of 'mapping done'."""
    script_fresh(server)
    run(make_settings(tmp_path, server))
    journal = [(e.step, e.status) for e in Store(tmp_path / "agent").load_state().journal]
    assert journal.index(("mapping", "started")) < journal.index(("mapping", "done"))
    assert journal.index(("lookup", "started")) < journal.index(("mapping", "started"))


def test_existing_bootstrap_config_means_no_mapping(tmp_path: Path, server: FakeServer) -> None:
    """A config found by the lookup is taken as is: POST /mapping is never sent."""
    server.add("GET", LOOKUP, Reply(200, json=BOOTSTRAP))
    server.add("GET", "/health", Reply(200, json={"status": "pass"}))
    result = run(make_settings(tmp_path, server))
    assert server.requests_to("POST", "/mapping") == []
    assert not result.created_mapping and result.thing_id == THING["id"]
    gen = Store(tmp_path / "agent").current_generation()
    assert gen is not None and gen.source == "bootstrap"
    assert [c.id for c in gen.channels] == [CONTROL["id"], DATA["id"]]  # control first


def test_magistrala_field_names_are_read(tmp_path: Path, server: FakeServer) -> None:
    """thing_id / thing_key / channels (the later generation of names) work too."""
    body = {"thing_id": THING["id"], "thing_key": THING["key"], "channels": [CONTROL, DATA],
            "content": CONTENT}
    server.add("GET", LOOKUP, Reply(200, json=body))
    server.add("GET", "/health", Reply(200, json={"status": "pass"}))
    result = run(make_settings(tmp_path, server))
    assert result.thing_id == THING["id"]
    gen = Store(tmp_path / "agent").current_generation()
    assert gen is not None and gen.gateway_thing.key == THING["key"]


def test_repeat_is_a_no_op_without_requests(tmp_path: Path, server: FakeServer) -> None:
    """With a valid current generation, enroll sends nothing and changes nothing."""
    script_fresh(server)
    settings = make_settings(tmp_path, server)
    run(settings)
    server.clear()
    result = run(settings)
    assert server.requests == []
    assert not result.changed and result.generation == 1
    assert Store(tmp_path / "agent").list_generations() == (1,)


def test_force_refetches_without_a_new_mapping(tmp_path: Path, server: FakeServer) -> None:
    """--force looks the config up again and writes generation 2; no second /mapping."""
    script_fresh(server)
    settings = make_settings(tmp_path, server)
    run(settings)
    server.clear()
    server.add("GET", LOOKUP, Reply(200, json=BOOTSTRAP))
    server.add("GET", "/health", Reply(200, json={"status": "pass"}))
    result = run(settings, force=True)
    assert paths(server) == [f"GET {LOOKUP}", "GET /health"]
    assert result.generation == 2 and result.changed and not result.created_mapping


def test_mainflux_201_with_409_error_is_a_permanent_error(tmp_path: Path,
                                                         server: FakeServer) -> None:
    """201 + '409 Conflict', confirmed by a second empty lookup: AlreadyProvisioned, what to do."""
    not_found = Reply(404, json={"error": "failed to read bootstrap configuration"}, repeat=2)
    server.add("GET", LOOKUP, not_found)
    server.add("POST", "/mapping", CONFLICT_201)
    with pytest.raises(AlreadyProvisioned) as info:
        run(make_settings(tmp_path, server))
    assert paths(server) == [f"GET {LOOKUP}", "POST /mapping", f"GET {LOOKUP}"]
    message = str(info.value)
    assert (info.value.step, info.value.reason) == ("mapping", Reason.CONFLICT)
    assert "step mapping failed" in message and "EDGE_PROVISION_EXTERNAL_KEY" in message
    assert "delete the bootstrap config" in message
    state = Store(tmp_path / "agent").load_state()
    assert not state.mapping_in_flight
    assert state.phase is Phase.FAILED_PERMANENT
    assert state.last_error is not None and state.last_error.kind == "AlreadyProvisioned"
    assert state.next_action == "enroll"


def test_mainflux_201_missing_credentials_is_unauthorized(tmp_path: Path,
                                                          server: FakeServer) -> None:
    """201 + 'missing credentials' means the platform could not authenticate the run."""
    server.add("GET", LOOKUP, Reply(404, json={"error": "failed to read bootstrap configuration"}))
    server.add("POST", "/mapping", Reply(201, json={"things": None, "channels": None,
                                                    "error": "missing credentials"}))
    with pytest.raises(Unauthorized):
        run(make_settings(tmp_path, server))
    assert not Store(tmp_path / "agent").load_state().mapping_in_flight


@pytest.mark.parametrize(("reply", "text"), [
    (Reply(400, body=b""), "empty 400 body"),
    (Reply(415, json={"error": "unsupported content type"}), "Content-Type"),
])
def test_client_errors_on_mapping_are_rejected(tmp_path: Path, server: FakeServer, reply: Reply,
                                               text: str) -> None:
    """An empty-body 400 and a 415 are Rejected, with the hint and the step."""
    server.add("GET", LOOKUP, Reply(404, json={"error": "failed to read bootstrap configuration"}))
    server.add("POST", "/mapping", reply)
    with pytest.raises(Rejected) as info:
        run(make_settings(tmp_path, server))
    assert text in str(info.value) and "step mapping failed" in str(info.value)
    assert not Store(tmp_path / "agent").load_state().mapping_in_flight


def test_429_keeps_mapping_in_flight_and_resume_looks_up_first(tmp_path: Path,
                                                               server: FakeServer) -> None:
    """429 + Retry-After: retryable, in flight; the next run finds the config: no 2nd POST."""
    server.add("GET", LOOKUP, Reply(404, json={"error": "failed to read bootstrap configuration"}))
    server.add("POST", "/mapping", Reply(429, json={"error": "slow down"},
                                         headers={"Retry-After": "7"}))
    settings = make_settings(tmp_path, server)
    before = datetime.now(timezone.utc)
    with pytest.raises(ServiceUnavailable) as info:
        run(settings)
    assert info.value.retry_after_s == 7
    state = Store(tmp_path / "agent").load_state()
    assert state.mapping_in_flight and state.phase is Phase.UNPROVISIONED
    assert state.next_action == "enroll" and state.next_action_at is not None
    due = datetime.fromisoformat(state.next_action_at)
    assert before + timedelta(seconds=5) <= due <= before + timedelta(seconds=10)
    server.add("GET", LOOKUP, Reply(200, json=BOOTSTRAP))  # the server had mapped after all
    server.add("GET", "/health", Reply(200, json={"status": "pass"}))
    run(settings)
    assert len(server.requests_to("POST", "/mapping")) == 1
    assert not Store(tmp_path / "agent").load_state().mapping_in_flight


@pytest.mark.parametrize(("reply", "error", "reason", "text"), [
    (Reply(503, json={"error": "down"}), ServiceUnavailable, Reason.UNAVAILABLE, "HTTP 503"),
    (Reply(403, json={"error": "failed to get bootstrap configuration for given external key"}),
     Unauthorized, Reason.KEY_MISMATCH, "original external_key"),
])
def test_a_failed_lookup_never_maps(tmp_path: Path, server: FakeServer, reply: Reply,
                                    error: type[Exception], reason: Reason, text: str) -> None:
    """A lookup that cannot answer (503) or refuses our key (403, says what to do) stops
    the run before any /mapping; the step and the reason are on the error."""
    server.add("GET", LOOKUP, reply)
    with pytest.raises(error) as info:
        run(make_settings(tmp_path, server))
    assert str(info.value).startswith("step lookup failed") and text in str(info.value)
    assert (info.value.step, info.value.reason) == ("lookup", reason)  # type: ignore[attr-defined]
    assert server.requests_to("POST", "/mapping") == []


def test_timeout_then_resume_looks_up_before_mapping_again(tmp_path: Path,
                                                           server: FakeServer) -> None:
    """A read timeout on /mapping leaves it in flight; the rerun looks up before POSTing."""
    server.add("GET", LOOKUP, Reply(404, json={"error": "failed to read bootstrap configuration"}))
    server.add("POST", "/mapping", Reply(201, json=MAPPING, delay_s=3))
    settings = make_settings(tmp_path, server)
    with pytest.raises(ServiceUnavailable):
        run(settings)
    assert Store(tmp_path / "agent").load_state().mapping_in_flight
    server.clear()
    script_fresh(server)
    run(settings)
    assert paths(server)[:2] == [f"GET {LOOKUP}", "POST /mapping"]
    assert not Store(tmp_path / "agent").load_state().mapping_in_flight


def test_connection_reset_on_mapping_is_transient(tmp_path: Path, server: FakeServer) -> None:
    """A reset connection is ServiceUnavailable and keeps the mapping in flight."""
    server.add("GET", LOOKUP, Reply(404, json={"error": "failed to read bootstrap configuration"}))
    server.add("POST", "/mapping", Reply(close_without_reply=True))
    with pytest.raises(ServiceUnavailable):
        run(make_settings(tmp_path, server))
    assert Store(tmp_path / "agent").load_state().mapping_in_flight


def test_truncated_bootstrap_body_is_transient(tmp_path: Path, server: FakeServer) -> None:
    """A body cut short is ServiceUnavailable; nothing is stored."""
    server.add("GET", LOOKUP, Reply(200, json=BOOTSTRAP, truncate_to=20))
    with pytest.raises(ServiceUnavailable):
        run(make_settings(tmp_path, server))
    assert Store(tmp_path / "agent").list_generations() == ()


def test_oversized_bootstrap_body_is_a_bad_reply(tmp_path: Path, server: FakeServer) -> None:
    """A reply over the size cap is refused (a transient BadReply), nothing stored."""
    server.add("GET", LOOKUP, Reply(200, body=b"x" * (2 * 1024 * 1024)))
    with pytest.raises(BadReply):
        run(make_settings(tmp_path, server))
    assert Store(tmp_path / "agent").list_generations() == ()


def test_secure_bootstrap_encrypts_the_key_and_reads_the_body(tmp_path: Path,
                                                             server: FakeServer) -> None:
    """The secure endpoint gets an encrypted key and answers an encrypted body."""
    key = bootstrap_cipher.parse_encrypt_key(bootstrap_cipher.DEFAULT_ENCRYPT_KEY_HEX)
    blob = bootstrap_cipher.encrypt(key, json.dumps(BOOTSTRAP).encode())
    server.add("GET", f"/things/bootstrap/secure/{EXT_ID}", Reply(200, body=blob))
    server.add("GET", "/health", Reply(200, json={"status": "pass"}))
    result = run(make_settings(tmp_path, server, secure_bootstrap=True))
    assert result.thing_id == THING["id"]
    header = server.requests[0].headers["Authorization"]
    assert header.startswith("Thing ") and EXT_KEY not in header
    assert bootstrap_cipher.decrypt_external_key_header(key, header[len("Thing "):]) == EXT_KEY


def test_platform_certificates_are_stored(tmp_path: Path, server: FakeServer) -> None:
    """Without a CSR path, the mapping's certificates and CA are stored; next = renew."""
    ca = ThrowawayCA(tmp_path / "ca")
    cert, key = ca.issue_client(THING["id"], ttl_s=3600)
    mapping = dict(MAPPING, client_cert={THING["id"]: cert}, client_key={THING["id"]: key},
                   ca_cert=ca.cert_pem)
    server.add("GET", LOOKUP, Reply(404, json={"error": "failed to read bootstrap configuration"}))
    server.add("POST", "/mapping", Reply(201, json=mapping))
    server.add("GET", LOOKUP, Reply(404, json={"error": "failed to read bootstrap configuration"}))
    server.add("GET", "/health", Reply(200, json={"status": "pass"}))
    result = run(make_settings(tmp_path, server))
    gen = Store(tmp_path / "agent").current_generation()
    assert gen is not None and gen.certificates == (THING["id"],) and gen.has_ca
    assert gen.bootstrap_content == ""  # no bootstrap config in this layout
    assert result.next_action == "renew" and len(result.credentials.certificates) == 1
    key_path = gen.key_path(THING["id"])
    assert key_path is not None and key_path.stat().st_mode & 0o777 == 0o600


def test_csr_answer_for_another_key_is_refused(tmp_path: Path, server: FakeServer) -> None:
    """A signed certificate that does not match our CSR key is a CertificateError."""
    ca = ThrowawayCA(tmp_path / "ca")
    cert, _ = ca.issue_client(THING["id"], ttl_s=3600)
    script_fresh(server, health={"status": "pass", "csr": True})
    server.add("POST", "/certs/csr", Reply(201, json={
        "thing_id": THING["id"], "client_cert": cert, "cert_serial": "01",
        "expiration": "2030-01-01T00:00:00Z", "ca_cert": ca.cert_pem}))
    with pytest.raises(CertificateError):
        run(make_settings(tmp_path, server))
    csr_request = server.requests_to("POST", "/certs/csr")[0]
    assert csr_request.headers["Authorization"] == f"Thing {THING['key']}"
    assert b"PRIVATE KEY" not in csr_request.body and b"CERTIFICATE REQUEST" in csr_request.body
    assert Store(tmp_path / "agent").list_generations() == ()


def test_failed_verification_keeps_the_generation_out_of_current(tmp_path: Path,
                                                                 server: FakeServer) -> None:
    """A verifier failure leaves the new generation on disk but not current."""
    script_fresh(server)

    def refuse(generation: object) -> None:
        raise MqttAuthError("broker refused the credentials")

    with pytest.raises(MqttAuthError) as info:
        run(make_settings(tmp_path, server, mqtt_new_credentials_grace_s=0), verifier=refuse)
    assert "step verify failed" in str(info.value)
    store = Store(tmp_path / "agent")
    assert store.list_generations() == (1,) and store.current_generation() is None
    state = store.load_state()
    assert state.last_error is not None and state.last_error.kind == "MqttAuthError"


def test_new_credentials_refused_for_a_moment_are_retried(tmp_path: Path,
                                                         server: FakeServer) -> None:
    """A broker that learns of a new thing late: refusals within the grace are retried."""
    script_fresh(server)
    calls: list[int] = []

    def late_broker(generation: Generation) -> Verified | None:
        calls.append(generation.number)
        if len(calls) < 3:
            raise MqttAuthError("not authorised (the broker has not reloaded yet)")
        return None  # then it lets the thing in (None: nothing to report)

    result = run(make_settings(tmp_path, server, mqtt_new_credentials_grace_s=30),
                 verifier=late_broker)
    assert calls == [1, 1, 1] and result.changed
    assert Store(tmp_path / "agent").current_generation() is not None


def test_refusal_outlasting_the_grace_fails_after_retrying(tmp_path: Path,
                                                          server: FakeServer) -> None:
    """Refused for longer than the grace: the refusal counts, after more than one try."""
    script_fresh(server)
    calls: list[int] = []

    def refuse(generation: Generation) -> None:
        calls.append(generation.number)
        raise MqttAuthError("not authorised")

    with pytest.raises(MqttAuthError):
        run(make_settings(tmp_path, server, mqtt_new_credentials_grace_s=1), verifier=refuse)
    assert len(calls) >= 2
    assert Store(tmp_path / "agent").current_generation() is None


def test_previous_generation_stays_current_when_verify_fails(tmp_path: Path,
                                                             server: FakeServer) -> None:
    """--force with a failing verifier keeps generation 1 current."""
    script_fresh(server)
    settings = make_settings(tmp_path, server)
    run(settings)
    server.add("GET", LOOKUP, Reply(200, json=BOOTSTRAP))

    def refuse(generation: object) -> None:
        raise MqttAuthError("no")

    with pytest.raises(MqttAuthError):
        run(settings, force=True, verifier=refuse)
    store = Store(tmp_path / "agent")
    current = store.current_generation()
    assert current is not None and current.number == 1
    assert store.load_state().phase is Phase.PROVISIONED
    assert store.load_state().next_action == "enroll"
    result = run(settings)  # the plain no-op puts the schedule back on track
    assert not result.changed and store.load_state().next_action == "check"


def test_in_flight_state_from_a_crash_looks_up_first(tmp_path: Path, server: FakeServer) -> None:
    """mapping_in_flight left by a killed run: lookup answers, no POST at all."""
    settings = make_settings(tmp_path, server)
    store = Store(settings.state_dir)
    with store.lock():
        store.save_state(dataclasses.replace(store.load_state(), mapping_in_flight=True))
    server.add("GET", LOOKUP, Reply(200, json=BOOTSTRAP))
    server.add("GET", "/health", Reply(200, json={"status": "pass"}))
    run(settings)
    assert paths(server) == [f"GET {LOOKUP}", "GET /health"]
    assert not store.load_state().mapping_in_flight


def test_changed_external_id_enrolls_again_only_when_forced(tmp_path: Path,
                                                            server: FakeServer) -> None:
    """A current generation for another external_id: enrolling the new id would leave a
    second thing-set, so it is refused (saying so) unless forced; forced, it enrolls."""
    script_fresh(server)
    run(make_settings(tmp_path, server))
    other = "02:42:ac:11:00:08"
    server.add("GET", f"/things/bootstrap/{other}", Reply(200, json=BOOTSTRAP))
    requests_before = len(server.requests)
    with pytest.raises(IdentityError, match="second set of things") as refused:
        run(make_settings(tmp_path, server, external_id=other))
    assert refused.value.step == "identity" and "--force" in str(refused.value)
    assert len(server.requests) == requests_before  # nothing asked of the platform
    result = run(make_settings(tmp_path, server, external_id=other), force=True)
    assert result.changed and result.external_id == other and result.generation == 2


def test_no_secret_reaches_the_log(tmp_path: Path, server: FakeServer,
                                   caplog: pytest.LogCaptureFixture) -> None:
    """external_key, token and thing key never appear in log records."""
    caplog.set_level(logging.DEBUG)
    script_fresh(server)
    run(make_settings(tmp_path, server))
    text = caplog.text
    assert caplog.records
    for secret in (EXT_KEY, TOKEN, THING["key"]):
        assert secret not in text


@pytest.mark.parametrize("bad", [".", "..", "gw/1", "gw\x00", "gw\u202e1", "gw\x851"])
def test_an_id_that_cannot_travel_as_one_path_segment_is_refused(tmp_path: Path,
                                                                 server: FakeServer,
                                                                 bad: str) -> None:  # fmt: skip
    """Refused before any request, naming where the value came from and the rule (exit 2)."""
    with pytest.raises(IdentityError) as info:
        run(make_settings(tmp_path, server, external_id=bad))
    text = str(info.value)
    assert "flag --external-id" in text and "one URL path segment" in text
    assert info.value.exit_code == 2 and server.requests == []


def test_a_stored_id_that_cannot_travel_is_refused(tmp_path: Path, server: FakeServer) -> None:
    """An identity.json edited to '..' names the file; nothing is sent."""
    state = tmp_path / "agent"
    state.mkdir(mode=0o700)
    (state / "identity.json").write_text(json.dumps(
        {"version": 1, "external_id": "..", "external_key": EXT_KEY, "interface": None,
         "mac": None, "created": None}))  # fmt: skip
    (state / "identity.json").chmod(0o600)
    with pytest.raises(IdentityError) as info:
        run(make_settings(tmp_path, server, external_id=None))
    assert "identity.json: 'external_id' '..': it cannot be one URL path segment" in str(info.value)
    assert server.requests == []


CONFLICT_201 = Reply(201, json={
    "things": None, "channels": None,
    "error": "failed to create bootstrap config : failed to create entity : 409 Conflict"})


def test_a_409_with_a_key_mismatch_on_lookup_is_refused(tmp_path: Path,
                                                       server: FakeServer) -> None:
    """201 + '409', then the lookup says the config is another key's: confirmed (exit 77)."""
    server.add("GET", LOOKUP, Reply(404, json={"error": "failed to read bootstrap configuration"}))
    server.add("POST", "/mapping", CONFLICT_201)
    server.add("GET", LOOKUP, Reply(403, json={"error": "failed to read bootstrap configuration"}))
    with pytest.raises(Unauthorized) as info:
        run(make_settings(tmp_path, server))
    assert (info.value.step, info.value.reason) == ("mapping", Reason.KEY_MISMATCH)
    assert info.value.exit_code == 77 and "original external_key" in str(info.value)
    assert not Store(tmp_path / "agent").load_state().mapping_in_flight


def test_a_409_that_cannot_be_confirmed_is_transient(tmp_path: Path, server: FakeServer) -> None:
    """201 + '409', then the lookup fails (503): not confirmed, so retry; still in flight."""
    server.add("GET", LOOKUP, Reply(404, json={"error": "failed to read bootstrap configuration"}))
    server.add("POST", "/mapping", CONFLICT_201)
    server.add("GET", LOOKUP, Reply(503, json={"error": "service unavailable"}))
    with pytest.raises(ServiceUnavailable) as info:
        run(make_settings(tmp_path, server))
    assert info.value.step == "mapping" and info.value.retry_class is RetryClass.TRANSIENT
    assert "not confirmed" in str(info.value)
    state = Store(tmp_path / "agent").load_state()
    assert state.mapping_in_flight and state.phase is Phase.UNPROVISIONED
