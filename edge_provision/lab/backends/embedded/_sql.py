"""Rows and SQL of the embedded lab backend: schema, row preparation, decoding, errors.

Private to :mod:`edge_provision.lab.backends.embedded`. :func:`prepare` turns a
plan into rows without touching the database (it runs on the request thread);
every other function takes an open connection and runs inside the caller's
transaction.

Schema (``PRAGMA user_version`` = 2; a version-1 file is upgraded in place by adding
``revoked_certificates``). The members of a mapping and the channels
of a bootstrap config are kept, in order, as JSON arrays of ids in the owning
row rather than in link tables: a repeat of ``/mapping`` must return the same
order, and one row instead of five per mapping keeps the writer fast (the
project's group-commit throughput target). Every other relation is a real
foreign key, except ``revoked_certificates``: a revoked serial must stay on the
broker's CRL after its thing (and with it its ``certificates`` rows) is deleted.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable, TypeVar

from edge_provision.errors import AlreadyProvisioned, CertificateError, ConfigError, StoreError
from edge_provision.lab.models import (
    BootstrapRecord,
    CertIssuer,
    CertRecord,
    ChannelRecord,
    MappingRecord,
    ThingRecord,
)

if TYPE_CHECKING:
    from edge_provision.crypto.pki import IssuedCert
    from edge_provision.layout import Plan

__all__ = [
    "COUNTED_TABLES",
    "SCHEMA_VERSION",
    "SELECT_BOOTSTRAP",
    "STATEMENT_CACHE",
    "Prepared",
    "bootstrap_record",
    "cert_record",
    "channel_record",
    "count_rows",
    "ensure_schema",
    "existing_mappings",
    "find_mapping",
    "forget_thing",
    "insert_certificate",
    "insert_mapping",
    "insert_mappings",
    "key_hash",
    "key_matches",
    "now_iso",
    "prepare",
    "revoke",
    "store_error",
    "thing_record",
    "utc_iso",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")

SCHEMA_VERSION = 2
PAGE_SIZE = 1024
COUNTED_TABLES = ("things", "channels", "connections", "bootstrap_configs", "certificates")

# Version 2: serials revoked, kept past the deletion of their thing (the CRL's source).
_V2_DDL = (
    """CREATE TABLE revoked_certificates (
        serial TEXT PRIMARY KEY NOT NULL,
        thing_id TEXT NOT NULL,
        not_after TEXT NOT NULL,
        revoked_at TEXT NOT NULL)""",
)
_V1_TO_V2 = (
    *_V2_DDL,
    "INSERT INTO revoked_certificates (serial, thing_id, not_after, revoked_at) "
    "SELECT serial, thing_id, not_after, COALESCE(revoked_at, created) FROM certificates "
    "WHERE revoked = 1",
)
REVOKE_CERTS = (
    "INSERT OR IGNORE INTO revoked_certificates (serial, thing_id, not_after, revoked_at) "
    "SELECT serial, thing_id, not_after, ? FROM certificates WHERE thing_id = ? AND revoked = 0"
)
"""Copy a thing's unrevoked certificates to ``revoked_certificates`` (params: now, thing id)."""

