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
import queue
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from edge_provision import _fs
from edge_provision.errors import Rejected, StoreError
from edge_provision.lab.backends import _embedded_sql as _sql
from edge_provision.lab.models import (
    BootstrapRecord,
    CertIssuer,
    CertRecord,
    ChannelRecord,
    MappingRecord,
    Page,
    ThingRecord,
)

if TYPE_CHECKING:
    from edge_provision.layout import Plan
    from edge_provision.pki import IssuedCert

__all__ = ["EmbeddedBackend", "WriterStats"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
MAX_LIMIT = 100
MAX_BATCH = 1000
_DUMMY_SALT = "00" * 16
_DUMMY_HASH = _sql.key_hash(_DUMMY_SALT, "edge-provision")


@dataclass(frozen=True)
class WriterStats:
    """Group-commit counters: ``requests`` write jobs ran in ``batches`` transactions."""

    requests: int
    batches: int
    commits: int
    failed_batches: int
    max_batch: int


@dataclass
class _Job:
    run: Callable[[sqlite3.Connection], object]
    future: Future[Any] | asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop | None = None  # set for asyncio futures
    prepared: _sql.Prepared | None = None  # a new mapping: may be bulk-inserted


def _settle(jobs: list[tuple[asyncio.Future[Any], object, BaseException | None]]) -> None:
    """Resolve the asyncio futures of one batch (runs on their event loop)."""
    for future, result, err in jobs:
        if future.cancelled():
            continue
        if err is None:
            future.set_result(result)
        else:
            future.set_exception(err)


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
        self._write_timeout_s = write_timeout_s
        self._lock = threading.Lock()
        self._closed = False
        self._local = threading.local()
        self._readers: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._stats = WriterStats(0, 0, 0, 0, 0)
        self._create_file()
        self._writer_conn = self._connect()
        try:
            _sql.ensure_schema(self._writer_conn, self._path)
        except sqlite3.Error as exc:
            self._writer_conn.close()
            raise _sql.store_error(self._path, exc, "opening the database") from exc
        except BaseException:
            self._writer_conn.close()
            raise
        self._writer = threading.Thread(
            target=self._write_loop, name=f"embedded-writer:{self._path.name}", daemon=True
        )
        self._writer.start()
        logger.info("embedded backend opened path=%s", self._path)

    # ---------------------------------------------------------------- plumbing

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    @property
    def stats(self) -> WriterStats:
        """A snapshot of the group-commit counters."""
        with self._lock:
            return self._stats

    def _create_file(self) -> None:
        parent = self._path.parent
        if not parent.exists():
            _fs.ensure_private_dir(parent)
        try:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, _fs.SECRET_MODE)
            try:
                st = os.fstat(fd)
                if st.st_mode & 0o777 != _fs.SECRET_MODE and st.st_uid == os.geteuid():
                    os.fchmod(fd, _fs.SECRET_MODE)
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
                check_same_thread=False,
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

    def _submit(self, run: Callable[[sqlite3.Connection], T], action: str,
                prepared: _sql.Prepared | None = None) -> T:
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise StoreError(f"{self._path}: the lab backend is closed")
            self._queue.put(_Job(run, future, None, prepared))
        try:
            return future.result(timeout=self._write_timeout_s)
        except FutureTimeout:
            raise StoreError(
                f"{self._path}: {action} got no answer within {self._write_timeout_s:g}s; "
                "the database may be locked by another process; the outcome is unknown, "
                "retry (provisioning is idempotent)"
            ) from None

    def _write_loop(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            batch: list[_Job] = []
            if first is None:
                stop = True
            else:
                batch.append(first)
            while len(batch) < MAX_BATCH:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                else:
                    batch.append(job)
            if batch:
                self._run_batch(batch)

    def _run_batch(self, batch: list[_Job]) -> None:
        conn = self._writer_conn
        outcomes: list[tuple[_Job, object, BaseException | None]] = []
        committed = False
        try:
            conn.execute("BEGIN IMMEDIATE")
            rest = batch
            if any(job.prepared is not None for job in batch):
                try:
                    bulk_done, rest = self._bulk_mappings(conn, batch)
                except sqlite3.Error as exc:  # run every job on its own below
                    logger.warning("embedded bulk insert failed path=%s size=%s error=%s",
                                   self._path, len(batch), exc)
                    conn.execute("ROLLBACK")
                    conn.execute("BEGIN IMMEDIATE")
                    bulk_done, rest = [], batch
                outcomes += bulk_done
            for job in rest:
                conn.execute("SAVEPOINT job")
                try:
                    result = job.run(conn)
                except sqlite3.Error as exc:
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    translated = _sql.store_error(self._path, exc, "writing")
                    translated.__cause__ = exc
                    outcomes.append((job, None, translated))
                except Exception as exc:  # one request's failure must not fail the batch
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    outcomes.append((job, None, exc))
                else:
                    conn.execute("RELEASE job")
                    outcomes.append((job, result, None))
            conn.execute("COMMIT")
            committed = True
        except Exception as exc:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            logger.error("embedded batch failed path=%s size=%s error=%s",
                         self._path, len(batch), exc)
            failure = (
                _sql.store_error(self._path, exc, "committing")
                if isinstance(exc, sqlite3.Error)
                else StoreError(f"{self._path}: write failed: {exc}")
            )
            failure.__cause__ = exc
            done = {id(job) for job, _, err in outcomes if err is not None}
            outcomes = [o for o in outcomes if id(o[0]) in done]
            outcomes += [(job, None, failure) for job in batch if id(job) not in done]
        with self._lock:
            s = self._stats
            self._stats = WriterStats(
                requests=s.requests + len(batch),
                batches=s.batches + 1,
                commits=s.commits + int(committed),
                failed_batches=s.failed_batches + int(not committed),
                max_batch=max(s.max_batch, len(batch)),
            )
        # one wake-up per event loop and batch instead of one per request
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for job, result, err in outcomes:
            if job.loop is not None:
                by_loop.setdefault(job.loop, []).append((job.future, result, err))
            elif err is None:
                job.future.set_result(result)
            else:
                job.future.set_exception(err)
        for loop, settled in by_loop.items():
            with suppress(RuntimeError):  # the loop closed meanwhile: nobody is waiting
                loop.call_soon_threadsafe(_settle, settled)

    @staticmethod
    def _bulk_mappings(
        conn: sqlite3.Connection, batch: list[_Job]
    ) -> tuple[list[tuple[_Job, object, BaseException | None]], list[_Job]]:
        """Insert the batch's new mappings together; (their outcomes, the jobs left to run).

        Left: other writes, repeats of stored external_ids and the second and later
        requests for one external_id in this batch (they then find the first one).
        """
        candidates = [job.prepared.external_id for job in batch if job.prepared is not None]
        existing = _sql.existing_mappings(conn, candidates)
        new: list[tuple[_Job, _sql.Prepared]] = []
        rest: list[_Job] = []
        for job in batch:
            p = job.prepared
            if p is None or p.external_id in existing:
                rest.append(job)
            else:
                existing.add(p.external_id)
                new.append((job, p))
        _sql.insert_mappings(conn, [p for _, p in new])
        return [(job, p.record, None) for job, p in new], rest

    def close(self) -> None:
        """Stop the writer (after it finished the queued work) and close every connection."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._writer.join(timeout=self._write_timeout_s)
        with self._lock:
            readers, self._readers = self._readers, []
        for _, conn in readers:
            with suppress(sqlite3.Error):
                conn.close()
        if not self._writer.is_alive():
            with suppress(sqlite3.Error):
                self._writer_conn.close()
        logger.info("embedded backend closed path=%s", self._path)

    def __enter__(self) -> EmbeddedBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --------------------------------------------------------------- provision

    def provision(
        self, plan: Plan, *, owner: str, issue_certs: CertIssuer | None = None
    ) -> MappingRecord:
        """Create everything in ``plan`` in one transaction; idempotent per external_id + key.

        Raises ``AlreadyProvisioned`` if the external_id exists with another key.
        Certificates (when ``issue_certs`` is given and the plan asks for them) are
        issued before the transaction and stored with the mapping.
        """
        with self._reading("reading the mapping") as conn:
            existing = _sql.find_mapping(conn, plan.external_id, plan.external_key)
        if existing is not None:
            return existing
        prepared = _sql.prepare(plan, owner, issue_certs)
        record = self._submit(lambda c: self._write_mapping(c, prepared), "provisioning",
                              prepared)
        if record.created:
            logger.info("mapping created external_id=%s things=%s channels=%s",
                        plan.external_id, len(record.things), len(record.channels))
        return record

    @property
    def can_provision_nowait(self) -> bool:
        """Whether :meth:`provision_nowait` is equivalent to :meth:`provision`.

        False in subclasses that override ``provision`` (their override wins).
        """
        return type(self).provision is EmbeddedBackend.provision

    def provision_nowait(self, plan: Plan, *, owner: str) -> asyncio.Future[MappingRecord]:
        """:meth:`provision` for a plan without certificates, from a running event loop.

        Does not block: the rows are prepared on the calling thread, the writer
        thread runs them in its next group commit, and the returned future is
        resolved on the caller's loop once they are committed (durable).
        Repeats and conflicts are detected inside the write transaction.
        """
        if plan.certificates:
            raise ValueError("provision_nowait cannot issue certificates; use provision()")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[MappingRecord] = loop.create_future()
        prepared = _sql.prepare(plan, owner, None)
        with self._lock:
            if self._closed:
                raise StoreError(f"{self._path}: the lab backend is closed")
            self._queue.put(
                _Job(lambda c: self._write_mapping(c, prepared), future, loop, prepared))
        return future

    @staticmethod
    def _write_mapping(conn: sqlite3.Connection, p: _sql.Prepared) -> MappingRecord:
        """Runs on the writer thread, inside the batch transaction and a savepoint."""
        existing = _sql.find_mapping(conn, p.external_id, p.external_key)
        if existing is not None:
            return existing
        _sql.insert_mapping(conn, p)
        return p.record

    # ------------------------------------------------------------------ reads

    def bootstrap(self, external_id: str, external_key: str) -> BootstrapRecord | None:
        """The bootstrap config of ``external_id``; None if unknown or the key is wrong."""
        with self._reading("reading the bootstrap config") as conn:
            row = conn.execute(_sql.SELECT_BOOTSTRAP + " WHERE b.external_id = ?",
                               (external_id,)).fetchone()
            if row is None:
                _sql.key_matches(_DUMMY_SALT, _DUMMY_HASH, external_key)  # same work either way
                return None
            if not _sql.key_matches(row["key_salt"], row["key_hash"], external_key):
                return None
            return _sql.bootstrap_record(conn, row)

    def authenticate_thing(self, thing_id: str, thing_key: str) -> ThingRecord | None:
        """The thing if ``thing_key`` is its key, else None."""
        with self._reading("authenticating a thing") as conn:
            row = conn.execute("SELECT * FROM things WHERE id = ?", (thing_id,)).fetchone()
        stored = row["key"] if row is not None else str(uuid.UUID(int=0))
        ok = hmac.compare_digest(stored.encode("utf-8"), thing_key.encode("utf-8"))
        return _sql.thing_record(row) if ok and row is not None else None

    def certificate(self, serial: str) -> CertRecord | None:
        """The certificate with ``serial`` (hex, any case), or None."""
        with self._reading("reading a certificate") as conn:
            row = conn.execute("SELECT * FROM certificates WHERE serial = ?",
                               (serial.lower(),)).fetchone()
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
        """Number of things, channels, connections, bootstrap_configs, certificates."""
        with self._reading("counting") as conn:
            return {
                table: int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])  # noqa: S608
                for table in _sql.COUNTED_TABLES
            }

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

    def record_certificate(self, thing_id: str, cert: IssuedCert) -> None:
        """Remember a certificate issued to ``thing_id``; Rejected if the thing is unknown."""
        row = (cert.serial.lower(), thing_id, _sql.utc_iso(cert.not_before),
               _sql.utc_iso(cert.not_after), cert.cert_pem, None, None, _sql.now_iso())

        def run(conn: sqlite3.Connection) -> None:
            if conn.execute("SELECT 1 FROM things WHERE id = ?", (thing_id,)).fetchone() is None:
                raise Rejected(f"thing {thing_id} not found; create it before recording a "
                               "certificate for it")
            if conn.execute("SELECT 1 FROM certificates WHERE serial = ?",
                            (row[0],)).fetchone() is not None:
                raise Rejected(f"certificate serial {row[0]} is already recorded")
            conn.execute(_sql.INSERT_CERT, row)

        self._submit(run, "recording a certificate")
        logger.info("certificate recorded thing_id=%s serial=%s", thing_id, row[0])

    def revoke_certificates(self, thing_id: str) -> tuple[str, ...]:
        """Revoke every unrevoked certificate of ``thing_id``; return their serials."""

        def run(conn: sqlite3.Connection) -> tuple[str, ...]:
            rows = conn.execute(
                "SELECT serial FROM certificates WHERE thing_id = ? AND revoked = 0 ORDER BY rowid",
                (thing_id,),
            ).fetchall()
            conn.execute("UPDATE certificates SET revoked = 1, revoked_at = ? "
                         "WHERE thing_id = ? AND revoked = 0", (_sql.now_iso(), thing_id))
            return tuple(r[0] for r in rows)

        serials = self._submit(run, "revoking certificates")
        logger.info("certificates revoked thing_id=%s count=%s", thing_id, len(serials))
        return serials

