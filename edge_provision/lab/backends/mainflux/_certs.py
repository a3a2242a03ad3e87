"""The records of the certificates the lab CA issued while provisioning into Mainflux.

Private to :mod:`edge_provision.lab.backends.mainflux`. Mainflux has nowhere to keep
them (its Certs service issues its own, through Vault), and they belong next to the
CA that signed them: one SQLite file in the lab's state directory (``certs.db``,
0600, WAL, ``synchronous=FULL``), one row per certificate: serial (lower-case hex),
thing id, validity, revoked flag and time, the certificate PEM. No private key is
kept here: a key the lab generated at ``/mapping`` lives in the gateway's bootstrap
config on the platform, as upstream keeps it.

Every call opens nothing new: one connection, serialised by a lock (a handful of
writes per gateway; the hot path, ``/mapping`` without certificates, never comes
here). A failing disk is a :class:`~edge_provision.errors.StoreError`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from edge_provision import fileio
from edge_provision.clock import iso, parse_iso, utc_now
from edge_provision.errors import StoreError
from edge_provision.lab.models import CertRecord, Page

if TYPE_CHECKING:
    from edge_provision.crypto.pki import IssuedCert

__all__ = ["CertStore"]

logger = logging.getLogger("edge_provision.lab.backends.mainflux")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS certificates (
    serial TEXT PRIMARY KEY,
    thing_id TEXT NOT NULL,
    not_before TEXT NOT NULL,
    not_after TEXT NOT NULL,
    cert_pem TEXT NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0,
    revoked_at TEXT,
    recorded TEXT NOT NULL,
    server_made INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS certificates_thing ON certificates(thing_id);
"""
_COLUMNS = "serial, thing_id, not_before, not_after, cert_pem, revoked"


def _record(row: tuple[str, str, str, str, str, int]) -> CertRecord:
    serial, thing_id, not_before, not_after, cert_pem, revoked = row
    return CertRecord(serial=serial, thing_id=thing_id, not_before=_time(not_before),
                      not_after=_time(not_after), revoked=bool(revoked), cert_pem=cert_pem)


def _time(text: str) -> datetime:
    moment = parse_iso(text)
    if moment is None:  # only this module writes the column
        raise StoreError(f"unreadable time {text!r} in the certificate store")
    return moment


class CertStore:
    """Issued-certificate records in one SQLite file; safe to share between threads."""

    FILE = "certs.db"

    def __init__(self, path: Path | None) -> None:
        """Open (or create) ``path``; None keeps the records in memory (tests, benchmarks)."""
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        try:
            if self.path is not None:
                fileio.ensure_private_dir(self.path.parent)
                os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                                 fileio.SECRET_MODE))
            self._conn: sqlite3.Connection | None = sqlite3.connect(
                str(self.path or ":memory:"), isolation_level=None, check_same_thread=False,
                timeout=10.0)
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = FULL")
            self._conn.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{self.path}: cannot open the certificate store: {exc}; check "
                             "that the state directory is writable by this user") from exc

    @contextlib.contextmanager
    def _db(self, action: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._conn is None:
                raise StoreError(f"{self.path}: the certificate store is closed")
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: {action} failed: {exc}") from exc

    def close(self) -> None:
        """Close the file; safe to call twice."""
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def record(self, thing_id: str, cert: IssuedCert, *, server_made: bool = False) -> None:
        """Remember ``cert`` as issued to ``thing_id`` (a serial seen before is kept as is).

        ``server_made``: the lab generated its key (X.509 at ``/mapping``), not the thing.
        """
        row = (cert.serial.lower(), thing_id, iso(cert.not_before), iso(cert.not_after),
               cert.cert_pem, iso(utc_now()), int(server_made))
        with self._db("recording a certificate") as db:
            db.execute("INSERT OR IGNORE INTO certificates (serial, thing_id, not_before, "
                       "not_after, cert_pem, recorded, server_made) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)", row)

    def revoke(self, thing_id: str, *, server_made_only: bool = False) -> tuple[str, ...]:
        """Mark the unrevoked certificates of ``thing_id`` revoked (only those with a
        server-made key if ``server_made_only``); their serials."""
        which = " AND server_made = 1" if server_made_only else ""
        with self._db("revoking certificates") as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                rows = db.execute("SELECT serial FROM certificates WHERE thing_id = ? AND "  # noqa: S608
                                  f"revoked = 0{which} ORDER BY rowid", (thing_id,)).fetchall()
                db.execute("UPDATE certificates SET revoked = 1, revoked_at = ? WHERE "  # noqa: S608
                           f"thing_id = ? AND revoked = 0{which}", (iso(utc_now()), thing_id))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return tuple(r[0] for r in rows)

    def get(self, serial: str) -> CertRecord | None:
        """The certificate with ``serial`` (hex, any case), or None."""
        with self._db("reading a certificate") as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM certificates WHERE serial = ?",  # noqa: S608
                             (serial.lower(),)).fetchone()
        return _record(row) if row is not None else None

    def page(self, offset: int, limit: int) -> Page[CertRecord]:
        """Certificates in recording order."""
        with self._db("listing certificates") as db:
            total = int(db.execute("SELECT COUNT(*) FROM certificates").fetchone()[0])
            rows = db.execute(f"SELECT {_COLUMNS} FROM certificates ORDER BY rowid "  # noqa: S608
                              "LIMIT ? OFFSET ?", (limit, offset)).fetchall()
        return Page(total=total, offset=offset, limit=limit,
                    items=tuple(_record(r) for r in rows))

    def count(self) -> int:
        """How many certificates are recorded."""
        with self._db("counting certificates") as db:
            return int(db.execute("SELECT COUNT(*) FROM certificates").fetchone()[0])