# Ordered so that every foreign key points at a table created before it.
_DDL = (
    """CREATE TABLE things (
        id TEXT PRIMARY KEY NOT NULL,
        name TEXT NOT NULL,
        key TEXT NOT NULL UNIQUE,
        metadata TEXT NOT NULL,
        owner TEXT NOT NULL,
        created TEXT NOT NULL)""",
    """CREATE TABLE channels (
        id TEXT PRIMARY KEY NOT NULL,
        name TEXT NOT NULL,
        metadata TEXT NOT NULL,
        owner TEXT NOT NULL,
        created TEXT NOT NULL)""",
    """CREATE TABLE connections (
        thing_id TEXT NOT NULL REFERENCES things(id) ON DELETE CASCADE,
        channel_id TEXT NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
        PRIMARY KEY (thing_id, channel_id))""",
    # One row per /mapping run: the idempotency key (external_id + salted key hash)
    # and its members in plan order (JSON arrays of ids).
    """CREATE TABLE mappings (
        external_id TEXT PRIMARY KEY NOT NULL,
        key_salt TEXT NOT NULL,
        key_hash TEXT NOT NULL,
        owner TEXT NOT NULL,
        thing_ids TEXT NOT NULL,
        channel_ids TEXT NOT NULL,
        whitelisted TEXT NOT NULL,
        ca_cert TEXT,
        created TEXT NOT NULL)""",
    # key_pem / external_id are set for certificates issued (server-side key) by a mapping.
    """CREATE TABLE certificates (
        serial TEXT PRIMARY KEY NOT NULL,
        thing_id TEXT NOT NULL REFERENCES things(id) ON DELETE CASCADE,
        not_before TEXT NOT NULL,
        not_after TEXT NOT NULL,
        revoked INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1)),
        revoked_at TEXT,
        cert_pem TEXT NOT NULL,
        key_pem TEXT,
        external_id TEXT REFERENCES mappings(external_id) ON DELETE SET NULL,
        created TEXT NOT NULL)""",
    "CREATE INDEX certificates_thing ON certificates(thing_id)",
    "CREATE INDEX certificates_mapping ON certificates(external_id) WHERE external_id IS NOT NULL",
    """CREATE TABLE bootstrap_configs (
        thing_id TEXT PRIMARY KEY NOT NULL REFERENCES things(id) ON DELETE CASCADE,
        external_id TEXT NOT NULL UNIQUE,
        key_salt TEXT NOT NULL,
        key_hash TEXT NOT NULL,
        name TEXT NOT NULL,
        content TEXT NOT NULL,
        channel_ids TEXT NOT NULL,
        client_cert TEXT NOT NULL,
        client_key TEXT NOT NULL,
        ca_cert TEXT NOT NULL,
        state INTEGER NOT NULL CHECK (state IN (0, 1)),
        created TEXT NOT NULL)""",
    *_V2_DDL,
)

SELECT_BOOTSTRAP = (
    "SELECT b.*, t.key AS thing_key, m.thing_ids AS mapping_thing_ids FROM bootstrap_configs b "
    "JOIN things t ON t.id = b.thing_id LEFT JOIN mappings m ON m.external_id = b.external_id"
)
"""A bootstrap config, its thing's key and its mapping's things (see bootstrap_record)."""
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@dataclass(frozen=True)
class Prepared:
    """Everything one provision writes, computed outside the writer thread."""

    external_id: str
    external_key: str  # only compared, never written
    record: MappingRecord
    mapping_row: tuple[object, ...]
    thing_rows: list[tuple[object, ...]]
    channel_rows: list[tuple[object, ...]]
    connection_rows: list[tuple[object, ...]]
    cert_rows: list[tuple[object, ...]]
    bootstrap_row: tuple[object, ...] | None

    def row_counts(self) -> dict[str, int]:
        """Rows this mapping writes, by counted table."""
        return {"things": len(self.thing_rows), "channels": len(self.channel_rows),
                "connections": len(self.connection_rows), "certificates": len(self.cert_rows),
                "bootstrap_configs": int(self.bootstrap_row is not None)}  # fmt: skip


