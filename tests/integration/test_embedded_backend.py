"""The embedded lab backend against real SQLite files (and one real killed process)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Callable, TypeVar

import pytest

from edge_provision.crypto.pki import IssuedCert, LocalCA, parse_certificate, verify_chain
from edge_provision.errors import AlreadyProvisioned, Rejected, StoreError
from edge_provision.lab.backends.embedded import EmbeddedBackend
from edge_provision.lab.models import CertIssuer, MappingRecord, ThingRecord
from edge_provision.layout import (
    BootstrapOptions,
    Layout,
    Plan,
    PlannedCertificate,
    default_layout,
    load_layout,
    plan,
)

MULTI_LAYOUT = """
[bootstrap]
  provision = true
  autowhite_list = true
  x509_provision = true
  [bootstrap.content.agent.mqtt]
    url = "tcp://mqtt.lab.test:1883"

[cert]
  ttl = "24h"
  keyType = "ec"
  key_bits = 256

[[things]]
  name = "sensor-a"
  [things.metadata]
    model = "th-100"

[[things]]
  name = "gateway"
  [things.metadata]
    external_id = "placeholder"
    tags = ["edge", "lab"]

[[things]]
  name = "sensor-b"

[[channels]]
  name = "data-channel"
  [channels.metadata]
    type = "data"

[[channels]]
  name = "events"

[[channels]]
  name = "export-channel"
  [channels.metadata]
    type = "export"

[[channels]]
  name = "control-channel"
  [channels.metadata]
    type = "control"
"""

T = TypeVar("T")


@pytest.fixture()
def db_path(tmp_path: Path) -> Path:
    """Where each test's database lives."""
    return tmp_path / "state" / "lab.db"


@pytest.fixture()
def backend(db_path: Path) -> Iterator[EmbeddedBackend]:
    """A fresh backend on a new file, closed after the test."""
    b = EmbeddedBackend(db_path)
    yield b
    b.close()


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    """One real local CA for the certificate tests."""
    return LocalCA.load_or_create(tmp_path_factory.mktemp("ca"))


def _issuer(ca: LocalCA) -> CertIssuer:
    def issue(things: Sequence[ThingRecord], planned: Sequence[PlannedCertificate]
              ) -> dict[str, tuple[IssuedCert, str]]:
        out: dict[str, tuple[IssuedCert, str]] = {}
        for want in planned:
            thing = things[want.thing_index]
            out[thing.id] = ca.issue(common_name=thing.id, key_type=want.key_type,
                                     key_bits=want.key_bits, ttl_s=want.ttl_s)
        return out

    return issue


def provision(backend: EmbeddedBackend, run: Plan, issue_certs: CertIssuer | None = None
              ) -> MappingRecord:
    """``backend.provision`` awaited on an event loop of its own (as owner "lab")."""
    return asyncio.run(backend.provision(run, owner="lab", issue_certs=issue_certs))


def _default_plan(external_id: str = "02:42:ac:11:00:07", key: str = "k3y-0007",
                  name: str | None = None, layout: Layout | None = None) -> Plan:
    return plan(layout or default_layout(), external_id, key, name)


def test_ids_are_time_ordered_and_keys_random(backend: EmbeddedBackend) -> None:
    """Thing and channel ids are version-7 UUIDs that sort in creation order (new rows go to
    the end of the id indexes); thing keys, the secrets, stay random version-4 UUIDs."""
    records = [provision(backend, _default_plan(f"02:42:ac:11:01:{n:02x}", f"k-{n}"))
               for n in range(20)]  # fmt: skip
    ids = [i for r in records for i in (*(t.id for t in r.things), *(c.id for c in r.channels))]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(uuid.UUID(i).variant == uuid.RFC_4122 for i in ids)
    keys = [t.key for r in records for t in r.things]
    assert all(uuid.UUID(k).version == 4 for k in keys) and len(set(keys)) == len(keys)


