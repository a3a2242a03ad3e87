"""The embedded lab platform: things, channels, bootstrap configs and certificates in SQLite.

One database file (WAL, ``synchronous=FULL``, foreign keys on, mode 0600).
Writes go through one writer thread that owns the write connection and does
*group commit*: every request queued while the previous batch was being
committed is run in the next ``BEGIN IMMEDIATE ... COMMIT`` (one fsync for the
whole batch), each inside its own SAVEPOINT so that one failing request never
fails the others. A caller is answered only after the COMMIT that holds its rows
returned, so a returned mapping survives ``kill -9`` and power loss. Reads use
one connection per thread; WAL lets them run while the writer commits.

external_key is stored only as ``sha256(salt + key)`` (hex) with a random
16-byte salt per mapping. Thing keys and the private keys of server-generated
certificates are stored in plain text (``certificates.key_pem``, and the
gateway's in ``bootstrap_configs.client_key``, as Mainflux Bootstrap does): the
lab needs them to answer the device and the idempotent ``/mapping`` repeat,
which must return the very same body (ids, keys, certificates, order). The file
is 0600 for that reason. The schema is described in ``_embedded_sql``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, TypeVar

from edge_provision import fileio
from edge_provision.errors import Rejected, StoreError
from edge_provision.lab.backends.embedded import _sql
from edge_provision.lab.backends.embedded._writer import MAX_BATCH as MAX_BATCH
from edge_provision.lab.backends.embedded._writer import GroupCommitWriter, WriterStats
from edge_provision.lab.models import (
    BootstrapRecord,
    BrokerAccount,
    BrokerSnapshot,
    CertIssuer,
    CertRecord,
    ChannelRecord,
    DeletedThing,
    MappingRecord,
    Page,
    ThingRecord,
)

if TYPE_CHECKING:
    from edge_provision.crypto.pki import IssuedCert
    from edge_provision.layout import Plan
    from edge_provision.metrics import Metric

__all__ = ["EmbeddedBackend", "WriterStats"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
MAX_LIMIT = 100
_DUMMY_SALT = "00" * 16
_DUMMY_HASH = _sql.key_hash(_DUMMY_SALT, "edge-provision")


def _check_page(offset: int, limit: int) -> None:
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    if offset < 0:
        raise ValueError(f"offset must be 0 or more, got {offset}")


class EmbeddedBackend:
    """The lab platform in one SQLite file; safe to share between threads."""

    def __init__(self, db_path: Path, *, busy_timeout_s: float = 10.0,
                 write_timeout_s: float = 60.0) -> None:
        self._path = Path(db_path)
        self._busy_ms = int(busy_timeout_s * 1000)
        self._lock = threading.Lock()
        self._closed = False
        self._local = threading.local()
        self._readers: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._create_file()
        writer_conn = self._connect()
        try:
            _sql.ensure_schema(writer_conn, self._path)
        except sqlite3.Error as exc:
            writer_conn.close()
            raise _sql.store_error(self._path, exc, "opening the database") from exc
        except BaseException:
            writer_conn.close()
            raise
        self._writer = GroupCommitWriter(writer_conn, self._path, write_timeout_s)
        logger.info("embedded backend opened path=%s", self._path)

    # ---------------------------------------------------------------- plumbing

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    @property
    def stats(self) -> WriterStats:
        """A snapshot of the group-commit counters."""
        return self._writer.stats

    def _create_file(self) -> None:
        parent = self._path.parent
        if not parent.exists():
            fileio.ensure_private_dir(parent)
        try:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, fileio.SECRET_MODE)
            try:
                st = os.fstat(fd)
                if st.st_mode & 0o777 != fileio.SECRET_MODE and st.st_uid == os.geteuid():
                    os.fchmod(fd, fileio.SECRET_MODE)
            finally:
                os.close(fd)
        except OSError as exc:
            raise StoreError(
                f"{self._path}: cannot open the lab database: {exc.strerror or exc}; "
                "check that the state directory exists and is writable by this user"
            ) from exc

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                str(self._path), timeout=self._busy_ms / 1000, isolation_level=None,
                check_same_thread=False, cached_statements=_sql.STATEMENT_CACHE,
            )
        except sqlite3.Error as exc:
            raise _sql.store_error(self._path, exc, "opening the database") from exc
        conn.row_factory = sqlite3.Row
        try:
            conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA synchronous = FULL")
        except sqlite3.Error as exc:
            conn.close()
            raise _sql.store_error(self._path, exc, "opening the database") from exc
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        with self._lock:
            if self._closed:
                raise StoreError(f"{self._path}: the lab backend is closed")
            conn = self._connect()
            alive = []
            for thread, other in self._readers:
                if thread.is_alive():
                    alive.append((thread, other))
                else:
                    other.close()
            alive.append((threading.current_thread(), conn))
            self._readers = alive
        self._local.conn = conn
        return conn

    @contextmanager
    def _reading(self, action: str) -> Iterator[sqlite3.Connection]:
        """One consistent read transaction on this thread's connection."""
        if self._closed:
            raise StoreError(f"{self._path}: the lab backend is closed")
        conn = self._reader()
        try:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise _sql.store_error(self._path, exc, action) from exc

    def _read_one(self, sql: str, params: tuple[object, ...], action: str) -> sqlite3.Row | None:
        """The first row of one statement on this thread's connection (its own read
        transaction: no BEGIN/COMMIT around it)."""
        if self._closed:
            raise StoreError(f"{self._path}: the lab backend is closed")
        try:
            row: sqlite3.Row | None = self._reader().execute(sql, params).fetchone()
        except sqlite3.Error as exc:
            raise _sql.store_error(self._path, exc, action) from exc
        return row

    def close(self) -> None:
        """Stop the writer (after it finished the queued work) and close every connection."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._writer.stop()
        self._writer.join()
        with self._lock:
            readers, self._readers = self._readers, []
        for _, conn in readers:
            with suppress(sqlite3.Error):
                conn.close()
        self._writer.close_connection()
        logger.info("embedded backend closed path=%s", self._path)

    def __enter__(self) -> EmbeddedBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --------------------------------------------------------------- provision

    async def provision(
        self, plan: Plan, *, owner: str, issue_certs: CertIssuer | None = None
    ) -> MappingRecord:
        """Create everything in ``plan`` in one transaction; idempotent per external_id + key.

        Awaited on the caller's event loop; no thread waits for the commit: the rows
        are prepared on the loop, the writer thread runs them in its next group
        commit and the answer comes once that COMMIT returned (durable). Repeats and
        conflicts (``AlreadyProvisioned``: the external_id exists with another key)
        are found inside the write transaction. When the plan asks for certificates
        and ``issue_certs`` is given, the stored mapping is looked up and the
        certificates are issued in a worker thread first: key generation is slow,
        and a repeat must not issue new ones.
        """
        if plan.certificates and issue_certs is not None:
            loop = asyncio.get_running_loop()
            found = await loop.run_in_executor(None, self._stored_or_prepared, plan, owner,
                                               issue_certs)  # fmt: skip
            if isinstance(found, MappingRecord):
                return found
            prepared = found
        else:
            prepared = _sql.prepare(plan, owner, None)
        return await self._writer.submit_async(lambda c: self._write_mapping(c, prepared),
                                               prepared)

    def _stored_or_prepared(self, plan: Plan, owner: str,
                            issue_certs: CertIssuer) -> MappingRecord | _sql.Prepared:
        """The stored mapping of ``plan``, else its rows with fresh certificates (blocking)."""
        with self._reading("reading the mapping") as conn:
            existing = _sql.find_mapping(conn, plan.external_id, plan.external_key)
        return existing if existing is not None else _sql.prepare(plan, owner, issue_certs)

    @staticmethod
    def _write_mapping(conn: sqlite3.Connection, p: _sql.Prepared) -> MappingRecord:
        """Runs on the writer thread, inside the batch transaction and a savepoint."""
        existing = _sql.find_mapping(conn, p.external_id, p.external_key)
        if existing is not None:
            return existing
        _sql.insert_mapping(conn, p)
        return p.record

    # ------------------------------------------------------------------ reads

    async def bootstrap(self, external_id: str, external_key: str) -> BootstrapRecord | None:
        """The bootstrap config of ``external_id``; None if unknown or the key is wrong.

        A read of a few pages of the local file, done where it is awaited (WAL: the
        writer never makes it wait).
        """
        with self._reading("reading the bootstrap config") as conn:
            row = conn.execute(_sql.SELECT_BOOTSTRAP + " WHERE b.external_id = ?",
                               (external_id,)).fetchone()
            if row is None:
                _sql.key_matches(_DUMMY_SALT, _DUMMY_HASH, external_key)  # same work either way
                return None
            if not _sql.key_matches(row["key_salt"], row["key_hash"], external_key):
                return None
            return _sql.bootstrap_record(conn, row)

    async def authenticate_thing(self, thing_id: str, thing_key: str) -> ThingRecord | None:
        """The thing if ``thing_key`` is its key, else None (a local read, as :meth:`bootstrap`)."""
        row = self._read_one("SELECT * FROM things WHERE id = ?", (thing_id,),
                             "authenticating a thing")  # fmt: skip
        stored = row["key"] if row is not None else str(uuid.UUID(int=0))
        ok = hmac.compare_digest(stored.encode("utf-8"), thing_key.encode("utf-8"))
        return _sql.thing_record(row) if ok and row is not None else None

    def certificate(self, serial: str) -> CertRecord | None:
        """The certificate with ``serial`` (hex, any case), or None."""
        row = self._read_one("SELECT * FROM certificates WHERE serial = ?", (serial.lower(),),
                             "reading a certificate")  # fmt: skip
        return _sql.cert_record(row) if row is not None else None

    def connections(self, thing_id: str) -> tuple[str, ...]:
        """Ids of the channels ``thing_id`` is connected to, in connection order."""
        with self._reading("reading connections") as conn:
            rows = conn.execute(
                "SELECT channel_id FROM connections WHERE thing_id = ? ORDER BY rowid",
                (thing_id,),
            ).fetchall()
        return tuple(r[0] for r in rows)

    def counts(self) -> dict[str, int]:
        """Number of things, channels, connections, bootstrap_configs, certificates.

        Kept by the writer as rows commit (counted once at open): no query here.
        """
        if self._closed:
            raise StoreError(f"{self._path}: the lab backend is closed")
        return self._writer.row_counts()

    def metrics(self) -> list[Metric]:
        """None of its own: the entity counts are all there is to show."""
        return []

    def _page(self, table: str, select: str, order: str, offset: int, limit: int,
              build: Callable[[sqlite3.Connection, sqlite3.Row], T]) -> Page[T]:
        _check_page(offset, limit)
        with self._reading(f"listing {table}") as conn:
            total = int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])  # noqa: S608
            rows = conn.execute(f"{select} ORDER BY {order} LIMIT ? OFFSET ?",
                                (limit, offset)).fetchall()
            items = tuple(build(conn, r) for r in rows)
        return Page(total=total, offset=offset, limit=limit, items=items)

    def list_things(self, offset: int = 0, limit: int = 100) -> Page[ThingRecord]:
        """Things in creation order."""
        return self._page("things", "SELECT * FROM things", "rowid", offset, limit,
                          lambda _c, r: _sql.thing_record(r))

    def list_channels(self, offset: int = 0, limit: int = 100) -> Page[ChannelRecord]:
        """Channels in creation order."""
        return self._page("channels", "SELECT * FROM channels", "rowid", offset, limit,
                          lambda _c, r: _sql.channel_record(r))

    def list_bootstrap_configs(
        self, offset: int = 0, limit: int = 100
    ) -> Page[BootstrapRecord]:
        """Bootstrap configs in creation order."""
        return self._page("bootstrap_configs", _sql.SELECT_BOOTSTRAP, "b.rowid", offset, limit,
                          _sql.bootstrap_record)

    def list_certificates(self, offset: int = 0, limit: int = 100) -> Page[CertRecord]:
        """Issued certificates in recording order."""
        return self._page("certificates", "SELECT * FROM certificates", "rowid", offset, limit,
                          lambda _c, r: _sql.cert_record(r))

    # ------------------------------------------------------------ cert writes

    async def record_certificate(self, thing_id: str, cert: IssuedCert) -> tuple[str, ...]:
        """Remember a certificate signed from ``thing_id``'s CSR; revoke the server-made ones.

        Rejected if the thing is unknown. Returns the serials of the certificates
        with a server-generated key that this revoked (see the Backend protocol), once
        the group commit holding the row returned (no thread waits for it).
        """
        row = (cert.serial.lower(), thing_id, _sql.utc_iso(cert.not_before),
               _sql.utc_iso(cert.not_after), cert.cert_pem, None, None, _sql.now_iso())

        def run(conn: sqlite3.Connection) -> tuple[str, ...]:
            thing, taken = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM things WHERE id = ?), "
                "EXISTS (SELECT 1 FROM certificates WHERE serial = ?)", (thing_id, row[0]),
            ).fetchone()  # one statement for both checks (each is a trip through the GIL)
            if not thing:
                raise Rejected(f"thing {thing_id} not found; create it before recording a "
                               "certificate for it")
            if taken:
                raise Rejected(f"certificate serial {row[0]} is already recorded")
            _sql.insert_certificate(conn, row)
            return _sql.revoke(conn, thing_id, server_made_only=True)

        revoked = await self._writer.submit_async(run, rows=lambda _: {"certificates": 1})
        logger.debug("certificate recorded thing_id=%s serial=%s server_made_revoked=%d",
                     thing_id, row[0], len(revoked))  # fmt: skip
        return revoked

    def revoke_certificates(self, thing_id: str) -> tuple[str, ...]:
        """Revoke every unrevoked certificate of ``thing_id``; return their serials."""

        serials = self._writer.submit(lambda conn: _sql.revoke(conn, thing_id),
                                      "revoking certificates")
        logger.info("certificates revoked thing_id=%s count=%s", thing_id, len(serials))
        return serials

    # ---------------------------------------------------------- thing removal

    def delete_thing(self, thing_id: str) -> DeletedThing | None:
        """Remove a thing, its connections and bootstrap config; revoke its certificates.

        One transaction. Its certificates are revoked first (``revoked_certificates``
        keeps them for the CRL once the thing's rows are gone). Its mapping forgets
        it; a mapping that loses its gateway (the thing with the bootstrap config)
        or its last thing is removed, so that the external_id can be provisioned
        again. Channels stay (other things may use them). None if no such thing.
        """

        Removed = tuple[Optional[DeletedThing], dict[str, int]]

        def run(conn: sqlite3.Connection) -> Removed:
            if conn.execute("SELECT 1 FROM things WHERE id = ?", (thing_id,)).fetchone() is None:
                return None, {}
            revoked = _sql.revoke(conn, thing_id)
            boot = conn.execute("SELECT external_id FROM bootstrap_configs WHERE thing_id = ?",
                                (thing_id,)).fetchone()  # fmt: skip
            gone = {"things": -1, "bootstrap_configs": -1 if boot is not None else 0}
            for table in ("connections", "certificates"):  # the rows the delete cascades to
                gone[table] = -int(conn.execute(
                    f"SELECT COUNT(*) FROM {table} WHERE thing_id = ?",  # noqa: S608
                    (thing_id,)).fetchone()[0])  # fmt: skip
            _sql.forget_thing(conn, thing_id, gateway=boot is not None)
            conn.execute("DELETE FROM things WHERE id = ?", (thing_id,))  # cascades
            return DeletedThing(thing_id, revoked, boot[0] if boot is not None else None), gone

        deleted, _ = self._writer.submit(run, "deleting a thing", rows=lambda result: result[1])
        if deleted is not None:
            logger.info("thing deleted thing_id=%s revoked=%d bootstrap_removed=%s", thing_id,
                        len(deleted.revoked), deleted.external_id is not None)  # fmt: skip
        return deleted

    def broker_snapshot(self) -> BrokerSnapshot:
        """Every thing with its key and channels (creation order), and every revoked serial."""
        with self._reading("reading broker accounts") as conn:
            rows = conn.execute(
                "SELECT t.id, t.key, c.channel_id FROM things t LEFT JOIN connections c "
                "ON c.thing_id = t.id ORDER BY t.rowid, c.rowid").fetchall()
            revoked = conn.execute(
                "SELECT serial FROM revoked_certificates ORDER BY serial").fetchall()
        accounts: list[BrokerAccount] = []
        current: tuple[str, str] | None = None
        channels: list[str] = []
        for thing_id, key, channel_id in rows:
            if current is None or current[0] != thing_id:
                if current is not None:
                    accounts.append(BrokerAccount(current[0], current[1], tuple(channels)))
                current, channels = (thing_id, key), []
            if channel_id is not None:
                channels.append(channel_id)
        if current is not None:
            accounts.append(BrokerAccount(current[0], current[1], tuple(channels)))
        return BrokerSnapshot(tuple(accounts), tuple(r[0] for r in revoked))