def now_iso() -> str:
    """The current UTC time, ISO 8601 with milliseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def utc_iso(value: datetime) -> str:
    """``value`` as ISO 8601 in UTC (naive values are taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat()


def _json(value: object, kind: str, name: str) -> str:
    try:
        return _ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{kind} {name!r}: metadata is not JSON-compatible: {exc}") from exc


def _uuid4s(count: int) -> list[str]:
    """``count`` random (version 4) UUID strings from one urandom call (thing keys)."""
    raw = bytearray(os.urandom(16 * count))
    out = []
    for i in range(0, 16 * count, 16):
        raw[i + 6] = (raw[i + 6] & 0x0F) | 0x40
        raw[i + 8] = (raw[i + 8] & 0x3F) | 0x80
        h = raw[i:i + 16].hex()
        out.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return out


_UUID7_LOCK = threading.Lock()
_uuid7_last = 0  # the last (unix ms << 12 | counter) handed out


def _uuid7s(count: int) -> list[str]:
    """``count`` time-ordered (version 7, RFC 9562) UUID strings, ascending (thing and
    channel ids).

    48 bits of Unix milliseconds, a 12-bit counter within the millisecond (method 1 of
    the RFC: ids made later sort later, in this process), 62 random bits. New rows then
    go to the right-hand edge of the id indexes instead of a random page each: a
    mapping's commit writes a few shared pages instead of one per id.
    """
    global _uuid7_last
    with _UUID7_LOCK:
        first = max(time.time_ns() // 1_000_000 << 12, _uuid7_last + 1)
        _uuid7_last = first + count - 1
    rand = os.urandom(8 * count)
    out = []
    for i in range(count):
        stamp = first + i
        low = int.from_bytes(rand[8 * i:8 * i + 8], "big") & 0x3FFF_FFFF_FFFF_FFFF
        h = f"{stamp >> 12:012x}7{stamp & 0xFFF:03x}{low | 0x8000_0000_0000_0000:016x}"
        out.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return out


def _id_list(ids: Sequence[str]) -> str:
    """A JSON array of uuid strings (nothing in them needs escaping)."""
    return "[" + ",".join(f'"{i}"' for i in ids) + "]"


def key_hash(salt_hex: str, key: str) -> str:
    """``sha256(salt + key)`` as lower-case hex."""
    return hashlib.sha256(bytes.fromhex(salt_hex) + key.encode("utf-8")).hexdigest()


def key_matches(salt_hex: str, hash_hex: str, key: str) -> bool:
    """Whether ``key`` hashes to ``hash_hex`` (constant-time comparison)."""
    return hmac.compare_digest(key_hash(salt_hex, key), hash_hex)


def store_error(path: Path, exc: BaseException, action: str) -> StoreError:
    """Turn an sqlite3 error into a StoreError that names the file and the fix."""
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        hint = ("the database is locked by another process; stop the other lab server "
                "using this file, or wait and retry")
    elif "full" in text:
        hint = "the disk is full; free space on the filesystem that holds the database"
    elif "not a database" in text or "malformed" in text or "encrypted" in text:
        hint = ("the file is not an SQLite database or is corrupted; move it aside (an empty "
                "one is created on the next start) or restore it from a backup")
    elif "readonly" in text or "read-only" in text:
        hint = "the database is read-only; check the owner and mode of the file and its directory"
    elif "unable to open" in text:
        hint = "cannot open the file; check that its directory exists and is writable"
    elif "disk i/o" in text:
        hint = "disk I/O error; check the filesystem (dmesg) and free space"
    else:
        hint = f"database error: {exc}"
    return StoreError(f"{path}: {action} failed: {hint}")


def ensure_schema(conn: sqlite3.Connection, path: Path) -> None:
    """Switch to WAL and create the tables of an empty database; refuse foreign ones."""
    # 1 KiB pages (a no-op on an existing database): a mapping touches ~14 b-tree
    # pages at random places, so smaller pages mean less WAL to write and fsync
    # per commit (+25% mappings/s with 16 concurrent requests on the benchmark VM)
    conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
    mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
    if mode != "wal":
        logger.warning("sqlite wal unavailable path=%s journal_mode=%s", path, mode)
    if int(conn.execute("PRAGMA user_version").fetchone()[0]) == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{path}: database schema version {version} was written by a newer "
                f"edge-provision (this one knows {SCHEMA_VERSION}); upgrade edge-provision "
                "or point the lab server at another state directory"
            )
        if version == 0:
            tables = conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
            ).fetchall()
            if tables:
                raise StoreError(
                    f"{path}: is an SQLite database of some other program (tables: "
                    f"{', '.join(sorted(r[0] for r in tables))}); use another file"
                )
            for statement in _DDL:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            logger.info("sqlite schema created path=%s version=%s", path, SCHEMA_VERSION)
        elif version == 1:
            for statement in _V1_TO_V2:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            logger.info("sqlite schema upgraded path=%s version=%s", path, SCHEMA_VERSION)
        conn.execute("COMMIT")
    except BaseException:
        with suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