def test_default_layout_provision_shape(backend: EmbeddedBackend) -> None:
    """The default layout creates one gateway thing, control + data channels, both connected."""
    record = provision(backend, _default_plan(name="gw-0007"))
    assert record.created is True
    assert record.external_id == "02:42:ac:11:00:07"
    (thing,) = record.things
    assert thing.name == "gw-0007"
    assert thing.metadata == {"external_id": "02:42:ac:11:00:07"}
    assert uuid.UUID(thing.id).version == 7 and uuid.UUID(thing.key).version == 4
    assert str(uuid.UUID(thing.id)) == thing.id and str(uuid.UUID(thing.key)) == thing.key
    assert thing.owner == "lab"
    assert all(uuid.UUID(c.id).version == 7 for c in record.channels)
    assert [c.name for c in record.channels] == ["control-channel", "data-channel"]
    assert [c.metadata for c in record.channels] == [{"type": "control"}, {"type": "data"}]
    assert record.whitelisted == (thing.id,)
    assert record.client_certs == {} and record.client_keys == {} and record.ca_cert is None
    assert backend.counts() == {"things": 1, "channels": 2, "connections": 2,
                                "bootstrap_configs": 1, "certificates": 0}
    assert set(backend.connections(thing.id)) == {c.id for c in record.channels}
    boot = asyncio.run(backend.bootstrap("02:42:ac:11:00:07", "k3y-0007"))
    assert boot is not None
    assert (boot.thing_id, boot.thing_key, boot.state) == (thing.id, thing.key, 1)
    assert boot.channels == record.channels and boot.extra_things == ()
    assert boot.content == "{}"


def test_multi_thing_layout_fully_created(backend: EmbeddedBackend, ca: LocalCA) -> None:
    """3 things x 4 channels: every entity, 12 connections, ordered bootstrap, stored certs."""
    layout = load_layout(MULTI_LAYOUT, "multi.toml")
    run = plan(layout, "aa:bb:cc:00:00:01", "multi-key", "gw-1")
    record = provision(backend, run, _issuer(ca))
    assert [t.name for t in record.things] == ["gw-1-sensor-a", "gw-1", "gw-1-sensor-b"]
    assert record.things[1].metadata == {"external_id": "aa:bb:cc:00:00:01",
                                         "tags": ["edge", "lab"]}
    assert [c.name for c in record.channels] == ["data-channel", "events", "export-channel",
                                                 "control-channel"]
    assert record.whitelisted == tuple(t.id for t in record.things)
    assert backend.counts() == {"things": 3, "channels": 4, "connections": 12,
                                "bootstrap_configs": 1, "certificates": 3}
    for thing in record.things:
        assert set(backend.connections(thing.id)) == {c.id for c in record.channels}
        cert_pem = record.client_certs[thing.id]
        verify_chain(cert_pem, ca.cert_pem)
        info = parse_certificate(cert_pem)
        assert info.common_name == thing.id
        stored = backend.certificate(info.serial)
        assert stored is not None and stored.thing_id == thing.id and not stored.revoked
        assert stored.not_after == info.not_after
        assert "PRIVATE KEY" in record.client_keys[thing.id]
    assert record.ca_cert == ca.cert_pem
    gateway = record.things[1]
    boot = asyncio.run(backend.bootstrap("aa:bb:cc:00:00:01", "multi-key"))
    assert boot is not None and boot.thing_id == gateway.id and boot.name
    assert [c.name for c in boot.channels] == ["control-channel", "data-channel",
                                               "export-channel", "events"]
    assert {c.id for c in boot.channels} == {c.id for c in record.channels}
    assert boot.client_cert == record.client_certs[gateway.id]
    assert boot.client_key == record.client_keys[gateway.id]
    assert boot.ca_cert == ca.cert_pem
    assert '"mqtt"' in boot.content
    assert boot.extra_things == (record.things[0], record.things[2])


def test_idempotent_repeat_returns_identical_record(backend: EmbeddedBackend, ca: LocalCA) -> None:
    """The same external_id + key returns the stored record (ids, keys, certs, order)."""
    layout = load_layout(MULTI_LAYOUT, "multi.toml")
    run = plan(layout, "aa:bb:cc:00:00:02", "same-key", None)
    first = provision(backend, run, _issuer(ca))
    counts = backend.counts()
    calls: list[int] = []

    def counting(things: Sequence[ThingRecord], planned: Sequence[PlannedCertificate]
                 ) -> dict[str, tuple[IssuedCert, str]]:
        calls.append(len(planned))
        return _issuer(ca)(things, planned)

    again = provision(backend, run, counting)
    assert calls == []  # a repeat issues no new certificates
    assert again.created is False
    assert again == dataclasses.replace(first, created=False)
    assert list(again.client_certs) == list(first.client_certs)
    assert backend.counts() == counts


