"""The credential store: checksummed state, generations, fallbacks, modes, pruning."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import stat
from pathlib import Path

import pytest

from edge_provision.agent.store import (
    JOURNAL_LIMIT,
    GenerationData,
    JournalEntry,
    Phase,
    State,
    Store,
    StoredChannel,
    StoredThing,
)
from edge_provision.errors import StoreError

GATEWAY_ID = "6c1e2f0a-0000-4000-8000-000000000001"
OTHER_ID = "6c1e2f0a-0000-4000-8000-000000000002"
CERT = "-----BEGIN CERTIFICATE-----\nMIIBfake{tag}\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIGHfake{tag}\n-----END PRIVATE KEY-----\n"


def make_data(tag: str = "a", *, certs: bool = True) -> GenerationData:
    """A two-thing, two-channel generation whose secrets all contain ``tag``."""
    things = (
        StoredThing(GATEWAY_ID, "gw", f"gwkey-secret-{tag}", {"external_id": "aa:bb"}),
        StoredThing(OTHER_ID, "gw-sensor", f"sensorkey-secret-{tag}", {}),
    )
    channels = (
        StoredChannel("chan-1", "control-channel", {"type": "control"}),
        StoredChannel("chan-2", "data-channel", {"type": "data"}),
    )
    certificates = {GATEWAY_ID: (CERT.format(tag=tag), KEY.format(tag=tag))} if certs else {}
    return GenerationData(
        things=things,
        channels=channels,
        gateway_thing_id=GATEWAY_ID,
        bootstrap_content=json.dumps({"agent": {"secret": f"bootstrap-secret-{tag}"}}),
        source="mapping",
        external_id="aa:bb:cc:dd:ee:ff",
        certificates=certificates,
        ca_pem=CERT.format(tag="ca") if certs else None,
    )


def mode(path: Path) -> int:
    """Permission bits of ``path`` (not following a final symlink)."""
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """A store in a fresh state directory."""
    return Store(tmp_path / "state")


def saved(store: Store, *states: State) -> None:
    """Save ``states`` in order under the lock."""
    with store.lock():
        for s in states:
            store.save_state(s)


# -- state ------------------------------------------------------------------------------------


def test_missing_state_is_fresh_unprovisioned(store: Store) -> None:
    """No state.json yet: a fresh UNPROVISIONED state, no recovery reported."""
    state = store.load_state()
    assert state == State()
    assert state.phase is Phase.UNPROVISIONED
    assert store.recovered_from is None


def test_state_round_trip_and_checksum(store: Store) -> None:
    """A saved state loads back equal; the file carries sha256 of its canonical body."""
    state = (
        State(phase=Phase.ENROLLING, mapping_in_flight=True, next_action="map")
        .record("identity", "done", {"external_id": "aa:bb"}, at="2024-01-01T00:00:00+00:00")
        .with_error("ServiceUnavailable", "503 from server", at="2024-01-01T00:00:01+00:00")
        .bump("attempts")
        .bump("attempts")
    )
    saved(store, state)
    assert store.load_state() == state
    assert store.recovered_from is None
    doc = json.loads(store.state_path.read_text())
    digest = doc.pop("sha256")
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert digest == hashlib.sha256(canonical.encode()).hexdigest()
    assert doc["state"]["counters"] == {"attempts": 2}
    assert doc["state"]["phase"] == "enrolling"


def test_state_files_and_dir_are_private(store: Store) -> None:
    """state.json and state.json.prev are 0600, the state directory 0700."""
    saved(store, State(), State(phase=Phase.ENROLLING))
    assert mode(store.state_dir) == 0o700
    assert mode(store.state_path) == 0o600
    assert mode(store.prev_path) == 0o600


def test_prev_holds_the_previous_state(store: Store) -> None:
    """Each save first copies the old good state.json to state.json.prev."""
    first, second = State(phase=Phase.ENROLLING), State(phase=Phase.PROVISIONED)
    saved(store, first, second)
    assert json.loads(store.prev_path.read_text())["state"]["phase"] == "enrolling"
    assert store.load_state() == second


def test_save_without_lock_is_refused(store: Store) -> None:
    """Writing outside ``with store.lock()`` raises StoreError and writes nothing."""
    with pytest.raises(StoreError, match="state lock"):
        store.save_state(State())
    assert not store.state_path.exists()


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda raw: raw[: len(raw) // 2], id="truncated"),
        pytest.param(lambda raw: b"\x00\xffgarbage\x17", id="garbage"),
        pytest.param(lambda raw: b"", id="empty"),
        pytest.param(
            lambda raw: raw.replace(b'"provisioned"', b'"renewing"'), id="checksum-mismatch"
        ),
        pytest.param(lambda raw: raw.replace(b'"sha256"', b'"sha255"'), id="no-checksum"),
    ],
)
def test_damaged_state_falls_back_to_prev(
    store: Store, caplog: pytest.LogCaptureFixture, damage: object
) -> None:
    """A damaged state.json is replaced by state.json.prev, with a warning."""
    saved(store, State(phase=Phase.ENROLLING), State(phase=Phase.PROVISIONED))
    assert callable(damage)
    store.state_path.write_bytes(damage(store.state_path.read_bytes()))
    with caplog.at_level(logging.WARNING, logger="edge_provision.agent.store"):
        state = store.load_state()
    assert state.phase is Phase.ENROLLING
    assert store.recovered_from == "state.json.prev"
    assert any("state damaged" in r.getMessage() for r in caplog.records)


def test_both_damaged_gives_fresh_state(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    """state.json and .prev both damaged: a fresh state and a warning, never an exception."""
    saved(store, State(phase=Phase.ENROLLING), State(phase=Phase.PROVISIONED))
    store.state_path.write_bytes(b"{not json")
    store.prev_path.write_bytes(b'{"version": 1, "state": {}, "sha256": "00"}')
    with caplog.at_level(logging.WARNING, logger="edge_provision.agent.store"):
        state = store.load_state()
    assert state == State()
    assert store.recovered_from == "fresh"
    assert any("unrecoverable" in r.getMessage() for r in caplog.records)


def test_damaged_state_is_not_copied_over_prev(store: Store) -> None:
    """Saving after damage keeps the good .prev instead of copying the damaged file."""
    saved(store, State(phase=Phase.ENROLLING), State(phase=Phase.PROVISIONED))
    store.state_path.write_bytes(b"garbage")
    saved(store, State(phase=Phase.RENEWING))
    assert json.loads(store.prev_path.read_text())["state"]["phase"] == "enrolling"
    assert store.load_state().phase is Phase.RENEWING


def test_well_sealed_but_wrong_shape_counts_as_damage(store: Store) -> None:
    """A correctly checksummed file with an unknown phase is damage too (falls back)."""
    saved(store, State(phase=Phase.ENROLLING))
    body = {"version": 1, "saved_at": "x", "state": {"phase": "dancing"}}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    body["sha256"] = hashlib.sha256(canonical).hexdigest()
    store.prev_path.write_bytes(store.state_path.read_bytes())
    store.state_path.write_text(json.dumps(body))
    assert store.load_state().phase is Phase.ENROLLING
    assert store.recovered_from == "state.json.prev"


def test_journal_keeps_the_last_entries() -> None:
    """The journal is trimmed to the newest JOURNAL_LIMIT entries."""
    state = State()
    for i in range(JOURNAL_LIMIT + 7):
        state = state.record("step", "done", {"i": str(i)}, at="t")
    assert len(state.journal) == JOURNAL_LIMIT
    assert state.journal[0].detail == {"i": "7"}
    assert state.journal[-1].detail == {"i": str(JOURNAL_LIMIT + 6)}


def test_journal_status_is_checked() -> None:
    """A journal status other than started/done/failed is refused."""
    with pytest.raises(ValueError, match="journal status"):
        JournalEntry("map", "maybe", "t")


# -- generations ------------------------------------------------------------------------------


def test_write_switch_read_generation(store: Store) -> None:
    """A written and switched generation reads back whole through the current link."""
    with store.lock():
        number = store.write_generation(make_data("a"))
        state = store.switch_current(number)
    assert number == 1
    assert state.current_generation == 1
    assert os.readlink(store.current_link) == "generations/1"
    gen = store.current_generation()
    assert gen is not None
    assert gen.number == 1 and not gen.is_fallback
    assert gen.path == store.generations_dir / "1"
    assert gen.gateway_thing.key == "gwkey-secret-a"
    assert [t.id for t in gen.things] == [GATEWAY_ID, OTHER_ID]
    assert [c.metadata["type"] for c in gen.channels] == ["control", "data"]
    assert json.loads(gen.bootstrap_content)["agent"]["secret"] == "bootstrap-secret-a"
    assert (gen.source, gen.external_id) == ("mapping", "aa:bb:cc:dd:ee:ff")
    assert gen.certificates == (GATEWAY_ID,)
    assert gen.cert_path(GATEWAY_ID) == gen.path / f"{GATEWAY_ID}.crt"
    assert gen.key_path(OTHER_ID) is None
    assert gen.ca_path is not None and gen.ca_path.read_text() == CERT.format(tag="ca")
    assert gen.read_certificate(GATEWAY_ID) == (CERT.format(tag="a"), KEY.format(tag="a"))
    assert store.load_state().current_generation == 1


def test_generation_numbers_grow(store: Store) -> None:
    """Each new generation is max existing + 1; the newest is not current until switched."""
    with store.lock():
        numbers = [store.write_generation(make_data(t)) for t in "abc"]
        store.switch_current(2)
    assert numbers == [1, 2, 3]
    assert store.list_generations() == (1, 2, 3)
    gen = store.current_generation()
    assert gen is not None and gen.gateway_thing.key == "gwkey-secret-b"


def test_generation_file_modes(store: Store) -> None:
    """Directories 0700, keys/credentials/json 0600, certificates 0644."""
    with store.lock():
        number = store.write_generation(make_data())
    gen_dir = store.generations_dir / str(number)
    assert mode(store.generations_dir) == 0o700
    assert mode(gen_dir) == 0o700
    for name in (
        "credentials.json",
        "things.json",
        "channels.json",
        "bootstrap.json",
        "manifest.json",
        f"{GATEWAY_ID}.key",
    ):
        assert mode(gen_dir / name) == 0o600, name
    assert mode(gen_dir / f"{GATEWAY_ID}.crt") == 0o644
    assert mode(gen_dir / "ca.crt") == 0o644
    assert "gwkey" not in (gen_dir / "things.json").read_text()
    assert "gwkey-secret-a" in (gen_dir / "credentials.json").read_text()


def test_generation_without_certificates(store: Store) -> None:
    """A key-only generation has no cert, key or CA paths."""
    with store.lock():
        store.switch_current(store.write_generation(make_data(certs=False)))
    gen = store.current_generation()
    assert gen is not None
    assert gen.certificates == () and gen.ca_path is None
    assert gen.cert_path(GATEWAY_ID) is None and gen.read_certificate(GATEWAY_ID) is None


def test_writes_need_the_lock(store: Store) -> None:
    """write_generation, switch_current, prune, forget_current, cleanup_temp need the lock."""
    calls = [
        lambda: store.write_generation(make_data()),
        lambda: store.switch_current(1),
        lambda: store.prune(),
        store.forget_current,
        store.cleanup_temp,
    ]
    for call in calls:
        with pytest.raises(StoreError, match="state lock"):
            call()
    assert not store.generations_dir.exists()


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(dict(gateway_thing_id="nope"), id="unknown-gateway"),
        pytest.param(dict(source="guess"), id="bad-source"),
        pytest.param(dict(certificates={"ghost": ("c", "k")}), id="cert-for-unknown-thing"),
        pytest.param(
            dict(things=(StoredThing("../evil", "x", "k"),), gateway_thing_id="../evil"),
            id="path-in-thing-id",
        ),
    ],
)
def test_inconsistent_generation_data_is_refused(store: Store, data: dict[str, object]) -> None:
    """Data that cannot be stored safely raises StoreError before anything is written."""
    bad = dataclasses.replace(make_data(), **data)  # type: ignore[arg-type]
    with store.lock(), pytest.raises(StoreError, match="cannot store generation"):
        store.write_generation(bad)
    assert store.list_generations() == ()


@pytest.mark.parametrize("damage", ["delete-key", "flip-byte", "delete-manifest", "bad-manifest"])
def test_damaged_current_falls_back_to_older_valid(
    store: Store, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    """A damaged current generation yields the newest older valid one, flagged as fallback."""
    with store.lock():
        for tag in "abc":
            store.switch_current(store.write_generation(make_data(tag)))
    gen3 = store.generations_dir / "3"
    if damage == "delete-key":
        (gen3 / f"{GATEWAY_ID}.key").unlink()
    elif damage == "flip-byte":
        raw = bytearray((gen3 / "credentials.json").read_bytes())
        raw[len(raw) // 2] ^= 0x01
        (gen3 / "credentials.json").write_bytes(bytes(raw))
    elif damage == "delete-manifest":
        (gen3 / "manifest.json").unlink()
    else:
        (gen3 / "manifest.json").write_text("{}")
    raw2 = bytearray((store.generations_dir / "2" / "bootstrap.json").read_bytes())
    raw2[0] ^= 0x20  # generation 2 is damaged as well: 1 is the newest valid one
    (store.generations_dir / "2" / "bootstrap.json").write_bytes(bytes(raw2))
    with caplog.at_level(logging.WARNING, logger="edge_provision.agent.store"):
        gen = store.current_generation()
    assert gen is not None
    assert gen.number == 1 and gen.is_fallback and gen.fallback_from == 3
    assert gen.fallback_reason and "generation 3" in gen.fallback_reason
    assert gen.gateway_thing.key == "gwkey-secret-a"
    assert store.verify_generation(3) and store.verify_generation(2)
    assert store.verify_generation(1) == ()
    assert any("current generation damaged" in r.getMessage() for r in caplog.records)
    with pytest.raises(StoreError, match="generation 3 is damaged"):
        store.load_generation(3)


def test_no_valid_generation_gives_none(store: Store) -> None:
    """A damaged current with no valid older generation yields None, not an exception."""
    with store.lock():
        store.switch_current(store.write_generation(make_data()))
    (store.generations_dir / "1" / "things.json").write_text("[]")
    assert store.current_generation() is None


def test_switch_to_damaged_generation_is_refused(store: Store) -> None:
    """switch_current verifies the target first and leaves the link alone if it is damaged."""
    with store.lock():
        store.switch_current(store.write_generation(make_data("a")))
        store.write_generation(make_data("b"))
        (store.generations_dir / "2" / "channels.json").write_text("[]")
        with pytest.raises(StoreError, match="generation 2 is damaged"):
            store.switch_current(2)
    assert os.readlink(store.current_link) == "generations/1"


def test_prune_keeps_five_and_never_current(store: Store) -> None:
    """prune(keep=5) keeps the newest five plus the current one and deletes the rest."""
    with store.lock():
        for tag in "abcdefgh":
            store.write_generation(make_data(tag))
        store.switch_current(2)
        removed = store.prune(keep=5)
    assert removed == (1, 3)
    assert store.list_generations() == (2, 4, 5, 6, 7, 8)
    gen = store.current_generation()
    assert gen is not None and gen.number == 2
    assert not any(p.name.startswith(".") for p in store.generations_dir.iterdir())


def test_forget_current_keeps_generations(store: Store) -> None:
    """reset removes the current link, sets UNPROVISIONED and keeps the generations."""
    with store.lock():
        store.switch_current(store.write_generation(make_data()))
        store.save_state(State(phase=Phase.PROVISIONED, current_generation=1))
        state = store.forget_current()
    assert state.phase is Phase.UNPROVISIONED and state.current_generation is None
    assert not store.current_link.is_symlink()
    assert store.current_generation() is None
    assert store.list_generations() == (1,)
    assert store.load_state().phase is Phase.UNPROVISIONED


def test_state_is_reconciled_with_the_link(store: Store) -> None:
    """If the link was flipped but the state not saved (a crash), load_state follows the link."""
    with store.lock():
        store.switch_current(store.write_generation(make_data("a")))
        store.write_generation(make_data("b"))
    os.symlink("generations/2", store.state_dir / "tmp-link")
    os.replace(store.state_dir / "tmp-link", store.current_link)
    state = store.load_state()
    assert state.current_generation == 2
    assert state.phase is Phase.PROVISIONED


def test_temp_litter_is_ignored_and_cleaned(store: Store) -> None:
    """A half-written .tmp-<n> is not a generation and cleanup_temp removes it."""
    with store.lock():
        store.switch_current(store.write_generation(make_data()))
    litter = store.generations_dir / ".tmp-2"
    litter.mkdir()
    (litter / "things.json").write_text("[")
    (store.state_dir / ".state.json.0badc0de.tmp").write_text("x")
    (store.state_dir / ".identity.json.0badc0de.tmp").write_text("not ours")
    assert store.list_generations() == (1,)
    with store.lock():
        removed = store.cleanup_temp()
        assert store.write_generation(make_data("b")) == 2
    assert sorted(removed) == [".state.json.0badc0de.tmp", "generations/.tmp-2"]
    assert (store.state_dir / ".identity.json.0badc0de.tmp").exists()


def test_secrets_never_logged(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    """Keys and bootstrap content appear in no log record and no repr."""
    data = make_data("zz")
    with caplog.at_level(logging.DEBUG):
        with store.lock():
            store.switch_current(store.write_generation(data))
            store.prune()
        gen = store.current_generation()
        (store.generations_dir / "1" / "things.json").write_text("[]")
        store.current_generation()
    text = caplog.text + repr(data) + repr(gen) + repr(gen.things if gen else ())
    assert caplog.records
    for secret in ("secret-zz", "MIGHfake", "BEGIN PRIVATE"):
        assert secret not in text


def test_os_errors_become_store_errors(tmp_path: Path) -> None:
    """A file where the generations directory should be gives a StoreError naming the path."""
    store = Store(tmp_path / "state")
    with store.lock():
        store.generations_dir.write_text("not a directory")
        with pytest.raises(StoreError, match="generations"):
            store.write_generation(make_data())
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="expected a directory"), Store(blocker / "s").lock():
        pass


def test_lock_is_reentrant_in_one_thread(store: Store) -> None:
    """Nested ``lock()`` in one thread works and the lock is held until the outer block ends."""
    seen = [store.is_locked]
    with store.lock():
        with store.lock(blocking=False):
            seen.append(store.is_locked)
        seen.append(store.is_locked)
        store.save_state(State())
    seen.append(store.is_locked)
    assert seen == [False, True, True, False]
    assert store.lock_path.exists()