def count_rows(conn: sqlite3.Connection) -> dict[str, int]:
    """Rows of every counted table (a full count: at open only)."""
    return {table: int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])  # noqa: S608
            for table in COUNTED_TABLES}  # fmt: skip


def thing_record(row: sqlite3.Row) -> ThingRecord:
    """A ThingRecord from a ``things`` row."""
    return ThingRecord(row["id"], row["name"], row["key"], json.loads(row["metadata"]),
                       row["owner"])


def channel_record(row: sqlite3.Row) -> ChannelRecord:
    """A ChannelRecord from a ``channels`` row."""
    return ChannelRecord(row["id"], row["name"], json.loads(row["metadata"]), row["owner"])


def cert_record(row: sqlite3.Row) -> CertRecord:
    """A CertRecord from a ``certificates`` row."""
    return CertRecord(
        serial=row["serial"],
        thing_id=row["thing_id"],
        not_before=datetime.fromisoformat(row["not_before"]),
        not_after=datetime.fromisoformat(row["not_after"]),
        revoked=bool(row["revoked"]),
        cert_pem=row["cert_pem"],
    )


def _by_ids(conn: sqlite3.Connection, table: str, ids: Sequence[str],
            build: Callable[[sqlite3.Row], T]) -> tuple[T, ...]:
    """Rows of ``table`` with the given ids, in the order of ``ids``."""
    if not ids:
        return ()
    marks = ",".join("?" * len(ids))
    rows = conn.execute(f"SELECT * FROM {table} WHERE id IN ({marks})", tuple(ids))  # noqa: S608
    found = {r["id"]: build(r) for r in rows}
    missing = [i for i in ids if i not in found]
    if missing:
        raise StoreError(f"lab database is inconsistent: {table} {missing} are missing; "
                         "restore the database from a backup")
    return tuple(found[i] for i in ids)


def find_mapping(
    conn: sqlite3.Connection, external_id: str, external_key: str
) -> MappingRecord | None:
    """The stored mapping (``created=False``) or None; AlreadyProvisioned if the key differs."""
    head = conn.execute("SELECT * FROM mappings WHERE external_id = ?", (external_id,)).fetchone()
    if head is None:
        return None
    if not key_matches(head["key_salt"], head["key_hash"], external_key):
        raise AlreadyProvisioned(
            f"external_id {external_id} is already provisioned with a different external_key; "
            "delete its bootstrap config or use the original key"
        )
    things = _by_ids(conn, "things", json.loads(head["thing_ids"]), thing_record)
    certs = conn.execute(
        "SELECT thing_id, cert_pem, key_pem FROM certificates WHERE external_id = ?",
        (external_id,),
    ).fetchall()
    cert_of = {r["thing_id"]: r for r in certs}
    return MappingRecord(
        external_id=external_id,
        things=things,
        channels=_by_ids(conn, "channels", json.loads(head["channel_ids"]), channel_record),
        whitelisted=tuple(json.loads(head["whitelisted"])),
        client_certs={t.id: cert_of[t.id]["cert_pem"] for t in things if t.id in cert_of},
        client_keys={t.id: cert_of[t.id]["key_pem"] for t in things
                     if t.id in cert_of and cert_of[t.id]["key_pem"] is not None},
        ca_cert=head["ca_cert"],
        created=False,
    )


def forget_thing(conn: sqlite3.Connection, thing_id: str, *, gateway: bool) -> None:
    """Drop ``thing_id`` from its mapping; drop the mapping with its gateway or last thing."""
    needle = f'"{thing_id}"'  # ids in thing_ids are JSON strings; instr() has no wildcards
    rows = conn.execute("SELECT external_id, thing_ids, whitelisted FROM mappings "
                        "WHERE instr(thing_ids, ?) > 0", (needle,)).fetchall()  # fmt: skip
    for row in rows:
        things = [i for i in json.loads(row["thing_ids"]) if i != thing_id]
        if gateway or not things:
            conn.execute("DELETE FROM mappings WHERE external_id = ?", (row["external_id"],))
            continue
        white = [i for i in json.loads(row["whitelisted"]) if i != thing_id]
        conn.execute("UPDATE mappings SET thing_ids = ?, whitelisted = ? WHERE external_id = ?",
                     (_id_list(things), _id_list(white), row["external_id"]))  # fmt: skip