def test_different_key_raises_already_provisioned(backend: EmbeddedBackend) -> None:
    """A second external_key for a known external_id is refused and creates nothing."""
    provision(backend, _default_plan(key="original"))
    counts = backend.counts()
    with pytest.raises(AlreadyProvisioned, match="different external_key"):
        provision(backend, _default_plan(key="another"))
    assert backend.counts() == counts


def _run_threads(count: int, target: Callable[[int], T]) -> list[T | Exception]:
    barrier = threading.Barrier(count)
    results: list[T | Exception] = [RuntimeError("did not run")] * count

    def work(i: int) -> None:
        barrier.wait(timeout=30)
        try:
            results[i] = target(i)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive()
    return results


def test_concurrent_same_external_id_creates_one_set(backend: EmbeddedBackend) -> None:
    """16 threads provisioning one external_id create exactly one set, all see the same ids."""
    run = _default_plan(external_id="race")
    results = _run_threads(16, lambda _i: provision(backend, run))
    records = [r for r in results if isinstance(r, MappingRecord)]
    assert len(records) == 16, results
    created = [r for r in records if r.created]
    assert len(created) == 1
    assert {r.things[0].id for r in records} == {created[0].things[0].id}
    assert backend.counts() == {"things": 1, "channels": 2, "connections": 2,
                                "bootstrap_configs": 1, "certificates": 0}


def test_concurrent_same_external_id_on_one_event_loop(backend: EmbeddedBackend) -> None:
    """16 coroutines on one loop (as the server runs them) for one external_id: one set."""
    run = _default_plan(external_id="race-loop")

    async def race() -> list[MappingRecord]:
        return list(await asyncio.gather(*(backend.provision(run, owner="lab")
                                           for _ in range(16))))

    records = asyncio.run(race())
    assert sum(r.created for r in records) == 1
    assert len({r.things[0].id for r in records}) == 1
    assert backend.counts()["things"] == 1 and backend.counts()["bootstrap_configs"] == 1
    assert backend.stats.max_batch > 1  # they were committed together


def test_concurrent_distinct_ids_are_batched(backend: EmbeddedBackend) -> None:
    """16 threads x 10 distinct mappings all commit, in fewer transactions than requests."""

    def work(i: int) -> list[str]:
        return [provision(backend, _default_plan(f"gw-{i}-{j}", f"key-{i}-{j}")).things[0].id
                for j in range(10)]

    results = _run_threads(16, work)
    assert all(isinstance(r, list) for r in results), results
    assert backend.counts()["bootstrap_configs"] == 160
    assert backend.counts()["things"] == 160
    stats = backend.stats
    assert stats.requests == 160 and stats.commits == stats.batches
    assert stats.batches < stats.requests
    assert stats.max_batch > 1 and stats.failed_batches == 0
    assert asyncio.run(backend.bootstrap("gw-15-9", "key-15-9")) is not None


def test_large_batch_rows_are_cut_into_statements_and_all_stored(backend: EmbeddedBackend) -> None:
    """A batch bigger than one statement's exact sizes (its channel rows cut as 256 + 32 + ...)
    stores every row of every mapping, each thing with its own channels."""

    async def herd() -> list[MappingRecord]:
        return list(await asyncio.gather(*(
            backend.provision(_default_plan(f"big-{i}", f"key-{i}"), owner="lab")
            for i in range(300))))

    records = asyncio.run(herd())
    assert all(r.created for r in records)
    # 2 channels per mapping: a batch of more than 32 mappings has more than 64 channel rows
    assert backend.stats.max_batch > 32, backend.stats
    counts = backend.counts()
    assert counts["things"] == counts["bootstrap_configs"] == 300
    assert counts["channels"] == 600
    for i in (0, 137, 299):
        config = asyncio.run(backend.bootstrap(f"big-{i}", f"key-{i}"))
        assert config is not None
        assert config.thing_id == records[i].things[0].id
        assert [c.id for c in config.channels] == [c.id for c in records[i].channels]