_MAX_ROWS_PER_STATEMENT = 512
# Statements of 1..EXACT_ROWS rows for the six insert tables and the lookup, plus the
# power-of-two sizes above, plus everything else the backend runs: a connection's
# statement cache of this size keeps them all prepared (sqlite3's default is 128).
EXACT_ROWS = 64
STATEMENT_CACHE = 7 * EXACT_ROWS + 128
_LIMIT_VARIABLE_NUMBER = getattr(sqlite3, "SQLITE_LIMIT_VARIABLE_NUMBER", 9)  # the C constant


class _MultiRow:
    """``INSERT INTO table (columns) VALUES (?, ...), (?, ...), ...`` for many rows at once.

    Values are bound as parameters, never passed through SQL functions (SQLite's
    JSON functions cut strings at a NUL). Up to ``EXACT_ROWS`` rows go in one
    statement of exactly that size (the sizes of a group commit under ordinary load:
    every one a cached statement, see ``STATEMENT_CACHE``); more go in statements of
    power-of-two sizes (100 rows: 64 + 32 + 4), so a handful of texts cover every
    batch. Each statement is one ``sqlite3_step`` and one trip of the writer thread
    through the GIL.
    """

    def __init__(self, table: str, columns: str) -> None:
        self.width = len(columns.split(","))
        self._head = f"INSERT INTO {table} ({columns}) VALUES "  # noqa: S608
        self._row = "(" + ", ".join("?" * self.width) + ")"
        self._sql: dict[int, str] = {}

    def sql(self, rows: int) -> str:
        """The statement for ``rows`` rows."""
        text = self._sql.get(rows)
        if text is None:
            text = self._sql.setdefault(rows, self._head + ", ".join([self._row] * rows))
        return text

    def insert(self, conn: sqlite3.Connection, rows: Sequence[Sequence[object]]) -> None:
        """Insert ``rows`` with as few statements as the size allows."""
        done = 0
        while done < len(rows):
            size = _chunk(len(rows) - done, _max_rows(conn, self.width))
            part = rows[done:done + size]
            conn.execute(self.sql(size), [value for row in part for value in row])
            done += size


def _max_rows(conn: sqlite3.Connection, width: int) -> int:
    """Rows of ``width`` values one statement may bind (SQLite's variable limit)."""
    getlimit = getattr(conn, "getlimit", None)  # Python 3.11+
    limit = getlimit(_LIMIT_VARIABLE_NUMBER) if getlimit else 999
    return max(1, min(_MAX_ROWS_PER_STATEMENT, limit // width))


def _chunk(left: int, most: int) -> int:
    """Rows for the next statement: all ``left`` up to ``EXACT_ROWS`` (and ``most``),
    else the largest power of two <= ``left`` and <= ``most``."""
    size = min(left, most)
    if size <= EXACT_ROWS:
        return size
    return 1 << (size.bit_length() - 1)


_INSERT_MAPPINGS = _MultiRow("mappings", "external_id, key_salt, key_hash, owner, thing_ids, "
                             "channel_ids, whitelisted, ca_cert, created")  # fmt: skip
_INSERT_THINGS = _MultiRow("things", "id, name, key, metadata, owner, created")
_INSERT_CHANNELS = _MultiRow("channels", "id, name, metadata, owner, created")
_INSERT_CONNECTIONS = _MultiRow("connections", "thing_id, channel_id")
_INSERT_CERTS = _MultiRow("certificates", "serial, thing_id, not_before, not_after, cert_pem, "
                          "key_pem, external_id, created")  # fmt: skip
_INSERT_BOOTSTRAP = _MultiRow("bootstrap_configs", "thing_id, external_id, key_salt, key_hash, "
                              "name, content, channel_ids, client_cert, client_key, ca_cert, "
                              "state, created")  # fmt: skip


def existing_mappings(conn: sqlite3.Connection, external_ids: Sequence[str]) -> set[str]:
    """Which of ``external_ids`` already have a mapping (one statement per chunk, as
    ``_MultiRow.insert`` cuts them)."""
    found: set[str] = set()
    done = 0
    while done < len(external_ids):
        size = _chunk(len(external_ids) - done, _max_rows(conn, 1))
        marks = ", ".join("?" * size)
        rows = conn.execute(f"SELECT external_id FROM mappings WHERE external_id IN ({marks})",  # noqa: S608
                            external_ids[done:done + size]).fetchall()
        found.update(r[0] for r in rows)
        done += size
    return found


def insert_certificate(conn: sqlite3.Connection, row: Sequence[object]) -> None:
    """Insert one ``certificates`` row (serial, thing_id, not_before, not_after, cert_pem,
    key_pem, external_id, created)."""
    _INSERT_CERTS.insert(conn, [row])


def insert_mapping(conn: sqlite3.Connection, p: Prepared) -> None:
    """Insert every row of one mapping, parents before children."""
    insert_mappings(conn, [p])


def insert_mappings(conn: sqlite3.Connection, batch: Sequence[Prepared]) -> None:
    """Insert every row of many new mappings, parents before children, a few statements a table.

    Each statement is one ``sqlite3_step``: the writer thread gives up and
    re-takes the GIL a handful of times per batch instead of ~8 times per mapping.
    """
    if not batch:
        return
    things: list[tuple[object, ...]] = []
    channels: list[tuple[object, ...]] = []
    connections: list[tuple[object, ...]] = []
    certs: list[tuple[object, ...]] = []
    boots: list[tuple[object, ...]] = []
    for p in batch:
        things += p.thing_rows
        channels += p.channel_rows
        connections += p.connection_rows
        certs += p.cert_rows
        if p.bootstrap_row is not None:
            boots.append(p.bootstrap_row)
    _INSERT_MAPPINGS.insert(conn, [p.mapping_row for p in batch])
    _INSERT_THINGS.insert(conn, things)
    _INSERT_CHANNELS.insert(conn, channels)
    _INSERT_CONNECTIONS.insert(conn, connections)
    _INSERT_CERTS.insert(conn, certs)
    _INSERT_BOOTSTRAP.insert(conn, boots)


def revoke(conn: sqlite3.Connection, thing_id: str, *, server_made_only: bool = False
           ) -> tuple[str, ...]:  # fmt: skip
    """Revoke the unrevoked certificates of ``thing_id`` (only those with a server-made
    key if ``server_made_only``); their serials in recording order."""
    which = " AND key_pem IS NOT NULL" if server_made_only else ""
    rows = conn.execute("SELECT serial FROM certificates WHERE thing_id = ? AND revoked = 0"  # noqa: S608
                        f"{which} ORDER BY rowid", (thing_id,)).fetchall()
    if rows:
        now = now_iso()
        conn.execute(REVOKE_CERTS + which, (now, thing_id))  # stays on the CRL past the thing
        conn.execute("UPDATE certificates SET revoked = 1, revoked_at = ? "  # noqa: S608
                     f"WHERE thing_id = ? AND revoked = 0{which}", (now, thing_id))
    return tuple(r[0] for r in rows)


def bootstrap_record(conn: sqlite3.Connection, row: sqlite3.Row) -> BootstrapRecord:
    """A BootstrapRecord from a SELECT_BOOTSTRAP row, with its channels and sibling things."""
    members = row["mapping_thing_ids"]
    siblings = [] if members is None else [
        i for i in json.loads(members) if i != row["thing_id"]
    ]
    return BootstrapRecord(
        external_id=row["external_id"],
        thing_id=row["thing_id"],
        thing_key=row["thing_key"],
        name=row["name"],
        channels=_by_ids(conn, "channels", json.loads(row["channel_ids"]), channel_record),
        content=row["content"],
        client_cert=row["client_cert"],
        client_key=row["client_key"],
        ca_cert=row["ca_cert"],
        state=int(row["state"]),
        extra_things=_by_ids(conn, "things", siblings, thing_record),
    )


def _issue(plan: Plan, things: tuple[ThingRecord, ...],
           issue_certs: CertIssuer | None) -> dict[str, tuple[IssuedCert, str]]:
    if issue_certs is None or not plan.certificates:
        return {}
    issued = issue_certs(things, plan.certificates)
    unknown = set(issued) - {t.id for t in things}
    if unknown:
        raise CertificateError(
            "the certificate issuer returned certificates for things not in this "
            f"mapping: {sorted(unknown)}"
        )
    return issued


def prepare(plan: Plan, owner: str, issue_certs: CertIssuer | None) -> Prepared:
    """Ids, keys, JSON, certificates and rows of one mapping (no database access).

    Certificates are issued here, on the caller's thread, never in the writer.
    """
    now = now_iso()
    ids = _uuid7s(len(plan.things) + len(plan.channels))
    keys = _uuid4s(len(plan.things))
    things: list[ThingRecord] = []
    thing_rows: list[tuple[object, ...]] = []
    for n, pt in enumerate(plan.things):
        meta = _json(pt.metadata, "thing", pt.name)
        # the plan's metadata is this request's own deep copy: no need to copy it again
        rec = ThingRecord(ids[n], pt.name, keys[n], pt.metadata, owner)
        things.append(rec)
        thing_rows.append((rec.id, rec.name, rec.key, meta, owner, now))
    channels: list[ChannelRecord] = []
    channel_rows: list[tuple[object, ...]] = []
    for n, pc in enumerate(plan.channels):
        meta = _json(pc.metadata, "channel", pc.name)
        ch = ChannelRecord(ids[len(plan.things) + n], pc.name, pc.metadata, owner)
        channels.append(ch)
        channel_rows.append((ch.id, ch.name, meta, owner, now))
    connection_rows: list[tuple[object, ...]] = [
        (things[c.thing_index].id, channels[c.channel_index].id) for c in plan.connections
    ]
    connected = {c.thing_index for c in plan.connections}
    whitelisted = tuple(t.id for i, t in enumerate(things) if i in connected)

    issued = _issue(plan, tuple(things), issue_certs)
    client_certs: dict[str, str] = {}
    client_keys: dict[str, str] = {}
    cert_rows: list[tuple[object, ...]] = []
    ca_cert: str | None = None
    for t in things:
        if t.id in issued:
            cert, key_pem = issued[t.id]
            client_certs[t.id], client_keys[t.id] = cert.cert_pem, key_pem
            ca_cert = cert.ca_pem  # as upstream: the CA of the last certificate issued
            cert_rows.append((cert.serial.lower(), t.id, utc_iso(cert.not_before),
                              utc_iso(cert.not_after), cert.cert_pem, key_pem,
                              plan.external_id, now))
    salt = secrets.token_hex(16)
    hashed = key_hash(salt, plan.external_key)
    bootstrap_row: tuple[object, ...] | None = None
    bs = plan.bootstrap
    if bs is not None:
        gw = things[bs.thing_index]
        gw_cert = issued.get(gw.id)
        bootstrap_row = (
            gw.id, plan.external_id, salt, hashed, bs.name, bs.content,
            _id_list([channels[i].id for i in bs.channel_indexes]),
            gw_cert[0].cert_pem if gw_cert else "", gw_cert[1] if gw_cert else "",
            gw_cert[0].ca_pem if gw_cert else "", 1 if plan.connections else 0, now,
        )
    record = MappingRecord(
        external_id=plan.external_id, things=tuple(things), channels=tuple(channels),
        whitelisted=whitelisted, client_certs=client_certs, client_keys=client_keys,
        ca_cert=ca_cert, created=True,
    )
    mapping_row = (
        plan.external_id, salt, hashed, owner, _id_list([t.id for t in things]),
        _id_list([c.id for c in channels]), _id_list(whitelisted), ca_cert, now,
    )
    return Prepared(
        external_id=plan.external_id, external_key=plan.external_key, record=record,
        mapping_row=mapping_row, thing_rows=thing_rows, channel_rows=channel_rows,
        connection_rows=connection_rows, cert_rows=cert_rows, bootstrap_row=bootstrap_row,
    )