def test_batched_values_are_stored_whole(backend: EmbeddedBackend) -> None:
    """Values with NUL and other controls survive the batched insert uncut (no JSON round trip).

    The HTTP layer refuses such values; the backend must still never cut one, or
    10 concurrent ``gw\\u0000evil`` would be stored as ``gw`` and as a second set.
    """
    odd = ["gw\x00evil", "gw\x1b[31m\n", "gw\u2028\U0001f600"]

    async def race(external_id: str) -> list[MappingRecord]:
        run = _default_plan(external_id=external_id, key="k", name=f"name-{external_id}")
        return list(await asyncio.gather(*(backend.provision(run, owner="lab")
                                           for _ in range(10))))

    for external_id in odd:
        records = asyncio.run(race(external_id))
        assert sum(r.created for r in records) == 1, repr(external_id)
        assert len({r.things[0].id for r in records}) == 1
    assert backend.stats.max_batch > 1  # the batched path ran
    assert backend.counts()["things"] == len(odd)
    assert asyncio.run(backend.bootstrap("gw", "k")) is None
    for external_id in odd:
        config = asyncio.run(backend.bootstrap(external_id, "k"))
        assert config is not None, repr(external_id)
        assert config.external_id == external_id and config.name == f"name-{external_id}"
    things = backend.list_things(0, 100).items
    assert sorted(t.name for t in things) == sorted(f"name-{i}" for i in odd)
    assert sorted(str(t.metadata["external_id"]) for t in things) == sorted(odd)


def test_one_bad_request_does_not_fail_its_batch(backend: EmbeddedBackend) -> None:
    """Conflicting keys for one external_id fail alone; the other requests still commit."""

    def work(i: int) -> MappingRecord:
        if i % 2:
            return provision(backend, _default_plan("contested", f"key-{i}"))
        return provision(backend, _default_plan(f"solo-{i}", "k"))

    results = _run_threads(16, work)
    contested = results[1::2]
    assert sum(1 for r in contested if isinstance(r, AlreadyProvisioned)) == 7
    winners = [r for r in contested if not isinstance(r, Exception)]
    assert len(winners) == 1
    assert all(not isinstance(r, Exception) for r in results[0::2])
    assert backend.counts()["bootstrap_configs"] == 9


def test_bootstrap_right_wrong_unknown(backend: EmbeddedBackend) -> None:
    """bootstrap() answers only the right key; wrong key and unknown id both give None."""
    record = provision(backend, _default_plan(key="right"))
    boot = asyncio.run(backend.bootstrap("02:42:ac:11:00:07", "right"))
    assert boot is not None and boot.thing_id == record.things[0].id
    assert asyncio.run(backend.bootstrap("02:42:ac:11:00:07", "wrong")) is None
    assert asyncio.run(backend.bootstrap("02:42:ac:11:00:07", "")) is None
    assert asyncio.run(backend.bootstrap("ff:ff:ff:ff:ff:ff", "right")) is None


def test_authenticate_thing(backend: EmbeddedBackend) -> None:
    """A thing authenticates with its own key only."""
    thing = provision(backend, _default_plan()).things[0]
    assert asyncio.run(backend.authenticate_thing(thing.id, thing.key)) == thing
    assert asyncio.run(backend.authenticate_thing(thing.id, "not-the-key")) is None
    assert asyncio.run(backend.authenticate_thing("unknown-id", thing.key)) is None


def test_autowhite_list_off_leaves_things_disconnected(backend: EmbeddedBackend) -> None:
    """Without autowhite_list nothing is connected and the bootstrap config is inactive."""
    layout = dataclasses.replace(default_layout(),
                                 bootstrap=BootstrapOptions(autowhite_list=False))
    record = provision(backend, _default_plan(layout=layout))
    assert record.whitelisted == ()
    assert backend.counts()["connections"] == 0
    boot = asyncio.run(backend.bootstrap("02:42:ac:11:00:07", "k3y-0007"))
    assert boot is not None and boot.state == 0 and len(boot.channels) == 2


def test_external_key_not_stored_in_plain_text(db_path: Path) -> None:
    """Neither the database nor its WAL contains the external_key; the file is 0600."""
    secret = "very-secret-external-key-9f1c2e"
    b = EmbeddedBackend(db_path)
    try:
        record = provision(b, _default_plan(key=secret))
        files = [p for p in db_path.parent.iterdir() if p.name.startswith(db_path.name)]
        blob = b"".join(p.read_bytes() for p in files)
        assert record.things[0].key.encode() in blob  # the grep does see stored data
        assert secret.encode() not in blob
    finally:
        b.close()
    assert secret.encode() not in db_path.read_bytes()
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600


_CHILD = """
import asyncio, os, signal, sys
from pathlib import Path
from edge_provision.lab.backends.embedded import EmbeddedBackend
from edge_provision.layout import default_layout, plan
b = EmbeddedBackend(Path(sys.argv[1]))
run = plan(default_layout(), "de:ad:be:ef:00:01", "durable")
record = asyncio.run(b.provision(run, owner="lab"))
print("ok", record.things[0].id, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_mapping_survives_kill_9(db_path: Path) -> None:
    """A mapping returned by provision() is there after the process is killed with SIGKILL."""
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(db_path)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    word, thing_id = proc.stdout.split()
    assert word == "ok"
    b = EmbeddedBackend(db_path)
    try:
        boot = asyncio.run(b.bootstrap("de:ad:be:ef:00:01", "durable"))
        assert boot is not None and boot.thing_id == thing_id
        again = provision(b, plan(default_layout(), "de:ad:be:ef:00:01", "durable"))
        assert again.created is False and again.things[0].id == thing_id
    finally:
        b.close()


def test_reopen_keeps_everything(db_path: Path) -> None:
    """Closing and reopening the file returns the same stored mapping."""
    with EmbeddedBackend(db_path) as b:
        first = provision(b, _default_plan())
    with EmbeddedBackend(db_path) as b:
        again = provision(b, _default_plan())
        assert again == dataclasses.replace(first, created=False)


def test_revocation(backend: EmbeddedBackend, ca: LocalCA) -> None:
    """Recorded certificates are revoked once, per thing; unknown things are rejected."""
    thing = provision(backend, _default_plan()).things[0]
    cert, _key = ca.issue(common_name=thing.id, key_type="ec", key_bits=None, ttl_s=3600)
    asyncio.run(backend.record_certificate(thing.id, cert))
    stored = backend.certificate(cert.serial.upper())
    assert stored is not None and stored.revoked is False and stored.cert_pem == cert.cert_pem
    assert stored.not_before == cert.not_before
    assert backend.revoke_certificates(thing.id) == (cert.serial,)
    revoked = backend.certificate(cert.serial)
    assert revoked is not None and revoked.revoked is True
    assert backend.revoke_certificates(thing.id) == ()
    with pytest.raises(Rejected, match="already recorded"):
        asyncio.run(backend.record_certificate(thing.id, cert))
    with pytest.raises(Rejected, match="not found"):
        asyncio.run(backend.record_certificate("no-such-thing", cert))
    assert backend.certificate("00ff") is None
    assert backend.list_certificates().total == 1


def _counted(db_path: Path) -> dict[str, int]:
    """Every table's rows, counted by a connection of the test's own."""
    with sqlite3.connect(db_path) as conn:
        return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                for t in ("things", "channels", "connections", "bootstrap_configs",
                          "certificates")}


class _TracedBackend(EmbeddedBackend):
    """A real backend that records every statement its connections run."""

    statements: list[str]

    def _connect(self) -> sqlite3.Connection:
        if not hasattr(self, "statements"):
            self.statements = []
        conn = super()._connect()
        conn.set_trace_callback(self.statements.append)
        return conn


def test_counts_follow_commits_without_a_query(db_path: Path, ca: LocalCA) -> None:
    """counts() equals COUNT(*) after batches, repeats, conflicts, certificates and a reopen,
    and answers without running a single statement."""
    layout = load_layout(MULTI_LAYOUT)
    with _TracedBackend(db_path) as backend:

        def work(i: int) -> object:
            if i % 4 == 3:  # a conflict: fails alone, counts nothing
                return provision(backend, _default_plan("contested", f"key-{i}"))
            return provision(backend, _default_plan(f"gw-{i % 8}", "k", layout=layout),
                             _issuer(ca))

        results = _run_threads(16, work)
        assert sum(isinstance(r, AlreadyProvisioned) for r in results) == 3
        thing = backend.list_things(0, 1).items[0]
        cert, _ = ca.issue(common_name=thing.id, key_type="ec", key_bits=None, ttl_s=60)
        asyncio.run(backend.record_certificate(thing.id, cert))
        with pytest.raises(Rejected):
            asyncio.run(backend.record_certificate(thing.id, cert))  # refused: counts nothing
        backend.revoke_certificates(thing.id)
        assert backend.counts() == _counted(db_path)
        assert backend.counts()["things"] == 6 * 3 + 1  # gw-0,1,2,4,5,6 and "contested"
        backend.statements.clear()
        for _ in range(3):
            backend.counts()
        assert backend.statements == []
    with EmbeddedBackend(db_path) as reopened:
        assert reopened.counts() == _counted(db_path)


def test_pagination(backend: EmbeddedBackend) -> None:
    """Pages follow creation order, report the total, and reject bad limits."""
    records = [provision(backend, _default_plan(f"gw-{i}", "k")) for i in range(3)]
    all_channels = [c.id for r in records for c in r.channels]
    first = backend.list_channels(offset=0, limit=4)
    second = backend.list_channels(offset=4, limit=4)
    assert (first.total, first.offset, first.limit, len(first.items)) == (6, 0, 4, 4)
    assert len(second.items) == 2
    assert [c.id for c in first.items + second.items] == all_channels
    things = backend.list_things(offset=1, limit=1)
    assert things.total == 3 and things.items == (records[1].things[0],)
    configs = backend.list_bootstrap_configs(limit=2)
    assert configs.total == 3 and [c.external_id for c in configs.items] == ["gw-0", "gw-1"]
    assert backend.list_certificates().items == ()
    for bad in (0, 101, -1):
        with pytest.raises(ValueError, match="limit must be between 1 and 100"):
            backend.list_things(limit=bad)
    with pytest.raises(ValueError, match="offset"):
        backend.list_things(offset=-1)


def test_corrupt_db_file_raises_store_error(tmp_path: Path) -> None:
    """A file that is not SQLite is refused with a StoreError naming it."""
    path = tmp_path / "lab.db"
    path.write_bytes(b"this is not an sqlite database at all\n" * 200)
    with pytest.raises(StoreError, match="not an SQLite database") as info:
        EmbeddedBackend(path)
    assert str(path) in str(info.value)


def test_foreign_sqlite_db_is_refused(tmp_path: Path) -> None:
    """An SQLite file of some other program is not taken over."""
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE songs (title TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="some other program"):
        EmbeddedBackend(path)


def test_close_is_idempotent_and_final(db_path: Path) -> None:
    """close() can be called twice; afterwards every call raises StoreError."""
    b = EmbeddedBackend(db_path)
    b.counts()
    b.close()
    b.close()
    with pytest.raises(StoreError, match="closed"):
        provision(b, _default_plan())
    with pytest.raises(StoreError, match="closed"):
        b.counts()
    assert not any(t.name.startswith("embedded-writer") and t.is_alive()
                   for t in threading.enumerate() if t.name.endswith(db_path.name))


def test_locked_by_another_process_is_a_store_error(db_path: Path) -> None:
    """A write lock held elsewhere turns into a StoreError that says so, after busy_timeout."""
    EmbeddedBackend(db_path).close()
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        b = EmbeddedBackend(db_path, busy_timeout_s=0.2)
        try:
            with pytest.raises(StoreError, match="locked by another process"):
                provision(b, _default_plan())
        finally:
            b.close()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert os.path.exists(db_path)
